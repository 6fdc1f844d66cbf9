//! The `portcullis` command line.

mod cluster_cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use portcullis::demo::{BuiltIns, DemoManifests};
use portcullis::{report, Settings};
use proxy::{AccessLog, ProxyConfig};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Kubernetes Ingress controller and edge proxy",
    long_about = "Portcullis routes HTTP traffic by the Ingress, Service and EndpointSlice objects \
                  you already write, read from a Kubernetes cluster or a folder of manifests. \
                  Configuration changes are applied in place: no reload, no restart, no dropped \
                  connection."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the Ingresses of a cluster or of manifest files and folders, following changes.
    Run(RunArgs),
    /// Parse and translate manifests, print the routing table and every diagnostic (exit 1 on errors).
    Check(CheckArgs),
    /// Explain where a request would go and why the other candidates lost (exit 2 if nowhere).
    Route(RouteArgs),
    /// Start the proxy with two built-in backends (a web page and a JSON API) routed by examples/multi.
    Demo(DemoArgs),
}

#[derive(Args, Clone)]
struct ClassArgs {
    /// Ingress class to serve (repeatable); matches spec.ingressClassName or the
    /// kubernetes.io/ingress.class annotation.
    #[arg(long = "ingress-class", value_name = "NAME", default_values_t = [DEFAULT_CLASS.to_string()])]
    ingress_class: Vec<String>,
    /// IngressClass spec.controller value that marks a class as ours.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONTROLLER)]
    controller_class: String,
    /// Also serve Ingresses that name no class.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// Secret (NAMESPACE/NAME) with the certificate for clients whose SNI no Ingress covers
    /// (default: a self-signed certificate generated at start-up).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object_key)]
    default_ssl_certificate: Option<model::ObjectKey>,
    /// Serve an ingress-nginx cluster's Ingresses as they are: class `nginx` and controller
    /// `k8s.io/ingress-nginx` (unless --ingress-class / --controller-class say otherwise).
    #[arg(long)]
    nginx_compat: bool,
    /// Prefix of the ingress-nginx annotations read.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = translate::annotations::DEFAULT_PREFIX
    )]
    annotations_prefix: String,
    /// Response headers the `custom-headers` annotation may set (comma-separated); with none
    /// listed, routes using it are answered with 503, as in ingress-nginx.
    #[arg(long, value_name = "HEADER,...", value_delimiter = ',')]
    global_allowed_response_headers: Vec<String>,
}

fn parse_object_key(s: &str) -> Result<model::ObjectKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(model::ObjectKey::new(ns, name))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

const DEFAULT_CLASS: &str = "portcullis";
const DEFAULT_CONTROLLER: &str = "portcullis.io/ingress-controller";

