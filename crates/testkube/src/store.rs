//! What the server holds: objects by kind, the history of changes for watches, open watches, and
//! the pages of lists being read in parts. Everything here runs under one lock, so a watch that
//! starts replays history and joins the live stream with nothing in between.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::resources::ResourceType;

/// Creation timestamps count seconds from here, one per resource version, so objects created
/// later always sort after earlier ones.
const EPOCH: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// An answer the API server gives instead of an object: a `Status` with its HTTP code.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (`NotFound`, `Conflict`, `AlreadyExists`, `Expired`, …).
    pub reason: &'static str,
    /// `message`.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The `Status` object the API server sends.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// Namespace (empty for cluster-scoped kinds) and name.
pub type Key = (String, String);

/// One change, as watches see it.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resource version it created.
    pub rv: u64,
    /// The kind.
    pub resource: &'static ResourceType,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (for a deletion: as it was, with the deletion's version).
    pub object: Value,
    /// The object before the change (for field selectors that stop or start matching).
    pub before: Option<Value>,
}

/// Which objects a list or watch asks for.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The kind.
    pub resource: &'static ResourceType,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// `field=value` (or `field!=value`) terms that must all hold.
    pub fields: Vec<(String, bool, String)>,
}

impl Filter {
    /// Parses a `fieldSelector` (`type=kubernetes.io/tls,metadata.name!=x`).
    pub fn new(
        resource: &'static ResourceType,
        namespace: Option<String>,
        selector: Option<&str>,
    ) -> Result<Self, Failure> {
        let mut fields = Vec::new();
        for term in selector.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(Failure::new(
                    400,
                    "BadRequest",
                    format!("invalid field selector {term:?}"),
                ));
            };
            if !matches!(field, "metadata.name" | "metadata.namespace" | "type") {
                return Err(Failure::new(
                    400,
                    "BadRequest",
                    format!("field label not supported: {field}"),
                ));
            }
            fields.push((field.to_string(), equal, value.to_string()));
        }
        Ok(Filter {
            resource,
            namespace,
            fields,
        })
    }

    /// Whether `object` of this filter's kind is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
        if let Some(ns) = &self.namespace {
            if ns != namespace {
                return false;
            }
        }
        self.fields.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str(),
                "metadata.namespace" => Some(namespace),
                _ => object["type"].as_str(),
            };
            (actual == Some(value.as_str())) == *equal
        })
    }

    /// The watch event a change makes for this filter, if any: a change that makes an object
    /// stop matching is a deletion, one that makes it start matching an addition.
    fn event(&self, change: &Change) -> Option<&'static str> {
        if !std::ptr::eq(self.resource, change.resource) {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.before.as_ref().is_some_and(|b| self.matches(b));
        match (change.kind, before, now) {
            ("DELETED", _, true) => Some("DELETED"),
            ("DELETED", _, false) => None,
            (_, true, true) => Some("MODIFIED"),
            (_, false, true) => Some("ADDED"),
            (_, true, false) => Some("DELETED"),
            (_, false, false) => None,
        }
    }
}

/// An open watch: what it selects and where its lines go.
struct Watch {
    filter: Filter,
    bookmarks: bool,
    token: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// A list being read page by page: the items as they were at `rv`.
struct Paged {
    rv: u64,
    items: Vec<Value>,
}

/// Every object, the change history, the open watches.
#[derive(Default)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<&'static ResourceType, BTreeMap<Key, Value>>,
    history: Vec<Change>,
    /// Watches from resource versions below this get `410 Gone`.
    compacted: u64,
    watches: Vec<Watch>,
    pages: HashMap<u64, Paged>,
    next_page: u64,
    /// Every request answered, in order (recorded under the same lock as what it changed, so a
    /// test that sees a change also sees the request that made it).
    pub(crate) requests: Vec<crate::Request>,
}

