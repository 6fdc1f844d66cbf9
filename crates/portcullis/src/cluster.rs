//! Cluster mode: the Kubernetes API source → translate → publish, with `/readyz` following the
//! initial lists, and — on the replica that leads — Ingress status and Events from the same
//! translation that was published. The data plane is the same as in folder mode; it accepts nothing until every
//! initial list has synced and the first table is published.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use model::Diagnostic;
use source::cluster::{
    Access, ClusterConfig, ClusterSource, Election, ElectionConfig, EventConfig, EventRecorder,
    Served, StatusConfig, StatusWriter, SyncState,
};
use table::Published;
use tokio::sync::watch;

use crate::admin::AdminState;
use crate::app::{self, Running, Settings};

/// What cluster mode needs beyond [`Settings`].
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// How to reach the API server.
    pub access: Access,
    /// What to watch and how.
    pub source: ClusterConfig,
    /// What to write into Ingress status.
    pub status: StatusConfig,
    /// Take our addresses out of Ingress status on shutdown (`--update-status-on-shutdown`).
    pub update_status_on_shutdown: bool,
    /// Leader election; an empty Lease namespace means the client's default namespace.
    pub election: ElectionConfig,
    /// Events from diagnostics; an empty controller or instance is filled in from the controller
    /// class and the election identity.
    pub events: EventConfig,
}

/// How long shutdown waits for the status clean-up and the Lease hand-over.
const SHUTDOWN_API_WAIT: Duration = Duration::from_secs(5);

/// Connects to the API server, starts watching, and serves once every initial list has synced.
/// `settings.manifests` is not read; the annotation prefix is `settings.translate`'s.
pub async fn start(settings: Settings, cluster: ClusterSettings) -> anyhow::Result<Running> {
    let client = source::cluster::connect(&cluster.access).await?;
    let published = Arc::new(Published::new());
    let admin_state = app::admin_state(&settings, published.clone());
    let retry = cluster.source.retry;
    // Objects are read for the annotations translation reads.
    let mut watch = cluster.source;
    watch.annotation_prefix = settings.translate.annotations_prefix.clone();
    let source = ClusterSource::start(client.clone(), watch);
    let mut election = cluster.election;
    if election.lease.namespace.is_empty() {
        election.lease.namespace = client.default_namespace().to_string();
    }
    let mut events = cluster.events;
    if events.controller.is_empty() {
        events.controller = settings.translate.controller_class.clone();
    }
    if events.instance.is_empty() {
        events.instance = election.identity.clone();
    }
    let election = Election::start(client.clone(), election);
    let leading = election.leading();
    let (served_tx, served) = watch::channel(None);
    let recorder = EventRecorder::start(client.clone(), events, served.clone(), leading.clone());
    let status = cluster.status.enabled().then(|| {
        StatusWriter::start(
            client.clone(),
            cluster.status,
            served,
            leading.clone(),
            retry,
        )
    });
    let sync = source.sync_state();
    admin_state.set_readiness(sync.borrow().to_string());
    let (gen_tx, generations) = watch::channel(0);
    let mut running = app::launch(
        &settings,
        published.clone(),
        admin_state.clone(),
        generations,
    )
    .await?;
    running
        .background
        .push(tokio::spawn(follow_readiness(sync, admin_state.clone())));
    running.background.push(tokio::spawn(translate_updates(
        source,
        settings.translate.clone(),
        published,
        admin_state,
        gen_tx,
        served_tx,
    )));
    let clear = cluster.update_status_on_shutdown;
    running.on_shutdown = Some(Box::new(move || {
        Box::pin(async move {
            drop(recorder);
            let hand_over = async {
                if let Some(status) = status {
                    status.stop(clear && *leading.borrow()).await;
                }
                election.release().await;
            };
            if tokio::time::timeout(SHUTDOWN_API_WAIT, hand_over)
                .await
                .is_err()
            {
                tracing::warn!("the Kubernetes API did not answer in time during shutdown");
            }
        })
    }));
    Ok(running)
}

