//! Diagnostics as Kubernetes Events (`events.k8s.io/v1`) on the objects they name, from the
//! leader only. A diagnostic becomes an Event when it appears, not on every translation while it
//! lasts; when it comes back after going away, the Event's series count goes up. Each object gets
//! a small burst of Events and then one per refill interval, so a flapping object cannot flood the
//! API server. Event names follow from the object and the text, so a new leader finds the Events
//! of the old one (`409 AlreadyExists`) instead of repeating them.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use model::{Diagnostic, Kind, ObjectKey, Severity, Snapshot, Subject};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Served, Task};

/// Records of Events kept for diagnostics that may come back.
const MAX_RECORDS: usize = 10_000;

/// How Events are made and limited.
#[derive(Clone, Debug)]
pub struct EventConfig {
    /// `reportingController` (the controller name).
    pub controller: String,
    /// `reportingInstance` (this replica, `POD_NAME`).
    pub instance: String,
    /// Events an object may get at once…
    pub burst: u32,
    /// …and then one more per this interval.
    pub refill: Duration,
}

impl EventConfig {
    /// Ten Events at once per object, then one a minute.
    pub fn new(controller: String, instance: String) -> Self {
        EventConfig {
            controller,
            instance,
            burst: 10,
            refill: Duration::from_secs(60),
        }
    }
}

/// What identifies one Event: the object and what is said about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Said {
    kind: Kind,
    key: ObjectKey,
    reason: &'static str,
    note: String,
}

/// An Event this replica created or found, and how often it was seen.
struct Record {
    name: String,
    namespace: String,
    count: i32,
}

/// A token bucket per object.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The running recorder.
pub struct EventRecorder {
    _task: Task,
}

impl EventRecorder {
    /// Starts turning diagnostics of published translations into Events whenever this replica
    /// leads (on the current tokio runtime).
    pub fn start(
        client: Client,
        config: EventConfig,
        served: watch::Receiver<Option<Served>>,
        leading: watch::Receiver<bool>,
    ) -> Self {
        EventRecorder {
            _task: Task::spawn(Box::pin(run(client, config, served, leading))),
        }
    }
}

/// The Event reason for a diagnostic of `severity`.
fn reason(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "Rejected",
        _ => "Degraded",
    }
}

/// `apiVersion` of a kind.
fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
        Kind::EndpointSlice => "discovery.k8s.io/v1",
        Kind::Service | Kind::Endpoints | Kind::Secret | Kind::ConfigMap => "v1",
    }
}

/// What the diagnostics of one translation say, about objects only, warnings and errors only.
fn said(diagnostics: &[Diagnostic]) -> Vec<Said> {
    let mut out: Vec<Said> = diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Info)
        .filter_map(|d| match &d.subject {
            Subject::Object { kind, key } => {
                let mut note = match &d.field {
                    Some(field) => format!("{field}: {}", d.message),
                    None => d.message.clone(),
                };
                // The API server refuses notes over 1 kB.
                if note.len() > 1000 {
                    let mut end = 1000;
                    while !note.is_char_boundary(end) {
                        end -= 1;
                    }
                    note.truncate(end);
                }
                Some(Said {
                    kind: *kind,
                    key: key.clone(),
                    reason: reason(d.severity),
                    note,
                })
            }
            Subject::File(_) => None,
        })
        .collect();
    out.dedup();
    out
}

/// The namespace an Event about `said` lives in: the object's, or `default` for cluster-scoped
/// objects.
fn namespace(said: &Said) -> String {
    if said.key.namespace.is_empty() {
        "default".to_string()
    } else {
        said.key.namespace.clone()
    }
}

/// A name that follows from the object and the text.
fn event_name(said: &Said) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    said.hash(&mut hasher);
    let mut base: String = said.key.name.chars().take(200).collect();
    base.push_str(&format!(".{:016x}", hasher.finish()));
    base
}

