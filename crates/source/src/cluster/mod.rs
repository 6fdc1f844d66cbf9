//! The Kubernetes API as a source of [`Snapshot`]s.
//!
//! One kube-rs watcher per kind (Ingress, IngressClass, Service, EndpointSlice, and Secrets of
//! type `kubernetes.io/tls` by field selector) and one per Secret or ConfigMap that an Ingress
//! annotation names feed an aggregator, which keeps one snapshot — the same type the folder
//! source produces — and hands it on once every initial list has synced, then after each burst of
//! changes. Broken watches are re-established with backoff; the last snapshot stays in force.

mod aggregate;
mod backoff;
mod events;
mod leader;
mod refs;
mod status;
mod watches;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::watcher;
use kube::{Api, Client};
use model::k8s_openapi::api::core::v1::Service;
use model::k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{Ingress, IngressClass, Kind, Object, Secret, Snapshot};
use tokio::sync::{mpsc, watch};

pub use events::{EventConfig, EventRecorder};
pub use leader::{Election, ElectionConfig};
pub use refs::{references, Reference};
pub use status::{service_addresses, Served, StatusConfig, StatusWriter};
pub use watches::Retry;

use aggregate::Aggregator;
use watches::{Health, StoreId};

use crate::SourceError;

/// One kind of call to the API server, as RBAC names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiCall {
    /// API group (empty for the core group).
    pub group: &'static str,
    /// Resource, with its subresource (`ingresses/status`).
    pub resource: &'static str,
    /// RBAC verbs.
    pub verbs: &'static [&'static str],
    /// Only in the controller's own namespace (a Role rather than a ClusterRole).
    pub own_namespace: bool,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    own_namespace: bool,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verbs,
        own_namespace,
    }
}

/// Every call the cluster source, the status writer, the Event recorder and the election make:
/// what the RBAC rules in `deploy/` must grant, and all they grant.
pub const API_CALLS: &[ApiCall] = &[
    // Watched whole; read again on a status conflict and for the shutdown clean-up.
    call(
        "networking.k8s.io",
        "ingresses",
        &["get", "list", "watch"],
        false,
    ),
    call("networking.k8s.io", "ingresses/status", &["update"], false),
    call(
        "networking.k8s.io",
        "ingressclasses",
        &["list", "watch"],
        false,
    ),
    // Watched whole, and `--publish-service` by name.
    call("", "services", &["list", "watch"], false),
    // Type kubernetes.io/tls whole, and those annotations name, by name.
    call("", "secrets", &["list", "watch"], false),
    // Those annotations name, by name.
    call("", "configmaps", &["list", "watch"], false),
    call(
        "discovery.k8s.io",
        "endpointslices",
        &["list", "watch"],
        false,
    ),
    call("events.k8s.io", "events", &["create", "patch"], false),
    call(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
        true,
    ),
];

/// How the cluster source watches.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Only this namespace (`None`: all namespaces). IngressClasses are cluster-scoped and always
    /// read whole.
    pub namespace: Option<String>,
    /// The annotation prefix under which Ingresses name Secrets and ConfigMaps
    /// (`PREFIX/auth-secret`, `PREFIX/proxy-ssl-secret`, `PREFIX/custom-headers`).
    pub annotation_prefix: String,
    /// A burst of changes is handed on once none has arrived for this long…
    pub debounce: Duration,
    /// …or this long after its first change, whichever is sooner. Endpoint changes go at once.
    pub max_delay: Duration,
    /// How broken watches retry.
    pub retry: Retry,
    /// Objects per page of the initial lists (`None`: one page).
    pub page_size: Option<u32>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            namespace: None,
            annotation_prefix: "nginx.ingress.kubernetes.io".to_string(),
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            retry: Retry {
                min: Duration::from_millis(800),
                max: Duration::from_secs(30),
            },
            page_size: Some(500),
        }
    }
}

/// How to reach the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// With a kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// From inside a pod: the ServiceAccount token and `KUBERNETES_SERVICE_HOST`.
    InCluster,
}

/// A client for the API server named by `access`. Its TLS takes the process's default
/// provider, which is set here to the one the listener and upstream connections use (a no-op
/// when one is set already).
pub async fn connect(access: &Access) -> Result<Client, SourceError> {
    let _ = table::crypto_provider().install_default();
    let config = match access {
        Access::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                SourceError::Cluster(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| SourceError::Cluster(format!("kubeconfig {}: {e}", path.display())))?
        }
        Access::InCluster => kube::Config::incluster()
            .map_err(|e| SourceError::Cluster(format!("in-cluster configuration: {e}")))?,
    };
    Client::try_from(config).map_err(|e| SourceError::Cluster(format!("Kubernetes client: {e}")))
}

