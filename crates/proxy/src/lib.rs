//! The data plane: accept → HTTP/1.1 or HTTP/2 → route lookup → pick an endpoint → pooled upstream
//! connection → response.
//!
//! The proxy reads routing state only through [`table::Published`]: one atomic load per request.
//! Everything that must outlive a table swap — pooled upstream connections above all — lives here,
//! keyed by endpoint address, so publishing a new table drops nothing.
#![forbid(unsafe_code)]

mod auth;
pub mod balance;
mod canary;
mod client;
mod decide;
mod describe;
mod error;
mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2conn;
mod headers;
pub mod health;
mod log;
pub mod probe;
mod proxy_protocol;
mod quickack;
pub mod ratelimit;
mod server;
pub mod stats;
mod tls;
mod upstream;

pub use client::ForwardedHeaders;
pub use describe::describe;
pub use error::ProxyError;
pub use log::AccessLog;
pub use rustls;
pub use server::{serve, Listener};
pub use tls::{generated_certificate, server_config, SniResolver, TlsConfig, TlsError};

use std::sync::Arc;
use std::time::Duration;

use table::Published;
use upstream::Pool;

/// Timeouts and limits of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// How long to wait for a TCP connection to an endpoint.
    pub connect_timeout: Duration,
    /// How long to wait for an upstream's response headers once the request is sent.
    pub response_header_timeout: Duration,
    /// How long a client connection may sit idle before it is closed.
    pub client_idle_timeout: Duration,
    /// How long an HTTP/1.x client gets to send a whole request head, from its first byte;
    /// then it is answered 408 and the connection closes.
    pub client_header_timeout: Duration,
    /// How long relaying a request or response body may wait for the sender's next bytes or for
    /// the receiver to take them.
    pub body_idle_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub upstream_idle_timeout: Duration,
    /// How many idle connections to keep per endpoint.
    pub upstream_max_idle: usize,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// On shutdown, how long to keep accepting (while `/readyz` answers 503, so load balancers
    /// stop sending) before the listeners close.
    pub shutdown_delay: Duration,
    /// Where the access log goes.
    pub access_log: AccessLog,
    /// The port HTTPS redirects name (`None`: the default, 443, so no port in the URL).
    pub https_redirect_port: Option<u16>,
    /// How long a client gets to complete a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Largest request body in bytes for routes that set none (`proxy-body-size`); 0 = no limit.
    pub max_body_size: u64,
    /// When failures eject an endpoint.
    pub health: health::HealthConfig,
    /// Most open client connections per listener (all workers together); further ones wait in
    /// the kernel's accept queue until one closes. 0: no limit.
    pub max_connections: usize,
    /// Most concurrent streams an HTTP/2 client may open on one connection.
    pub http2_max_concurrent_streams: u32,
    /// Number of data-plane worker threads, each with its own listening sockets and upstream
    /// connection pool.
    pub workers: usize,
    /// `--use-proxy-protocol`: every connection must begin with a PROXY protocol header (v1 or
    /// v2) within this long, or it is closed; `None`: no header is read.
    pub proxy_protocol: Option<Duration>,
    /// `--use-forwarded-headers`: whose forwarded headers name the client (`None`: nobody's).
    pub forwarded_headers: Option<ForwardedHeaders>,
    /// The status of a request refused by `limit-rps` / `limit-rpm` (`--limit-req-status-code`).
    pub limit_req_status: http::StatusCode,
    /// The status of a request refused by `limit-connections` (`--limit-conn-status-code`).
    pub limit_conn_status: http::StatusCode,
    /// Client addresses each Ingress's limits track at most (see [`ratelimit`]).
    pub limit_clients: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::from_secs(75),
            client_header_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            upstream_max_idle: 256,
            shutdown_grace: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            access_log: AccessLog::Text,
            https_redirect_port: None,
            tls_handshake_timeout: Duration::from_secs(10),
            max_body_size: 1 << 20,
            health: health::HealthConfig::default(),
            max_connections: 32_768,
            http2_max_concurrent_streams: 128,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            proxy_protocol: None,
            forwarded_headers: None,
            limit_req_status: http::StatusCode::SERVICE_UNAVAILABLE,
            limit_conn_status: http::StatusCode::SERVICE_UNAVAILABLE,
            limit_clients: ratelimit::ZONE_CAPACITY,
        }
    }
}

/// State that outlives a table, one for the whole process, shared by every worker: endpoint
/// health, request counts and per-client limits.
#[derive(Debug)]
pub struct Shared {
    /// Endpoint health.
    pub health: Arc<health::Health>,
    /// Request counts.
    pub stats: Arc<stats::Stats>,
    /// Response-time averages of endpoints, for `load-balance: ewma`.
    pub latencies: Arc<balance::Latencies>,
    /// Connection slots of the cleartext and the TLS listener (`None`: no limit).
    slots: [Option<Arc<tokio::sync::Semaphore>>; 2],
    /// Verified credentials and cached answers of authentication services.
    auth: Arc<auth::State>,
    /// Per-client limit state.
    pub limiter: Arc<ratelimit::Limiter>,
}

impl Shared {
    /// Empty state for a process with `config`.
    pub fn new(config: &ProxyConfig) -> Self {
        Shared {
            health: Arc::new(health::Health::new(config.health)),
            stats: Arc::new(stats::Stats::default()),
            latencies: Arc::default(),
            slots: std::array::from_fn(|_| {
                let n = config
                    .max_connections
                    .min(tokio::sync::Semaphore::MAX_PERMITS);
                (n > 0).then(|| Arc::new(tokio::sync::Semaphore::new(n)))
            }),
            auth: Arc::default(),
            limiter: Arc::new(ratelimit::Limiter::new(config.limit_clients)),
        }
    }
}

/// One worker's proxy state: the published table, the worker's upstream connection pools and
/// statistics shard, and the process-wide endpoint health.
pub struct Proxy {
    published: Arc<Published>,
    health: Arc<health::Health>,
    latencies: Arc<balance::Latencies>,
    stats: Arc<stats::WorkerStats>,
    /// The counters of requests no route took, kept at hand.
    unrouted: Arc<stats::RouteCounters>,
    /// The limits of routes whose policy sets none, worked out once.
    limits: decide::Limits,
    pool: Arc<Pool>,
    h1_pool: Arc<h1::pool::Pool>,
    slots: [Option<Arc<tokio::sync::Semaphore>>; 2],
    auth: Arc<auth::State>,
    limiter: Arc<ratelimit::Limiter>,
    config: ProxyConfig,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .finish()
    }
}

impl Proxy {
    /// A worker's proxy that routes by whatever table is published in `published`.
    pub fn new(published: Arc<Published>, config: ProxyConfig, shared: &Shared) -> Self {
        let stats = shared.stats.worker();
        let pool = Pool::new(&config);
        let h1_pool = Arc::new(h1::pool::Pool::new(
            config.upstream_idle_timeout,
            config.upstream_max_idle,
        ));
        Proxy {
            limits: decide::Limits::defaults(&config),
            health: shared.health.clone(),
            latencies: shared.latencies.clone(),
            unrouted: stats.unrouted(),
            stats,
            published,
            pool,
            h1_pool,
            slots: shared.slots.clone(),
            auth: shared.auth.clone(),
            limiter: shared.limiter.clone(),
            config,
        }
    }

    /// The table this proxy routes by.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// The proxy's configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }
}