fn uid(snapshot: &Snapshot, said: &Said) -> Option<String> {
    let uid = match said.kind {
        Kind::Ingress => &snapshot.ingresses.get(&said.key)?.metadata.uid,
        Kind::IngressClass => &snapshot.ingress_classes.get(&said.key)?.metadata.uid,
        Kind::Service => &snapshot.services.get(&said.key)?.metadata.uid,
        Kind::EndpointSlice => &snapshot.endpoint_slices.get(&said.key)?.metadata.uid,
        Kind::Endpoints => &snapshot.endpoints.get(&said.key)?.metadata.uid,
        Kind::Secret => &snapshot.secrets.get(&said.key)?.metadata.uid,
        Kind::ConfigMap => &snapshot.config_maps.get(&said.key)?.metadata.uid,
    };
    uid.clone()
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

struct Recorder {
    client: Client,
    config: EventConfig,
    /// What the last translation said (emitted or suppressed): not news while it lasts.
    active: HashSet<Said>,
    records: HashMap<Said, Record>,
    buckets: HashMap<(Kind, ObjectKey), Bucket>,
}

impl Recorder {
    /// Takes a token for an Event about the object `said` names.
    fn allow(&mut self, said: &Said) -> bool {
        let now = Instant::now();
        let burst = f64::from(self.config.burst.max(1));
        let refill = self.config.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        let bucket = self
            .buckets
            .entry((said.kind, said.key.clone()))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() / refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn round(&mut self, served: &Served) {
        let now_said = said(&served.diagnostics);
        let mut next = HashSet::with_capacity(now_said.len());
        for s in now_said {
            if !self.active.contains(&s) && self.allow(&s) {
                if let Err(e) = self.emit(&served.snapshot, &s).await {
                    tracing::debug!(error = %e, object = %s.key, "cannot record an Event");
                }
            }
            next.insert(s);
        }
        self.active = next;
        // Records of what went away are kept so that its return counts up the same Event, but
        // not without bound.
        if self.records.len() > MAX_RECORDS {
            let active = &self.active;
            self.records.retain(|s, _| active.contains(s));
        }
    }

    async fn emit(&mut self, snapshot: &Snapshot, said: &Said) -> Result<(), kube::Error> {
        if let Some(record) = self.records.get_mut(said) {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &record.namespace);
            let patch = serde_json::json!({
                "series": { "count": record.count + 1, "lastObservedTime": now() },
            });
            match api
                .patch(&record.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    record.count += 1;
                    return Ok(());
                }
                // Expired meanwhile (the API server keeps Events for an hour): make it anew.
                Err(kube::Error::Api(s)) if s.is_not_found() => {
                    self.records.remove(said);
                }
                Err(e) => return Err(e),
            }
        }
        let namespace = namespace(said);
        let name = event_name(said);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(now()),
            action: Some("Translate".to_string()),
            reason: Some(said.reason.to_string()),
            note: Some(said.note.clone()),
            type_: Some("Warning".to_string()),
            reporting_controller: Some(self.config.controller.clone()),
            reporting_instance: Some(self.config.instance.clone()),
            regarding: Some(ObjectReference {
                api_version: Some(api_version(said.kind).to_string()),
                kind: Some(said.kind.as_str().to_string()),
                namespace: (!said.key.namespace.is_empty()).then(|| said.key.namespace.clone()),
                name: Some(said.key.name.clone()),
                uid: uid(snapshot, said),
                ..ObjectReference::default()
            }),
            series: None::<EventSeries>,
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let count = match api.create(&PostParams::default(), &event).await {
            Ok(_) => 1,
            // Another leader recorded it already.
            Err(kube::Error::Api(s)) if s.is_already_exists() => 1,
            Err(e) => return Err(e),
        };
        self.records.insert(
            said.clone(),
            Record {
                name,
                namespace,
                count,
            },
        );
        Ok(())
    }
}

async fn run(
    client: Client,
    config: EventConfig,
    mut served: watch::Receiver<Option<Served>>,
    mut leading: watch::Receiver<bool>,
) {
    let mut recorder = Recorder {
        client,
        config,
        active: HashSet::new(),
        records: HashMap::new(),
        buckets: HashMap::new(),
    };
    let mut last_diagnostics = None;
    loop {
        tokio::select! {
            r = served.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
        }
        if !*leading.borrow_and_update() {
            recorder.active.clear();
            last_diagnostics = None;
            continue;
        }
        let Some(current) = served.borrow_and_update().clone() else {
            continue;
        };
        // Status-only updates carry the same diagnostics: nothing new to say.
        if last_diagnostics
            .as_ref()
            .is_some_and(|d| std::sync::Arc::ptr_eq(d, &current.diagnostics))
        {
            continue;
        }
        last_diagnostics = Some(current.diagnostics.clone());
        recorder.round(&current).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_about_objects_become_events_naming_the_field() {
        let key = ObjectKey::new("apps", "web");
        let diagnostics = vec![
            Diagnostic::new(
                Severity::Error,
                Kind::Ingress,
                &key,
                Some("spec.rules[0].host".into()),
                "bad host",
            ),
            Diagnostic::new(Severity::Info, Kind::Ingress, &key, None, "other class"),
            Diagnostic::file(Severity::Error, "a.yaml", "unparsable"),
        ];
        let list = said(&diagnostics);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].note, "spec.rules[0].host: bad host");
        assert_eq!(list[0].reason, "Rejected");
        let name = event_name(&list[0]);
        assert!(name.starts_with("web.") && name == event_name(&list[0].clone()));
        let class = Said {
            kind: Kind::IngressClass,
            key: ObjectKey::new("", "portcullis"),
            reason: "Degraded",
            note: "x".into(),
        };
        assert_eq!(namespace(&class), "default");
    }
}