/// One JSON line of a watch stream.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({ "type": kind, "object": object }).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn key_of(resource: &ResourceType, object: &Value) -> Result<Key, Failure> {
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Failure::new(422, "Invalid", "metadata.name: Required value"))?;
    let namespace = if resource.namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    } else {
        ""
    };
    Ok((namespace.to_string(), name.to_string()))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(map) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        map.remove(k);
                    } else {
                        merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Store {
    /// The latest resource version.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The object of a kind by key.
    pub fn get(&self, resource: &'static ResourceType, key: &Key) -> Option<&Value> {
        self.objects.get(resource)?.get(key)
    }

    /// Every object of a kind, in key order.
    pub fn all(&self, resource: &'static ResourceType) -> Vec<Value> {
        self.objects
            .get(resource)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn record(
        &mut self,
        resource: &'static ResourceType,
        kind: &'static str,
        object: Value,
        before: Option<Value>,
    ) {
        let change = Change {
            rv: self.rv,
            resource,
            kind,
            object,
            before,
        };
        self.watches.retain(|w| match w.filter.event(&change) {
            Some(kind) => w.tx.send(line(kind, &change.object)).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
    }

    /// Stores `object` with a new resource version, creating it or replacing it whole.
    pub fn put(
        &mut self,
        resource: &'static ResourceType,
        mut object: Value,
    ) -> Result<Value, Failure> {
        let key = key_of(resource, &object)?;
        self.rv += 1;
        let before = self.get(resource, &key).cloned();
        let meta = &mut object["metadata"];
        if resource.namespaced {
            meta["namespace"] = json!(key.0);
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
        let created = before.as_ref().map(|b| {
            (
                b["metadata"]["uid"].clone(),
                b["metadata"]["creationTimestamp"].clone(),
            )
        });
        let (uid, created) = match created {
            Some((uid, at)) if !uid.is_null() => (uid, at),
            _ => (
                json!(format!("00000000-0000-4000-8000-{:012x}", self.rv)),
                json!(timestamp(self.rv)),
            ),
        };
        meta["uid"] = uid;
        meta["creationTimestamp"] = created;
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        self.objects
            .entry(resource)
            .or_default()
            .insert(key, object.clone());
        let kind = if before.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(resource, kind, object.clone(), before);
        Ok(object)
    }

    /// Removes an object; returns it as it was.
    pub fn delete(&mut self, resource: &'static ResourceType, key: &Key) -> Result<Value, Failure> {
        let Some(mut object) = self.objects.get_mut(resource).and_then(|m| m.remove(key)) else {
            return Err(not_found(resource, key));
        };
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(resource, "DELETED", object.clone(), None);
        Ok(object)
    }

    /// Creates an object; `409 AlreadyExists` if one with its key exists.
    pub fn create(
        &mut self,
        resource: &'static ResourceType,
        object: Value,
    ) -> Result<Value, Failure> {
        let key = key_of(resource, &object)?;
        if self.get(resource, &key).is_some() {
            return Err(Failure::new(
                409,
                "AlreadyExists",
                format!("{} {:?} already exists", resource.plural, key.1),
            ));
        }
        self.put(resource, object)
    }

    /// Replaces an object (or only its status): `404` if it does not exist, `409 Conflict` if the
    /// request names a resource version that is no longer current.
    pub fn update(
        &mut self,
        resource: &'static ResourceType,
        key: &Key,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, Failure> {
        let current = self
            .get(resource, key)
            .cloned()
            .ok_or_else(|| not_found(resource, key))?;
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            if current["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(Failure::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} {:?}: the object has been modified; \
                         please apply your changes to the latest version and try again",
                        resource.plural, key.1
                    ),
                ));
            }
        }
        if object["metadata"]["name"].as_str() != Some(key.1.as_str()) {
            return Err(Failure::new(
                422,
                "Invalid",
                "metadata.name does not match the URL",
            ));
        }
        let merged = if status_only {
            let mut next = current.clone();
            next["status"] = object["status"].take();
            next
        } else {
            if resource.has_status {
                object["status"] = current["status"].clone();
            }
            object["metadata"]["namespace"] = current["metadata"]["namespace"].clone();
            object
        };
        self.put(resource, merged)
    }

    /// Applies a merge patch to an object (or only to its status).
    pub fn patch(
        &mut self,
        resource: &'static ResourceType,
        key: &Key,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, Failure> {
        let current = self
            .get(resource, key)
            .cloned()
            .ok_or_else(|| not_found(resource, key))?;
        let mut next = current.clone();
        merge_patch(&mut next, patch);
        if status_only {
            let status = next["status"].take();
            next = current;
            next["status"] = status;
        } else if resource.has_status {
            next["status"] = current["status"].clone();
        }
        // The patch may name the version it expects.
        self.update(resource, key, next, status_only)
    }

    /// The objects a list returns, and the version they are current at. With `limit`, a page and
    /// the continue token for the next one; a token whose list was compacted away is `410 Gone`.
    pub fn list(
        &mut self,
        filter: &Filter,
        limit: Option<usize>,
        token: Option<&str>,
    ) -> Result<(u64, Vec<Value>, Option<String>), Failure> {
        let (id, offset) = match token {
            Some(token) => {
                let parsed = token
                    .split_once(':')
                    .and_then(|(id, at)| Some((id.parse().ok()?, at.parse().ok()?)));
                let Some((id, offset)) = parsed.filter(|(id, _)| self.pages.contains_key(id))
                else {
                    return Err(Failure::new(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    ));
                };
                (id, offset)
            }
            None => {
                let items: Vec<Value> = self
                    .all(filter.resource)
                    .into_iter()
                    .filter(|o| filter.matches(o))
                    .collect();
                self.next_page += 1;
                self.pages
                    .insert(self.next_page, Paged { rv: self.rv, items });
                (self.next_page, 0)
            }
        };
        let Some(paged) = self.pages.get(&id) else {
            return Err(Failure::new(410, "Expired", "list expired"));
        };
        let end = limit.map_or(paged.items.len(), |l| {
            (offset + l.max(1)).min(paged.items.len())
        });
        let items = paged.items.get(offset..end).unwrap_or_default().to_vec();
        let rv = paged.rv;
        let next = if end < paged.items.len() {
            Some(format!("{id}:{end}"))
        } else {
            self.pages.remove(&id);
            None
        };
        Ok((rv, items, next))
    }

    /// Starts a watch from resource version `from` (`None`: the current objects as `ADDED`, then
    /// what follows). Returns the receiving end of its lines; a version older than the history
    /// kept gets one `ERROR` line with a `410 Expired` Status, and the stream ends.
    pub fn watch(
        &mut self,
        filter: Filter,
        from: Option<u64>,
        bookmarks: bool,
        token: Option<String>,
    ) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        match from {
            Some(rv) if rv < self.compacted => {
                let gone = Failure::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", self.compacted),
                );
                let _ = tx.send(line("ERROR", &gone.status()));
                return rx;
            }
            Some(rv) => {
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    if let Some(kind) = filter.event(change) {
                        let _ = tx.send(line(kind, &change.object));
                    }
                }
            }
            None => {
                for object in self.all(filter.resource) {
                    if filter.matches(&object) {
                        let _ = tx.send(line("ADDED", &object));
                    }
                }
            }
        }
        self.watches.push(Watch {
            filter,
            bookmarks,
            token,
            tx,
        });
        rx
    }

    /// Sends a `BOOKMARK` with the current version to every watch that asked for bookmarks.
    pub fn bookmark(&mut self) {
        let rv = self.rv.to_string();
        self.watches.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let object = json!({
                "kind": w.filter.resource.kind,
                "apiVersion": w.filter.resource.api_version(),
                "metadata": { "resourceVersion": rv },
            });
            w.tx.send(line("BOOKMARK", &object)).is_ok()
        });
    }

    /// Ends every open watch (of `token` only, if given), as an API server does when it restarts
    /// or a watch times out.
    pub fn close_watches(&mut self, token: Option<&str>) {
        self.watches
            .retain(|w| token.is_some_and(|t| w.token.as_deref() != Some(t)));
    }

    /// Forgets the history up to now: watches from older versions and unfinished paged lists
    /// get `410 Gone`.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
        self.pages.clear();
    }

    /// How many watches are open.
    pub fn watch_count(&self) -> usize {
        self.watches.iter().filter(|w| !w.tx.is_closed()).count()
    }
}

