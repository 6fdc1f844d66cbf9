//! The aggregator: applies what the watchers see to one [`Snapshot`], starts and stops the
//! watches of objects that annotations name, tracks which lists have synced, and decides when to
//! hand a new snapshot on — after a short quiet time (bounded by a maximum delay) for most
//! changes, at once for endpoint changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use kube::runtime::watcher;
use kube::{Api, Client};
use model::{ConfigMap, Ingress, Kind, Object, ObjectKey, Secret, Service, SharedObject, Snapshot};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::refs::{self, Delta, Reference, References};
use super::watches::{self, Health, Message, StoreId};
use super::{ClusterConfig, SyncState, Task, Update};
use crate::Changes;

/// The kinds watched whole; the first list of each must complete before anything is served.
pub const WATCHED: [Kind; 5] = [
    Kind::Ingress,
    Kind::IngressClass,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Secret,
];

/// What applying one message changed.
#[derive(Clone, Copy, Debug, Default)]
struct Effect {
    /// Something routing can depend on changed.
    routing: bool,
    /// Only status or bookkeeping changed (the status writer still wants the new object).
    quiet: bool,
    /// Endpoints changed: hand on at once.
    urgent: bool,
}

impl Effect {
    fn merge(&mut self, other: Effect) {
        self.routing |= other.routing;
        self.quiet |= other.quiet;
        self.urgent |= other.urgent;
    }

    fn any(&self) -> bool {
        self.routing || self.quiet || self.urgent
    }
}

/// Changes not yet handed on.
#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Instant,
    last: Instant,
    urgent: bool,
}

/// A watch of one named object.
struct Named {
    _task: Task,
    synced: bool,
}

/// The aggregator's state.
pub struct Aggregator {
    client: Client,
    config: Arc<ClusterConfig>,
    tx: mpsc::UnboundedSender<Message>,
    health: Arc<Health>,
    snapshot: Arc<Snapshot>,
    tls_secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    named_secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    refs: References,
    named: HashMap<Reference, Named>,
    buffers: HashMap<StoreId, Vec<SharedObject>>,
    synced: BTreeSet<Kind>,
    ready: bool,
    routing_revision: u64,
    revision: u64,
    /// The objects changed in a way routing can see since the last update handed on (once there
    /// was a first one).
    changed: BTreeSet<(Kind, ObjectKey)>,
    pending: Option<Pending>,
    updates: watch::Sender<Option<Update>>,
    sync: watch::Sender<SyncState>,
}

/// An object with the parts the API server changes on its own (version, status) cleared, to
/// tell a change users made from bookkeeping.
fn without_status<T: Clone>(object: &T, clear: impl Fn(&mut T)) -> T {
    let mut copy = object.clone();
    clear(&mut copy);
    copy
}

fn ingress_core(i: &Ingress) -> Ingress {
    without_status(i, |i| {
        i.status = None;
        i.metadata.resource_version = None;
        i.metadata.generation = None;
    })
}

/// Whether `old` holds an object equal to `new`.
fn same<T: PartialEq>(old: Option<&Arc<T>>, new: &Arc<T>) -> bool {
    old.is_some_and(|o| Arc::ptr_eq(o, new) || **o == **new)
}

/// Puts `object` into `map` unless an equal one is there; returns whether it did.
fn replace<T: PartialEq>(
    map: &mut BTreeMap<ObjectKey, Arc<T>>,
    key: &ObjectKey,
    object: Arc<T>,
) -> bool {
    if same(map.get(key), &object) {
        return false;
    }
    map.insert(key.clone(), object);
    true
}

impl Aggregator {
    /// An aggregator that sends its snapshots to `updates` and its sync progress to `sync`.
    pub fn new(
        client: Client,
        config: Arc<ClusterConfig>,
        tx: mpsc::UnboundedSender<Message>,
        health: Arc<Health>,
        updates: watch::Sender<Option<Update>>,
        sync: watch::Sender<SyncState>,
    ) -> Self {
        let aggregator = Aggregator {
            client,
            config,
            tx,
            health,
            snapshot: Arc::new(Snapshot::default()),
            tls_secrets: BTreeMap::new(),
            named_secrets: BTreeMap::new(),
            refs: References::default(),
            named: HashMap::new(),
            buffers: HashMap::new(),
            synced: BTreeSet::new(),
            ready: false,
            routing_revision: 0,
            revision: 0,
            changed: BTreeSet::new(),
            pending: None,
            updates,
            sync,
        };
        aggregator.publish_sync();
        aggregator
    }

