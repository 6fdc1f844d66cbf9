//! One kube-rs watcher per kind (and per object read by name), turned into messages for the
//! aggregator; and the health of them all, so an outage is logged once, not once per retry.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use model::{Kind, Object, ObjectKey, SharedObject};
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::refs::Reference;

/// Which store a message is about: one of the kinds watched whole, or one object read by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreId {
    /// Every object of a kind (Secrets: those of type `kubernetes.io/tls`).
    Kind(Kind),
    /// One Secret or ConfigMap an annotation names.
    Named(Reference),
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreId::Kind(Kind::Secret) => f.write_str("Secret (type=kubernetes.io/tls)"),
            StoreId::Kind(kind) => write!(f, "{kind}"),
            StoreId::Named((kind, key)) => write!(f, "{kind} {key}"),
        }
    }
}

/// What a watcher tells the aggregator.
#[derive(Debug)]
pub enum Message {
    /// A (re)list began: the objects that follow replace the store's contents.
    Listing(StoreId),
    /// One object of the list.
    Listed(StoreId, SharedObject),
    /// The list is complete.
    Synced(StoreId),
    /// An object was added or changed.
    Applied(StoreId, SharedObject),
    /// An object was deleted.
    Deleted(StoreId, Kind, ObjectKey),
}

/// The watches that are failing now, and why: shared by every watch.
#[derive(Debug, Default)]
pub struct Health {
    failing: Mutex<BTreeMap<String, String>>,
}

/// Whether the error only means the watch's version is too old and a new list is under way.
fn is_expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure of watch `what`; logs only the first failure of an outage.
    pub fn failed(&self, what: &str, error: &watcher::Error) {
        if is_expired(error) {
            tracing::debug!(watch = what, "resource version expired; listing again");
            return;
        }
        let mut failing = self.lock();
        let first = failing.is_empty();
        failing.insert(what.to_string(), error.to_string());
        if first {
            tracing::warn!(
                watch = what,
                error = %error,
                "lost the Kubernetes API; retrying with backoff while the last routing table stays in service"
            );
        } else {
            tracing::debug!(watch = what, error = %error, "watch failed again");
        }
    }

    /// Records that watch `what` works; logs the end of an outage once every watch works.
    pub fn ok(&self, what: &str) {
        let mut failing = self.lock();
        if failing.is_empty() {
            return;
        }
        if failing.remove(what).is_some() && failing.is_empty() {
            tracing::info!("Kubernetes API reachable again; every watch re-established");
        }
    }

    /// Forgets a watch that was stopped.
    pub fn forget(&self, what: &str) {
        self.lock().remove(what);
    }

    /// The failing watches and their last errors.
    pub fn failing(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// How watches retry.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// First wait after a failure.
    pub min: Duration,
    /// Longest wait.
    pub max: Duration,
}

/// Drops what the controller never reads from an object: the server's bookkeeping of who wrote
/// which field.
fn trim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Runs a watcher of `api` until the aggregator goes away, sending it what the watcher sees.
pub async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    store: StoreId,
    convert: fn(K) -> Object,
    tx: mpsc::UnboundedSender<Message>,
    health: Arc<Health>,
    retry: Retry,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let name = store.to_string();
    let mut stream = watcher(api, config)
        .backoff(Backoff::new(retry.min, retry.max))
        .boxed();
    let shared = |mut object: K| {
        trim(&mut object);
        SharedObject::from(convert(object))
    };
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                health.failed(&name, &error);
                continue;
            }
        };
        health.ok(&name);
        let message = match event {
            Event::Init => Message::Listing(store.clone()),
            Event::InitApply(o) => Message::Listed(store.clone(), shared(o)),
            Event::InitDone => Message::Synced(store.clone()),
            Event::Apply(o) => Message::Applied(store.clone(), shared(o)),
            Event::Delete(o) => {
                let object = shared(o);
                Message::Deleted(store.clone(), object.kind(), object.key())
            }
        };
        if tx.send(message).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing::span;

    /// Records the level of every event logged.
    struct Levels(Arc<Mutex<Vec<tracing::Level>>>);

    impl tracing::Subscriber for Levels {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if let Ok(mut levels) = self.0.lock() {
                levels.push(*event.metadata().level());
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    fn refused(code: u16) -> watcher::Error {
        let status = kube::core::Status::failure("refused", "Unauthorized").with_code(code);
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn an_outage_is_logged_once_not_once_per_retry() {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let health = Health::default();
        tracing::subscriber::with_default(Levels(levels.clone()), || {
            for _ in 0..3 {
                health.failed("Ingress", &refused(401));
                health.failed("Service", &refused(401));
            }
            // An expired version is routine: a new list follows, nothing is wrong.
            health.failed("Secret", &refused(410));
            health.ok("Ingress");
            assert_eq!(health.failing().len(), 1);
            health.ok("Service");
            health.ok("Service");
        });
        let levels = levels.lock().map(|l| l.clone()).unwrap_or_default();
        let count = |level| levels.iter().filter(|l| **l == level).count();
        assert_eq!(count(tracing::Level::WARN), 1, "{levels:?}");
        assert_eq!(count(tracing::Level::INFO), 1, "{levels:?}");
        assert!(health.failing().is_empty());
    }
}