/// A snapshot the cluster source handed on.
#[derive(Clone, Debug)]
pub struct Update {
    /// Every object read.
    pub snapshot: Arc<Snapshot>,
    /// Goes up when something routing can depend on changed; an update with the same value as
    /// the one before changed only status or bookkeeping (it need not be translated again).
    pub routing_revision: u64,
    /// Goes up with every update.
    pub revision: u64,
    /// What changed in a way routing can see since the update of an earlier revision (the one
    /// before).
    pub changes: crate::Changes,
}

/// Which initial lists have completed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Every list completed once: snapshots are handed on.
    pub ready: bool,
    /// The lists that completed.
    pub synced: Vec<String>,
    /// The lists still under way (or failing).
    pub waiting: Vec<String>,
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "synced: {}", self.synced.join(", "))?;
        if !self.waiting.is_empty() {
            writeln!(f, "waiting for: {}", self.waiting.join(", "))?;
        }
        Ok(())
    }
}

/// A spawned task, aborted when dropped.
pub struct Task(tokio::task::JoinHandle<()>);

impl Task {
    /// Spawns `future` on the current runtime.
    pub fn spawn(future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Self {
        Task(tokio::spawn(future))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running cluster source: its watches and aggregator stop when it is dropped.
pub struct ClusterSource {
    _tasks: Vec<Task>,
    updates: watch::Receiver<Option<Update>>,
    sync: watch::Receiver<SyncState>,
    health: Arc<Health>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl ClusterSource {
    /// Starts watching (on the current tokio runtime).
    pub fn start(client: Client, config: ClusterConfig) -> Self {
        let config = Arc::new(config);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (updates_tx, updates) = watch::channel(None);
        let (sync_tx, sync) = watch::channel(SyncState::default());
        let ns = config.namespace.as_deref();
        let base = watcher::Config {
            page_size: config.page_size,
            ..watcher::Config::default()
        };
        let retry = config.retry;
        let run = |store: Kind| (StoreId::Kind(store), tx.clone(), health.clone());
        let mut tasks = Vec::new();
        let (s, t, h) = run(Kind::Ingress);
        tasks.push(Task::spawn(Box::pin(watches::run(
            api::<Ingress>(&client, ns),
            base.clone(),
            s,
            Object::Ingress,
            t,
            h,
            retry,
        ))));
        let (s, t, h) = run(Kind::IngressClass);
        tasks.push(Task::spawn(Box::pin(watches::run(
            Api::<IngressClass>::all(client.clone()),
            base.clone(),
            s,
            Object::IngressClass,
            t,
            h,
            retry,
        ))));
        let (s, t, h) = run(Kind::Service);
        tasks.push(Task::spawn(Box::pin(watches::run(
            api::<Service>(&client, ns),
            base.clone(),
            s,
            |service| Object::Service(service.into()),
            t,
            h,
            retry,
        ))));
        let (s, t, h) = run(Kind::EndpointSlice);
        tasks.push(Task::spawn(Box::pin(watches::run(
            api::<EndpointSlice>(&client, ns),
            base.clone(),
            s,
            |slice| Object::EndpointSlice(slice.into()),
            t,
            h,
            retry,
        ))));
        let (s, t, h) = run(Kind::Secret);
        tasks.push(Task::spawn(Box::pin(watches::run(
            api::<Secret>(&client, ns),
            base.fields("type=kubernetes.io/tls"),
            s,
            Object::Secret,
            t,
            h,
            retry,
        ))));
        let aggregator = Aggregator::new(client, config, tx, health.clone(), updates_tx, sync_tx);
        tasks.push(Task::spawn(Box::pin(aggregator.run(rx))));
        ClusterSource {
            _tasks: tasks,
            updates,
            sync,
            health,
        }
    }

    /// The snapshots handed on (`None` until every initial list has synced).
    pub fn updates(&self) -> watch::Receiver<Option<Update>> {
        self.updates.clone()
    }

    /// Which initial lists have completed.
    pub fn sync_state(&self) -> watch::Receiver<SyncState> {
        self.sync.clone()
    }

    /// Waits for the first snapshot, for at most `timeout`; the error says which lists did not
    /// complete and why. For one-off reads (`check`, `route`).
    pub async fn first(&self, timeout: Duration) -> Result<Arc<Snapshot>, SourceError> {
        let mut updates = self.updates.clone();
        let waited = tokio::time::timeout(timeout, updates.wait_for(Option::is_some)).await;
        if let Ok(Ok(update)) = waited {
            if let Some(update) = update.as_ref() {
                return Ok(update.snapshot.clone());
            }
        }
        let sync = self.sync.borrow().clone();
        let failing: Vec<String> = self
            .health
            .failing()
            .into_iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect();
        Err(SourceError::Cluster(format!(
            "the initial lists did not complete within {} s (waiting for {}){}{}",
            timeout.as_secs(),
            sync.waiting.join(", "),
            if failing.is_empty() { "" } else { "; " },
            failing.join("; ")
        )))
    }
}