/// Keeps `/readyz`'s account of the initial lists current.
async fn follow_readiness(mut sync: watch::Receiver<SyncState>, admin: Arc<AdminState>) {
    while sync.changed().await.is_ok() {
        let text = sync.borrow_and_update().to_string();
        admin.set_readiness(text);
    }
}

/// Logs the diagnostics not logged after the previous translation (endpoint changes translate
/// often; what they leave unchanged was said already).
fn log_new(diagnostics: &[Diagnostic], seen: &mut BTreeSet<String>) {
    let now: BTreeSet<String> = diagnostics.iter().map(ToString::to_string).collect();
    let fresh: Vec<Diagnostic> = diagnostics
        .iter()
        .filter(|d| !seen.contains(&d.to_string()))
        .cloned()
        .collect();
    app::log_diagnostics(&fresh);
    *seen = now;
}

/// The changes since the last snapshot translated, gathered from the updates after it.
#[derive(Default)]
struct Changed {
    /// The revision of the last update seen.
    seen: Option<u64>,
    objects: Vec<(model::Kind, model::ObjectKey)>,
    /// Whether `objects` holds every change (no update was missed).
    complete: bool,
}

impl Changed {
    fn add(&mut self, update: &source::cluster::Update) {
        if self.seen.is_some() && self.seen == Some(update.changes.since) {
            self.objects.extend(update.changes.objects.iter().cloned());
        } else {
            self.complete = false;
        }
        self.seen = Some(update.revision);
    }

    /// The changes to tell translation (`None`: not known), starting afresh.
    fn take(&mut self) -> Option<Vec<(model::Kind, model::ObjectKey)>> {
        let objects = std::mem::take(&mut self.objects);
        let complete = std::mem::replace(&mut self.complete, true);
        complete.then_some(objects)
    }
}

/// Translates every snapshot the source hands on whose routing inputs changed, and publishes it.
async fn translate_updates(
    source: ClusterSource,
    options: translate::Options,
    published: Arc<Published>,
    admin: Arc<AdminState>,
    generations: watch::Sender<u64>,
    served: watch::Sender<Option<Served>>,
) {
    let mut updates = source.updates();
    let mut translator = Some(translate::Translator::new());
    let mut translated = None;
    let mut seen = BTreeSet::new();
    let mut last: Option<Served> = None;
    let mut changed = Changed::default();
    let mut served_ingresses: Option<(Arc<Vec<model::ObjectKey>>, Arc<BTreeSet<_>>)> = None;
    while updates.changed().await.is_ok() {
        let Some(update) = updates.borrow_and_update().clone() else {
            continue;
        };
        changed.add(&update);
        if translated == Some(update.routing_revision) {
            // Only status or bookkeeping changed: same table, newer objects for the status writer.
            if let Some(last) = &mut last {
                last.snapshot = update.snapshot.clone();
                served.send_replace(Some(last.clone()));
            }
            continue;
        }
        let snapshot = update.snapshot.clone();
        let mut t = translator.take().unwrap_or_default();
        let (options_copy, published_copy) = (options.clone(), published.clone());
        let objects = changed.take();
        let result = tokio::task::spawn_blocking(move || {
            let told = objects.as_deref();
            let out = app::publish(&snapshot, &[], told, &options_copy, &mut t, &published_copy);
            (t, out)
        })
        .await;
        let Ok((t, (generation, diagnostics, ingresses, took))) = result else {
            tracing::error!("translation failed; the last table stays in service");
            continue;
        };
        translator = Some(t);
        translated = Some(update.routing_revision);
        log_new(&diagnostics, &mut seen);
        admin.set_diagnostics(diagnostics.clone(), took);
        let _ = generations.send(generation);
        // The set of Ingresses served is made again only when the list changed.
        let set = match &served_ingresses {
            Some((list, set)) if Arc::ptr_eq(list, &ingresses) => set.clone(),
            _ => Arc::new(ingresses.iter().cloned().collect::<BTreeSet<_>>()),
        };
        served_ingresses = Some((ingresses, set.clone()));
        let current = Served {
            snapshot: update.snapshot.clone(),
            ingresses: set,
            diagnostics: Arc::new(diagnostics),
        };
        served.send_replace(Some(current.clone()));
        last = Some(current);
    }
}
