//! Wiring: folder source → translate → publish → proxy and admin listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    proxy_tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (bounded by the grace period), stops.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.proxy_tasks {
            let _ = task.await;
        }
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

/// Translates a load and publishes the table; returns all diagnostics (source and translation).
fn apply(
    load: &Load,
    options: &translate::Options,
    published: &Published,
) -> (u64, Vec<Diagnostic>) {
    let translation = translate::translate(&load.snapshot, options);
    let mut diagnostics = load.diagnostics.clone();
    diagnostics.extend(translation.diagnostics);
    let routes = translation.table.route_count();
    let generation = published.publish(translation.table);
    tracing::info!(
        generation,
        routes,
        ingresses = translation.ingresses.len(),
        files = load.files,
        "published routing table"
    );
    (generation, diagnostics)
}

/// Reads the manifests, publishes the first table, binds the listeners and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let mut source = FolderSource::new(settings.manifests.clone())?;
    let load = {
        let (s, load) = tokio::task::spawn_blocking(move || {
            let load = source.load();
            (source, load)
        })
        .await?;
        source = s;
        load
    };
    let published = Arc::new(Published::new());
    let (generation, diagnostics) = apply(&load, &settings.translate, &published);
    log_diagnostics(&diagnostics);
    let admin_state = Arc::new(AdminState::new(published.clone(), diagnostics));
    let (gen_tx, generations) = watch::channel(generation);

    let http = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", settings.http_addr))?;
    let http_addr = http.local_addr()?;
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

    let options = settings.translate.clone();
    let watch_published = published.clone();
    let watch_state = admin_state.clone();
    background.push(tokio::spawn(async move {
        let result = source::watch(source, load, move |load| {
            let (generation, diagnostics) = apply(load, &options, &watch_published);
            log_diagnostics(&diagnostics);
            watch_state.set_diagnostics(diagnostics);
            let _ = gen_tx.send(generation);
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "manifest watcher stopped; the last table stays in service");
        }
    }));

    let https = match settings.https_addr {
        Some(addr) => {
            let socket = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --https-addr {addr}"))?;
            let resolver = Arc::new(proxy::SniResolver::new(
                published.clone(),
                proxy::generated_certificate()?,
            ));
            Some(Listener::https(socket, proxy::server_config(resolver)?))
        }
        None => None,
    };
    let https_addr = match &https {
        Some(l) => Some(l.socket.local_addr()?),
        None => None,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let proxy = Arc::new(Proxy::new(published.clone(), settings.proxy.clone()));
    let mut proxy_tasks = vec![tokio::spawn(proxy::serve(
        proxy.clone(),
        Listener::http(http),
        wait_for(shutdown_rx.clone()),
    ))];
    if let Some(listener) = https {
        proxy_tasks.push(tokio::spawn(proxy::serve(
            proxy,
            listener,
            wait_for(shutdown_rx),
        )));
    }
    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        published,
        generations,
        shutdown,
        proxy_tasks,
        background,
    })
}