    /// Runs until every watcher is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else { return };
                    self.handle(message);
                    // Take whatever else has arrived in one go.
                    while let Ok(message) = rx.try_recv() {
                        self.handle(message);
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            if self.is_due(Instant::now()) {
                self.emit();
            }
        }
    }

    fn handle(&mut self, message: Message) {
        // A watch of an object nothing names any more was stopped, but what it sent before may
        // still be on the way: it must not bring the object back.
        let store = match &message {
            Message::Listing(s) | Message::Listed(s, _) | Message::Synced(s) => s,
            Message::Applied(s, _) | Message::Deleted(s, _, _) => s,
        };
        if let StoreId::Named(r) = store {
            if !self.named.contains_key(r) {
                return;
            }
        }
        let effect = match message {
            Message::Listing(store) => {
                self.buffers.insert(store, Vec::new());
                Effect::default()
            }
            Message::Listed(store, object) => {
                self.buffers.entry(store).or_default().push(object);
                Effect::default()
            }
            Message::Synced(store) => self.synced(store),
            Message::Applied(store, object) => self.apply(&store, object),
            Message::Deleted(store, kind, key) => self.delete(&store, kind, &key),
        };
        if effect.any() {
            let now = Instant::now();
            if effect.routing || effect.urgent {
                self.routing_revision += 1;
            }
            let pending = self.pending.get_or_insert(Pending {
                first: now,
                last: now,
                urgent: false,
            });
            pending.last = now;
            pending.urgent |= effect.urgent;
        }
    }

    /// A list completed: its objects replace the store's contents.
    fn synced(&mut self, store: StoreId) -> Effect {
        let listed = self.buffers.remove(&store).unwrap_or_default();
        let mut effect = Effect::default();
        let listed_keys: BTreeSet<(Kind, ObjectKey)> =
            listed.iter().map(|o| (o.kind(), o.key())).collect();
        for (kind, key) in self.keys(&store) {
            if !listed_keys.contains(&(kind, key.clone())) {
                effect.merge(self.delete(&store, kind, &key));
            }
        }
        for object in listed {
            effect.merge(self.apply(&store, object));
        }
        match &store {
            StoreId::Kind(kind) => {
                if self.synced.insert(*kind) {
                    tracing::debug!(kind = %kind, "initial list synced");
                }
            }
            StoreId::Named(r) => {
                if let Some(named) = self.named.get_mut(r) {
                    named.synced = true;
                }
            }
        }
        self.publish_sync();
        effect
    }

    /// The keys a store holds now.
    fn keys(&self, store: &StoreId) -> Vec<(Kind, ObjectKey)> {
        let s = &self.snapshot;
        let keys: Vec<ObjectKey> = match store {
            StoreId::Kind(Kind::Ingress) => s.ingresses.keys().cloned().collect(),
            StoreId::Kind(Kind::IngressClass) => s.ingress_classes.keys().cloned().collect(),
            StoreId::Kind(Kind::Service) => s.services.keys().cloned().collect(),
            StoreId::Kind(Kind::EndpointSlice) => s.endpoint_slices.keys().cloned().collect(),
            StoreId::Kind(Kind::Secret) => self.tls_secrets.keys().cloned().collect(),
            StoreId::Kind(_) => Vec::new(),
            StoreId::Named((Kind::Secret, key)) => self
                .named_secrets
                .get(key)
                .map(|_| key.clone())
                .into_iter()
                .collect(),
            StoreId::Named((_, key)) => s
                .config_maps
                .get(key)
                .map(|_| key.clone())
                .into_iter()
                .collect(),
        };
        let kind = match store {
            StoreId::Kind(kind) | StoreId::Named((kind, _)) => *kind,
        };
        keys.into_iter().map(|k| (kind, k)).collect()
    }

    fn apply(&mut self, store: &StoreId, object: SharedObject) -> Effect {
        let key = object.key();
        let changed = |routing: bool, urgent: bool| Effect {
            routing,
            urgent,
            quiet: false,
        };
        match (store, object) {
            (StoreId::Kind(Kind::Secret), SharedObject::Secret(secret)) => {
                if !replace(&mut self.tls_secrets, &key, secret) {
                    return Effect::default();
                }
                self.settle_secret(&key)
            }
            (StoreId::Named(_), SharedObject::Secret(secret)) => {
                if !replace(&mut self.named_secrets, &key, secret) {
                    return Effect::default();
                }
                self.settle_secret(&key)
            }
            (_, SharedObject::Ingress(ing)) => self.apply_ingress(key, ing),
            (_, SharedObject::Service(svc)) => self.apply_service(key, svc),
            (_, SharedObject::EndpointSlice(slice)) => {
                if same(self.snapshot.endpoint_slices.get(&key), &slice) {
                    return Effect::default();
                }
                self.note(Kind::EndpointSlice, &key);
                Arc::make_mut(&mut self.snapshot)
                    .endpoint_slices
                    .insert(key, slice);
                changed(false, true)
            }
            (_, SharedObject::IngressClass(class)) => {
                if same(self.snapshot.ingress_classes.get(&key), &class) {
                    return Effect::default();
                }
                self.note(Kind::IngressClass, &key);
                Arc::make_mut(&mut self.snapshot)
                    .ingress_classes
                    .insert(key, class);
                changed(true, false)
            }
            (_, SharedObject::ConfigMap(map)) => {
                if same(self.snapshot.config_maps.get(&key), &map) {
                    return Effect::default();
                }
                self.note(Kind::ConfigMap, &key);
                Arc::make_mut(&mut self.snapshot)
                    .config_maps
                    .insert(key, map);
                changed(true, false)
            }
            (_, other) => {
                tracing::debug!(kind = %other.kind(), "ignored an object of a kind not read here");
                Effect::default()
            }
        }
    }

    /// An Ingress added or changed: a change of status alone is quiet; what it names is read.
    fn apply_ingress(&mut self, key: ObjectKey, ing: Arc<Ingress>) -> Effect {
        let old = self.snapshot.ingresses.get(&key).cloned();
        if same(old.as_ref(), &ing) {
            return Effect::default();
        }
        let quiet = old.is_some_and(|o| ingress_core(&o) == ingress_core(&ing));
        if !quiet {
            self.note(Kind::Ingress, &key);
        }
        let references = refs::references(&ing, &self.config.annotation_prefix);
        Arc::make_mut(&mut self.snapshot)
            .ingresses
            .insert(key.clone(), ing);
        self.set_references(&key, references);
        Effect {
            routing: !quiet,
            quiet,
            urgent: false,
        }
    }

    /// A Service added or changed. A snapshot keeps neither a Service's status nor its version,
    /// so a change of those alone (a load balancer's address) leaves the Service as it was.
    fn apply_service(&mut self, key: ObjectKey, svc: Arc<Service>) -> Effect {
        if same(self.snapshot.services.get(&key), &svc) {
            return Effect::default();
        }
        self.note(Kind::Service, &key);
        Arc::make_mut(&mut self.snapshot).services.insert(key, svc);
        Effect {
            routing: true,
            quiet: false,
            urgent: false,
        }
    }

    fn delete(&mut self, store: &StoreId, kind: Kind, key: &ObjectKey) -> Effect {
        let removed = match (store, kind) {
            (StoreId::Kind(Kind::Secret), Kind::Secret) => {
                return match self.tls_secrets.remove(key) {
                    Some(_) => self.settle_secret(key),
                    None => Effect::default(),
                };
            }
            (StoreId::Named(_), Kind::Secret) => {
                return match self.named_secrets.remove(key) {
                    Some(_) => self.settle_secret(key),
                    None => Effect::default(),
                };
            }
            (_, Kind::Ingress) => {
                if !self.snapshot.ingresses.contains_key(key) {
                    return Effect::default();
                }
                self.set_references(key, Vec::new());
                self.note(kind, key);
                Arc::make_mut(&mut self.snapshot).remove(kind, key)
            }
            _ => {
                // Look before making the snapshot unique: most deletions of unknown objects are
                // repeats.
                let present = match kind {
                    Kind::IngressClass => self.snapshot.ingress_classes.contains_key(key),
                    Kind::Service => self.snapshot.services.contains_key(key),
                    Kind::EndpointSlice => self.snapshot.endpoint_slices.contains_key(key),
                    Kind::ConfigMap => self.snapshot.config_maps.contains_key(key),
                    _ => false,
                };
                if present {
                    self.note(kind, key);
                }
                present && Arc::make_mut(&mut self.snapshot).remove(kind, key)
            }
        };
        Effect {
            routing: removed,
            urgent: removed && kind == Kind::EndpointSlice,
            quiet: false,
        }
    }

    /// Puts the Secret `key` into the snapshot from whichever store holds it (the named read
    /// first), or takes it out.
    fn settle_secret(&mut self, key: &ObjectKey) -> Effect {
        let wanted = self
            .named_secrets
            .get(key)
            .or_else(|| self.tls_secrets.get(key))
            .cloned();
        let current = self.snapshot.secrets.get(key);
        let same = match (&wanted, current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if same {
            return Effect::default();
        }
        self.note(Kind::Secret, key);
        let snapshot = Arc::make_mut(&mut self.snapshot);
        match wanted {
            Some(secret) => {
                snapshot.secrets.insert(key.clone(), secret);
            }
            None => {
                snapshot.secrets.remove(key);
            }
        }
        Effect {
            routing: true,
            ..Effect::default()
        }
    }

    /// Records what Ingress `key` names now; starts watches for newly named objects and stops
    /// those nothing names any more.
    fn set_references(&mut self, key: &ObjectKey, references: Vec<Reference>) {
        let mut delta = Delta::default();
        let references = match &self.config.namespace {
            // Outside the namespace watched, nothing is read.
            Some(ns) => references
                .into_iter()
                .filter(|(_, k)| &k.namespace == ns)
                .collect(),
            None => references,
        };
        self.refs.set(key, references, &mut delta);
        for r in delta.removed {
            if let Some(named) = self.named.remove(&r) {
                drop(named);
                self.health.forget(&StoreId::Named(r.clone()).to_string());
                let store = StoreId::Named(r.clone());
                self.buffers.remove(&store);
                let _ = self.delete(&store, r.0, &r.1);
                // `delete` only reports; the caller's effect already covers this Ingress.
            }
        }
        for r in delta.added {
            let task = self.spawn_named(&r);
            self.named.insert(
                r,
                Named {
                    _task: task,
                    synced: false,
                },
            );
        }
        if !self.named.is_empty() || self.ready {
            self.publish_sync();
        }
    }

    fn spawn_named(&self, r: &Reference) -> Task {
        let (kind, key) = r;
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
        let store = StoreId::Named(r.clone());
        let tx = self.tx.clone();
        let health = self.health.clone();
        let retry = self.config.retry;
        let client = self.client.clone();
        Task::spawn(match kind {
            Kind::ConfigMap => Box::pin(watches::run(
                Api::<ConfigMap>::namespaced(client, &key.namespace),
                config,
                store,
                Object::ConfigMap,
                tx,
                health,
                retry,
            )),
            _ => Box::pin(watches::run(
                Api::<Secret>::namespaced(client, &key.namespace),
                config,
                store,
                Object::Secret,
                tx,
                health,
                retry,
            )),
        })
    }

    fn sync_state(&self) -> SyncState {
        let mut synced = Vec::new();
        let mut waiting = Vec::new();
        for kind in WATCHED {
            let name = StoreId::Kind(kind).to_string();
            if self.synced.contains(&kind) {
                synced.push(name);
            } else {
                waiting.push(name);
            }
        }
        let mut named: Vec<&Reference> = self
            .named
            .iter()
            .filter(|(_, n)| !n.synced)
            .map(|(r, _)| r)
            .collect();
        named.sort();
        waiting.extend(
            named
                .into_iter()
                .map(|r| StoreId::Named(r.clone()).to_string()),
        );
        SyncState {
            ready: self.ready,
            synced,
            waiting,
        }
    }

    fn publish_sync(&self) {
        let state = self.sync_state();
        self.sync.send_if_modified(|old| {
            if *old == state {
                false
            } else {
                *old = state;
                true
            }
        });
    }

    fn all_synced(&self) -> bool {
        self.synced.len() == WATCHED.len() && self.named.values().all(|n| n.synced)
    }

    /// When the pending changes are due, if not at once.
    fn deadline(&self) -> Option<Instant> {
        let pending = self.pending?;
        if !self.ready {
            return None;
        }
        let latest = pending.first + self.config.max_delay;
        if self.named.values().any(|n| !n.synced) {
            // A newly named object is being read: wait for it, but not past the maximum delay.
            return Some(latest);
        }
        Some((pending.last + self.config.debounce).min(latest))
    }

    fn is_due(&mut self, now: Instant) -> bool {
        if !self.ready {
            if !self.all_synced() {
                return false;
            }
            self.ready = true;
            self.publish_sync();
            tracing::info!("every initial list synced");
            return true;
        }
        match self.pending {
            None => false,
            Some(p) if p.urgent => true,
            Some(_) => self.deadline().is_some_and(|d| d <= now),
        }
    }

    /// Records that an object changed in a way routing can see (not before the first update:
    /// until then everything is new).
    fn note(&mut self, kind: Kind, key: &ObjectKey) {
        if self.revision > 0 {
            self.changed.insert((kind, key.clone()));
        }
    }

    fn emit(&mut self) {
        self.pending = None;
        let changes = Changes {
            since: if self.revision > 0 {
                self.revision
            } else {
                u64::MAX
            },
            objects: Arc::new(std::mem::take(&mut self.changed).into_iter().collect()),
        };
        self.revision += 1;
        let update = Update {
            snapshot: self.snapshot.clone(),
            routing_revision: self.routing_revision,
            revision: self.revision,
            changes,
        };
        self.updates.send_replace(Some(update));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
