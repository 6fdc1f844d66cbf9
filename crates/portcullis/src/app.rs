//! Wiring: folder source → translate → publish → proxy and admin listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use model::{Diagnostic, Severity};
use proxy::{Listener, Proxy, ProxyConfig};
use source::{FolderSource, Load};
use table::Published;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};

/// Everything `start` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Manifest files and folders to serve.
    pub manifests: Vec<PathBuf>,
    /// Where the proxy listens for HTTP.
    pub http_addr: SocketAddr,
    /// Where the proxy listens for HTTPS (`None`: no TLS listener).
    pub https_addr: Option<SocketAddr>,
    /// Where the admin server listens (`None`: no admin server).
    pub admin_addr: Option<SocketAddr>,
    /// Class selection.
    pub translate: translate::Options,
    /// Data-plane settings.
    pub proxy: ProxyConfig,
}

/// A running Portcullis: its bound addresses and the handles to stop it.
pub struct Running {
    /// The bound HTTP address (useful with port 0).
    pub http_addr: SocketAddr,
    /// The bound HTTPS address.
    pub https_addr: Option<SocketAddr>,
    /// The bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// The published table.
    pub published: Arc<Published>,
    /// Changes each time a new table is published (the value is the generation).
    pub generations: watch::Receiver<u64>,
    shutdown: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    pub(crate) background: Vec<JoinHandle<()>>,
    /// Runs once shutdown begins, while in-flight requests finish (cluster mode: status and
    /// the leader's Lease).
    pub(crate) on_shutdown: Option<ShutdownHook>,
    admin: Arc<AdminState>,
    shutdown_delay: Duration,
}

/// Work to do when shutdown begins: makes the future to wait for.
pub(crate) type ShutdownHook = Box<
    dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

impl Running {
    /// Drains and stops: `/readyz` answers 503 at once, the listeners keep accepting for the
    /// shutdown delay, then close; in-flight requests get the grace period to finish.
    pub async fn shutdown(self) {
        self.shutdown_after(std::future::pending()).await;
    }

    /// As [`Running::shutdown`], with the delay cut short when `hurry` completes.
    pub async fn shutdown_after(self, hurry: impl std::future::Future<Output = ()>) {
        self.admin.set_draining();
        if !self.shutdown_delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.shutdown_delay) => {}
                () = hurry => {}
            }
        }
        let _ = self.shutdown.send(true);
        let workers = self.workers;
        let drained = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        });
        if let Some(on_shutdown) = self.on_shutdown {
            on_shutdown().await;
        }
        let _ = drained.await;
        for task in self.background {
            task.abort();
        }
    }

    /// A future that completes when shutdown is requested on this instance.
    pub fn shutdown_requested(&self) -> impl std::future::Future<Output = ()> + 'static {
        wait_for(self.shutdown.subscribe())
    }
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Logs diagnostics at a level matching their severity.
pub fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        match d.severity {
            Severity::Error => tracing::error!("{d}"),
            Severity::Warning => tracing::warn!("{d}"),
            Severity::Info => tracing::debug!("{d}"),
        }
    }
}

/// Translation options with the current time filled in, for certificate expiry checks
/// (`translate` itself reads no clock).
pub fn with_clock(options: &translate::Options) -> translate::Options {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    translate::Options {
        now: Some(now),
        ..options.clone()
    }
}

/// Translates a load and publishes the table; returns all diagnostics (source and translation).
/// `last` is the revision of the load translated before, if any: when the load's changes count
/// from it, translation is told what changed.
fn apply(
    load: &Load,
    last: Option<u64>,
    options: &translate::Options,
    translator: &mut translate::Translator,
    published: &Published,
) -> (u64, Vec<Diagnostic>, Duration) {
    let changed = (Some(load.changes.since) == last).then(|| load.changes.objects.as_slice());
    let (generation, diagnostics, _, took) = publish(
        &load.snapshot,
        &load.diagnostics,
        changed,
        options,
        translator,
        published,
    );
    (generation, diagnostics, took)
}