impl ClassArgs {
    fn options(&self) -> translate::Options {
        let mut classes = self.ingress_class.clone();
        let mut controller = self.controller_class.clone();
        if self.nginx_compat {
            if classes == [DEFAULT_CLASS] {
                classes = vec![translate::NGINX_CLASS.to_string()];
            }
            if controller == DEFAULT_CONTROLLER {
                controller = translate::NGINX_CONTROLLER.to_string();
            }
        }
        translate::Options {
            ingress_classes: classes,
            controller_class: controller,
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_certificate: self.default_ssl_certificate.clone(),
            now: None,
            annotations_prefix: self.annotations_prefix.trim_end_matches('/').to_string(),
            allowed_response_headers: self
                .global_allowed_response_headers
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Number of data-plane worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Log format for logs and the access log.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Disable the per-request access log.
    #[arg(long)]
    no_access_log: bool,
    /// Seconds to wait for an upstream TCP connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    connect_timeout: u64,
    /// Seconds to wait for an upstream's response headers.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    response_header_timeout: u64,
    /// Seconds an idle client connection is kept open.
    #[arg(long, value_name = "SECONDS", default_value_t = 75)]
    client_idle_timeout: u64,
    /// Seconds an HTTP/1.x client gets to send a whole request head, counted from its first
    /// byte; a head not complete by then is answered 408 and the connection closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_header_timeout: u64,
    /// Seconds a request or response body may stall (no bytes from the sender, or none taken by
    /// the receiver) before the exchange is given up: 408 for a stalled upload, otherwise the
    /// connections are closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    body_idle_timeout: u64,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace: u64,
    /// Seconds to keep accepting after SIGTERM, with `/readyz` answering 503, so that load
    /// balancers stop sending before the listeners close (a second signal cuts it short).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    shutdown_delay: u64,
    /// Port named in HTTP→HTTPS redirects (default 443, which is left out of the URL).
    #[arg(long, value_name = "PORT")]
    https_redirect_port: Option<u16>,
    /// Largest request body for routes whose Ingress sets no `proxy-body-size` (nginx size
    /// syntax: 1m, 512k, 0 for no limit); larger ones get 413, as in ingress-nginx.
    #[arg(long, value_name = "SIZE", default_value = "1m", value_parser = parse_size)]
    proxy_body_size: u64,
    /// Consecutive failures (refused or broken connections, timeouts, 5xx) that eject an
    /// endpoint from its backend for a while; 0 turns passive health off.
    #[arg(long, value_name = "N", default_value_t = 5)]
    eject_after: u32,
    /// Seconds the first ejection of an endpoint lasts; each further one lasts this much
    /// longer, up to 30 times as long.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    ejection_time: u64,
    /// Most open client connections per listener; further ones wait in the accept queue until
    /// one closes (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 32_768)]
    max_connections: usize,
    /// Most concurrent streams per HTTP/2 client connection.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_concurrent_streams: u32,
    /// Every connection to the HTTP and HTTPS listeners begins with a PROXY protocol header
    /// (v1 or v2) naming the client; a connection without a valid one is closed.
    #[arg(long)]
    use_proxy_protocol: bool,
    /// Seconds a connection gets to send its PROXY protocol header.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    proxy_protocol_header_timeout: u64,
    /// Take the client address from the forwarded-for header of peers in --proxy-real-ip-cidr
    /// (walked from the right past trusted addresses), and pass their X-Forwarded-Proto, -Host
    /// and -Port on instead of replacing them.
    #[arg(long)]
    use_forwarded_headers: bool,
    /// Peers whose forwarded headers are trusted (ingress-nginx's default: every IPv4 peer).
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',', default_value = "0.0.0.0/0", value_parser = parse_cidr)]
    proxy_real_ip_cidr: Vec<table::Cidr>,
    /// The header naming the client chain, with --use-forwarded-headers.
    #[arg(long, value_name = "NAME", default_value = "X-Forwarded-For", value_parser = parse_header_name)]
    forwarded_for_header: String,
    /// Status of requests refused by limit-rps / limit-rpm.
    #[arg(long, value_name = "CODE", default_value_t = 503, value_parser = clap::value_parser!(u16).range(400..=599))]
    limit_req_status_code: u16,
    /// Status of requests refused by limit-connections.
    #[arg(long, value_name = "CODE", default_value_t = 503, value_parser = clap::value_parser!(u16).range(400..=599))]
    limit_conn_status_code: u16,
}

fn parse_cidr(s: &str) -> Result<table::Cidr, String> {
    s.parse()
}

fn parse_header_name(s: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(s.trim().as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| format!("{s:?} is not a header name"))
}