fn not_found(resource: &ResourceType, key: &Key) -> Failure {
    Failure::new(
        404,
        "NotFound",
        format!("{} {:?} not found", resource.plural, key.1),
    )
}

/// RFC 3339 time of a resource version (see [`EPOCH`]).
fn timestamp(rv: u64) -> String {
    let seconds = EPOCH + i64::try_from(rv).unwrap_or(0);
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_kind;

    fn secret(name: &str, kind: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "a"}, "type": kind})
    }

    #[test]
    fn field_selectors_turn_changes_into_additions_and_deletions() {
        let secrets = by_kind("v1", "Secret").expect("known");
        let mut store = Store::default();
        let filter = Filter::new(secrets, None, Some("type=kubernetes.io/tls")).expect("valid");
        store.put(secrets, secret("s", "Opaque")).expect("put");
        let mut rx = store.watch(filter, Some(0), false, None);
        store
            .put(secrets, secret("s", "kubernetes.io/tls"))
            .expect("put");
        store.put(secrets, secret("s", "Opaque")).expect("put");
        let kinds: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| serde_json::from_slice::<Value>(&l).expect("json")["type"].to_string())
            .collect();
        // The Opaque secret's creation is not selected; its change to TLS is an addition, and
        // its change back a deletion.
        assert_eq!(kinds, ["\"ADDED\"", "\"DELETED\""].map(String::from));
    }

    #[test]
    fn lists_page_and_expire_on_compaction() {
        let secrets = by_kind("v1", "Secret").expect("known");
        let mut store = Store::default();
        for n in 0..5 {
            store
                .put(secrets, secret(&format!("s{n}"), "Opaque"))
                .expect("put");
        }
        let filter = Filter::new(secrets, None, None).expect("valid");
        let (rv, page, next) = store.list(&filter, Some(2), None).expect("list");
        assert_eq!((rv, page.len()), (5, 2));
        let next = next.expect("more");
        let (_, page, next2) = store.list(&filter, Some(2), Some(&next)).expect("list");
        assert_eq!(page.len(), 2);
        store.compact();
        let gone = store
            .list(&filter, Some(2), next2.as_deref())
            .expect_err("expired");
        assert_eq!(gone.code, 410);
    }
}