/// What [`publish`] returns: the generation, all diagnostics (`source`'s first), the Ingresses
/// served and how long translating took.
pub(crate) type PublishOutcome = (u64, Vec<Diagnostic>, Arc<Vec<model::ObjectKey>>, Duration);

/// Translates a snapshot (told what `changed` since the one translated before, when that is
/// known) and publishes the table.
pub(crate) fn publish(
    snapshot: &model::Snapshot,
    source: &[Diagnostic],
    changed: Option<&[(model::Kind, model::ObjectKey)]>,
    options: &translate::Options,
    translator: &mut translate::Translator,
    published: &Published,
) -> PublishOutcome {
    let began = std::time::Instant::now();
    let translation = translator.translate_changed(snapshot, &with_clock(options), changed);
    let took = began.elapsed();
    let mut diagnostics = source.to_vec();
    diagnostics.extend(translation.diagnostics);
    let routes = translation.table.route_count();
    let generation = published.publish(translation.table);
    tracing::info!(
        generation,
        routes,
        ingresses = translation.ingresses.len(),
        objects = snapshot.len(),
        "published routing table"
    );
    (generation, diagnostics, translation.ingresses, took)
}

/// The admin state of a process serving `settings`: its metrics over `published` and a fresh
/// data-plane state shared by the workers.
pub(crate) fn admin_state(settings: &Settings, published: Arc<Published>) -> Arc<AdminState> {
    Arc::new(AdminState::new(Arc::new(crate::metrics::Metrics {
        shared: Arc::new(proxy::Shared::new(&settings.proxy)),
        published,
        control: crate::metrics::ControlStats::default(),
        controller: crate::metrics::Controller::from_env(&settings.translate.controller_class),
    })))
}

/// Reads the manifests, publishes the first table, binds the listeners and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let source = FolderSource::new(settings.manifests.clone())?;
    let published = Arc::new(Published::new());
    // The first read and its translation run on one thread: what the read frees (parser
    // values, the source's first maps) is memory the translation's allocations can take up, as
    // they could not from another thread's allocator arena.
    let first = {
        let published = published.clone();
        let options = settings.translate.clone();
        tokio::task::spawn_blocking(move || {
            let mut source = source;
            let load = source.load();
            let mut translator = translate::Translator::new();
            let applied = apply(&load, None, &options, &mut translator, &published);
            (source, load, translator, applied)
        })
    };
    let (source, load, mut translator, (generation, diagnostics, took)) = first.await?;
    log_diagnostics(&diagnostics);
    let admin_state = admin_state(&settings, published.clone());
    admin_state.set_diagnostics(diagnostics, took);
    let (gen_tx, generations) = watch::channel(generation);
    let mut running = launch(
        &settings,
        published.clone(),
        admin_state.clone(),
        generations,
    )
    .await?;

    let options = settings.translate.clone();
    let watch_published = published;
    let watch_state = admin_state;
    let mut last = Some(load.revision);
    running.background.push(tokio::spawn(async move {
        let result = source::watch(source, load, move |load| {
            let (generation, diagnostics, took) =
                apply(load, last, &options, &mut translator, &watch_published);
            last = Some(load.revision);
            log_diagnostics(&diagnostics);
            watch_state.set_diagnostics(diagnostics, took);
            let _ = gen_tx.send(generation);
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "manifest watcher stopped; the last table stays in service");
        }
    }));
    Ok(running)
}