fn status(code: u16) -> anyhow::Result<http::StatusCode> {
    http::StatusCode::from_u16(code).map_err(|_| anyhow::anyhow!("{code} is not a status code"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    translate::annotations::values::size(s).map_err(|e| format!("{s:?} {e}"))
}

impl ServeArgs {
    fn proxy_config(&self) -> anyhow::Result<ProxyConfig> {
        anyhow::ensure!(self.workers != Some(0), "--workers must be at least 1");
        Ok(ProxyConfig {
            connect_timeout: Duration::from_secs(self.connect_timeout),
            response_header_timeout: Duration::from_secs(self.response_header_timeout),
            client_idle_timeout: Duration::from_secs(self.client_idle_timeout),
            client_header_timeout: Duration::from_secs(self.client_header_timeout),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            shutdown_delay: Duration::from_secs(self.shutdown_delay),
            https_redirect_port: self.https_redirect_port,
            max_body_size: self.proxy_body_size,
            max_connections: self.max_connections,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            health: proxy::health::HealthConfig {
                consecutive_failures: self.eject_after,
                base_ejection: Duration::from_secs(self.ejection_time),
                max_ejection: Duration::from_secs(self.ejection_time.saturating_mul(30)),
            },
            proxy_protocol: self
                .use_proxy_protocol
                .then(|| Duration::from_secs(self.proxy_protocol_header_timeout)),
            forwarded_headers: self.use_forwarded_headers.then(|| proxy::ForwardedHeaders {
                trusted: self.proxy_real_ip_cidr.clone(),
                header: self.forwarded_for_header.clone(),
            }),
            limit_req_status: status(self.limit_req_status_code)?,
            limit_conn_status: status(self.limit_conn_status_code)?,
            workers: self
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            access_log: match (self.no_access_log, self.log_format) {
                (true, _) => AccessLog::Off,
                (false, LogFormat::Text) => AccessLog::Text,
                (false, LogFormat::Json) => AccessLog::Json,
            },
            ..ProxyConfig::default()
        })
    }
}

#[derive(Args)]
struct RunArgs {
    /// Manifest file or folder (repeatable; folders are read recursively for *.yaml, *.yml, *.json).
    /// An alternative to reading a cluster.
    #[arg(long, value_name = "PATH")]
    manifests: Vec<PathBuf>,
    #[command(flatten)]
    cluster: cluster_cli::ClusterArgs,
    /// Address for HTTP traffic.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Address for HTTPS traffic (certificates from the Ingresses' spec.tls Secrets, by SNI).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    https_addr: SocketAddr,
    /// Address of the admin server (/healthz, /readyz, /config).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10254")]
    admin_addr: SocketAddr,
    #[command(flatten)]
    class: ClassArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// Manifest files or folders (or read a cluster with --kubeconfig).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    connect: cluster_cli::ConnectArgs,
    /// Also print info diagnostics (skipped kinds, Ingresses of other classes).
    #[arg(long, short)]
    verbose: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    class: ClassArgs,
}

#[derive(Args)]
struct RouteArgs {
    /// Manifest files or folders (none with --kubeconfig), then the URL to explain
    /// (e.g. http://example.com/api/x).
    #[arg(value_name = "PATH... URL", num_args = 1.., required = true)]
    args: Vec<String>,
    #[command(flatten)]
    connect: cluster_cli::ConnectArgs,
    /// Request method (routing does not depend on it; CORS preflights and retries do).
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// A request header, `Name: value` (repeatable), e.g. an Origin for CORS.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    #[command(flatten)]
    class: ClassArgs,
}

#[derive(Args)]
struct DemoArgs {
    /// Address for HTTP traffic.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Address of the admin server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10254")]
    admin_addr: SocketAddr,
    /// Address of the built-in web client (the Pod behind client-cluster-ip-service); port 0 picks
    /// a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    client_addr: SocketAddr,
    /// Address of the built-in JSON API (the Pod behind server-cluster-ip-service); port 0 picks a
    /// free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    api_addr: SocketAddr,
    /// The manifests to route by (default: examples/multi).
    #[arg(long, value_name = "PATH")]
    manifests: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Demo(args) => demo(args),
        Command::Check(args) => check(args),
        Command::Route(args) => route(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (manifests, cluster) = match args.cluster.connect.input(args.manifests, "--manifests")? {
        cluster_cli::Input::Manifests(paths) => (paths, None),
        cluster_cli::Input::Cluster(access) => (Vec::new(), Some(args.cluster.settings(access)?)),
    };
    let settings = Settings {
        manifests,
        http_addr: args.http_addr,
        https_addr: Some(args.https_addr),
        admin_addr: Some(args.admin_addr),
        translate: args.class.options(),
        proxy: args.serve.proxy_config()?,
    };
    serve(&args.serve, settings, None, cluster)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The control-side runtime: sources, translation, the admin server and signals. The data plane
/// runs on its own worker threads (see `--workers`).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// What `portcullis demo` adds to serving: its built-in backends and the manifests they are routed by.
struct Demo {
    client_addr: SocketAddr,
    api_addr: SocketAddr,
    manifests: PathBuf,
}

fn serve(
    args: &ServeArgs,
    mut settings: Settings,
    demo: Option<Demo>,
    cluster: Option<portcullis::cluster::ClusterSettings>,
) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let runtime = runtime()?;
    let demo = runtime.block_on(async move {
        let demo = match demo {
            Some(demo) => Some(start_demo(demo).await?),
            None => None,
        };
        if let Some(demo) = &demo {
            settings.manifests = vec![demo.manifests.path().to_path_buf()];
        }
        let running = match cluster {
            Some(cluster) => portcullis::cluster::start(settings, cluster).await?,
            None => portcullis::start(settings).await?,
        };
        let url = format!("http://{}/", running.http_addr);
        if let Some(demo) = &demo {
            let built_ins = demo.built_ins;
            println!("Portcullis demo: open {url}");
            println!(
                "  /      -> multi-client (built-in web page on {})",
                built_ins.client
            );
            println!(
                "  /api   -> multi-server (built-in JSON API on {}; /api/values/all reaches it as /values/all)",
                built_ins.api
            );
            println!(
                "  routed by the manifests in {}; edit them and the change is live.",
                demo.source.display()
            );
            println!("  Ctrl-C to stop.");
        } else {
            println!("portcullis: serving {url}");
            if let Some(https) = running.https_addr {
                println!("portcullis: serving https://{https}/");
            }
        }
        if let Some(admin) = running.admin_addr {
            tracing::info!("admin server on http://{admin}/ (/healthz /readyz /config)");
        }
        termination().await;
        tracing::info!("shutting down: /readyz answers 503, then no new connections, finishing in-flight requests");
        running.shutdown_after(termination()).await;
        anyhow::Ok(demo)
    })?;
    // The watchers go with the runtime, before the demo's manifest folder is removed.
    drop(runtime);
    drop(demo);
    Ok(ExitCode::SUCCESS)
}

/// The demo's running parts; dropping it stops the backends and removes the served manifests.
struct RunningDemo {
    built_ins: BuiltIns,
    source: PathBuf,
    manifests: DemoManifests,
    backends: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        for task in &self.backends {
            task.abort();
        }
    }
}

/// Binds and starts the built-in backends, then the manifests routed to where they listen.
async fn start_demo(demo: Demo) -> anyhow::Result<RunningDemo> {
    let bind = |addr: SocketAddr, flag: &'static str, what: &'static str| async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {flag} {addr} for the demo's {what}; is something else using it?"
            )
        })?;
        let bound = listener.local_addr()?;
        anyhow::Ok((listener, bound))
    };
    let (client, client_addr) = bind(demo.client_addr, "--client-addr", "web client").await?;
    let (api, api_addr) = bind(demo.api_addr, "--api-addr", "API server").await?;
    let built_ins = BuiltIns {
        client: client_addr,
        api: api_addr,
    };
    let backends = vec![
        tokio::spawn(portcullis::demo::run_client(client)),
        tokio::spawn(portcullis::demo::run_api(api)),
    ];
    let manifests = DemoManifests::start(vec![demo.manifests.clone()], built_ins).await?;
    Ok(RunningDemo {
        built_ins,
        source: demo.manifests,
        manifests,
        backends,
    })
}

fn demo_manifests() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("examples/multi"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/multi"),
    ];
    candidates.into_iter().find(|p| p.is_dir()).context(
        "examples/multi not found; run the demo from the repository root or pass --manifests",
    )
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let manifests = match args.manifests {
        Some(p) => p,
        None => demo_manifests()?,
    };
    let settings = Settings {
        manifests: Vec::new(),
        http_addr: args.http_addr,
        https_addr: None,
        admin_addr: Some(args.admin_addr),
        translate: translate::Options::nginx_compat(),
        proxy: args.serve.proxy_config()?,
    };
    let demo = Demo {
        client_addr: args.client_addr,
        api_addr: args.api_addr,
        manifests,
    };
    serve(&args.serve, settings, Some(demo), None)
}

fn load(
    paths: &[PathBuf],
    connect: &cluster_cli::ConnectArgs,
    class: &ClassArgs,
) -> anyhow::Result<(source::Load, translate::Translation)> {
    let load = match connect.input(paths.to_vec(), "manifest paths")? {
        cluster_cli::Input::Manifests(paths) => source::FolderSource::new(paths)?.load(),
        cluster_cli::Input::Cluster(access) => source::Load {
            snapshot: cluster_cli::read_once(connect, access, &class.options().annotations_prefix)?,
            diagnostics: Vec::new(),
            files: 0,
            revision: 0,
            changes: source::Changes::default(),
        },
    };
    let translation = translate::translate(
        &load.snapshot,
        &portcullis::app::with_clock(&class.options()),
    );
    Ok((load, translation))
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (load, translation) = load(&args.paths, &args.connect, &args.class)?;
    let prefix = args.class.options().annotations_prefix;
    let uses = args
        .class
        .nginx_compat
        .then(|| report::annotation_uses(&load.snapshot, &translation.ingresses, &prefix));
    let mut diagnostics = load.diagnostics.clone();
    diagnostics.extend(translation.diagnostics.iter().cloned());
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == model::Severity::Error)
        .count();
    if args.json {
        let mut out = serde_json::json!({
            "files": load.files,
            "ingresses": translation.ingresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "routes": report::routes_json(&translation.table),
            "tls": translation.table.tls,
            "diagnostics": diagnostics,
        });
        if let Some(uses) = &uses {
            out["annotations"] = serde_json::to_value(uses)?;
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", report::table_text(&translation.table));
        println!();
        print!("{}", report::tls_text(&translation.table));
        if let Some(uses) = &uses {
            println!();
            print!("{}", report::migration_text(uses, &prefix));
        }
        let text = report::diagnostics_text(&diagnostics, args.verbose);
        if !text.is_empty() {
            println!();
            print!("{text}");
        }
        let warnings = diagnostics
            .iter()
            .filter(|d| d.severity == model::Severity::Warning)
            .count();
        print!(
            "\n{}",
            report::summary_text(
                &report::Counts {
                    files: load.files,
                    ingresses: load.snapshot.ingresses.len(),
                    ours: translation.ingresses.len(),
                    routes: translation.table.route_count(),
                    errors,
                    warnings,
                },
                &args.class.options(),
            )
        );
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn route(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let (url, paths) = args
        .args
        .split_last()
        .context("give manifest paths and then a URL")?;
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL (try http://example.com/path)"))?;
    let host = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let path = uri.path();
    let (_, translation) = load(&paths, &args.connect, &args.class)?;
    let explanation = translation.table.explain(host, path);
    print!(
        "{}",
        report::explanation_text(&translation.table, &explanation, &args.method)
    );
    let method = http::Method::from_bytes(args.method.as_bytes())
        .with_context(|| format!("{:?} is not an HTTP method", args.method))?;
    let mut headers = http::HeaderMap::new();
    for line in &args.headers {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("--header {line:?} is not NAME: VALUE"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("--header {line:?}: bad name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .with_context(|| format!("--header {line:?}: bad value"))?;
        headers.append(name, value);
    }
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    print!(
        "{}",
        proxy::describe(
            &translation.table,
            &proxy::ProxyConfig::default(),
            uri.scheme_str() == Some("https"),
            &method,
            host,
            target,
            &headers,
        )
    );
    Ok(if explanation.selected.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