/// Binds the proxy and admin listeners and starts the data-plane workers over `published`. The
/// workers accept nothing until `generations` shows a first published table (at once in folder
/// mode; after the initial lists have synced in cluster mode).
pub(crate) async fn launch(
    settings: &Settings,
    published: Arc<Published>,
    admin_state: Arc<AdminState>,
    generations: watch::Receiver<u64>,
) -> anyhow::Result<Running> {
    let workers = settings.proxy.workers.max(1);
    let http = bind_shared(settings.http_addr, workers)
        .with_context(|| format!("cannot listen on --http-addr {}", settings.http_addr))?;
    let http_addr = http[0].local_addr()?;
    let mut background = Vec::new();
    let admin_addr = match settings.admin_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --admin-addr {addr}"))?;
            let bound = listener.local_addr()?;
            background.push(tokio::spawn(admin::serve(listener, admin_state.clone())));
            Some(bound)
        }
        None => None,
    };

    // Active health checks, for the routes that ask for them.
    background.push(tokio::spawn(proxy::probe::run(
        published.clone(),
        admin_state.metrics.shared.health.clone(),
    )));

    let https = match settings.https_addr {
        Some(addr) => {
            let sockets = bind_shared(addr, workers)
                .with_context(|| format!("cannot listen on --https-addr {addr}"))?;
            let resolver = Arc::new(proxy::SniResolver::new(
                published.clone(),
                proxy::generated_certificate()?,
            ));
            Some((sockets, proxy::server_config(resolver)?))
        }
        None => None,
    };
    let https_addr = match &https {
        Some((sockets, _)) => Some(sockets[0].local_addr()?),
        None => None,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (https_sockets, tls_config) = match https {
        Some((sockets, config)) => (sockets, Some(config)),
        None => (Vec::new(), None),
    };
    let mut https_sockets = https_sockets.into_iter();
    let mut threads = Vec::with_capacity(workers);
    for (index, http_socket) in http.into_iter().enumerate() {
        let tls = match (https_sockets.next(), &tls_config) {
            (Some(socket), Some(config)) => Some((socket, config.clone())),
            _ => None,
        };
        threads.push(spawn_worker(
            index,
            Worker {
                published: published.clone(),
                shared: admin_state.metrics.shared.clone(),
                config: settings.proxy.clone(),
                http: http_socket,
                https: tls,
                shutdown: shutdown_rx.clone(),
                ready: generations.clone(),
            },
        )?);
    }
    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        published,
        generations,
        shutdown,
        workers: threads,
        background,
        on_shutdown: None,
        admin: admin_state,
        shutdown_delay: settings.proxy.shutdown_delay,
    })
}

/// Binds `count` listening sockets to one address with `SO_REUSEPORT`, so each worker thread
/// accepts on its own socket and the kernel spreads connections among them. Port 0 is resolved
/// by the first bind and reused by the others.
fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?.into_std()?;
        addr = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// What one data-plane worker thread owns.
struct Worker {
    published: Arc<Published>,
    shared: Arc<proxy::Shared>,
    config: ProxyConfig,
    http: std::net::TcpListener,
    https: Option<(std::net::TcpListener, proxy::TlsConfig)>,
    shutdown: watch::Receiver<bool>,
    /// The published generation: nothing is accepted before the first table.
    ready: watch::Receiver<u64>,
}

/// Starts a data-plane worker: one thread running a single-threaded runtime with its own
/// listeners and its own upstream connection pool, so requests never cross threads.
fn spawn_worker(index: usize, worker: Worker) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a worker runtime")?;
    let thread = std::thread::Builder::new()
        .name(format!("portcullis-worker-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let Worker {
                    published,
                    shared,
                    config,
                    http,
                    https,
                    mut shutdown,
                    mut ready,
                } = worker;
                tokio::select! {
                    _ = ready.wait_for(|generation| *generation > 0) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let proxy = Arc::new(Proxy::new(published, config, &shared));
                let http = match TcpListener::from_std(http) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "worker {index} cannot use its HTTP socket");
                        return;
                    }
                };
                let mut tasks = vec![tokio::spawn(proxy::serve(
                    proxy.clone(),
                    Listener::http(http),
                    wait_for(shutdown.clone()),
                ))];
                if let Some((socket, tls)) = https {
                    match TcpListener::from_std(socket) {
                        Ok(socket) => tasks.push(tokio::spawn(proxy::serve(
                            proxy,
                            Listener::https(socket, tls),
                            wait_for(shutdown),
                        ))),
                        Err(e) => {
                            tracing::error!(error = %e, "worker {index} cannot use its HTTPS socket")
                        }
                    }
                }
                for task in tasks {
                    let _ = task.await;
                }
            })
        })
        .context("cannot start a worker thread")?;
    Ok(thread)
}
