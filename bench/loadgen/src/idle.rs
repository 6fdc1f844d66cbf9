//! `idle`: opens many connections, makes one request on each, then keeps them all open and
//! silent for a while, so that the server's memory per idle (but used) connection can be read
//! from outside. Kinds: `h1` (HTTP/1.1 keep-alive), `h2c` (HTTP/2 with prior knowledge, no
//! pings) and `tls` (TLS with ALPN http/1.1, then HTTP/1.1 keep-alive).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;

use crate::{client_config, BoxError, Opts};

/// Connections being opened at the same time.
const OPEN_CONCURRENCY: usize = 64;
/// Longest time one connection may take to connect, handshake and get its response.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time opening all of them may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_CONNECTIONS: usize = 100_000;
const MAX_HOLD_S: f64 = 3600.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    H1,
    H2c,
    Tls,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::H1 => "h1",
            Kind::H2c => "h2c",
            Kind::Tls => "tls",
        }
    }
}

pub(crate) struct IdleConfig {
    addr: SocketAddr,
    kind: Kind,
    connections: usize,
    hold: Duration,
    sni: String,
    host: String,
    path: String,
    ready_file: Option<String>,
}

impl IdleConfig {
    pub(crate) fn from_opts(o: &Opts) -> Result<IdleConfig, BoxError> {
        let kind = match o.get::<String>("kind", None)?.as_str() {
            "h1" => Kind::H1,
            "h2c" => Kind::H2c,
            "tls" => Kind::Tls,
            k => return Err(format!("--kind {k:?}: expected h1, h2c or tls").into()),
        };
        let sni: String = o.get("sni", Some("tls.bench.local".to_string()))?;
        let default_host = if kind == Kind::Tls {
            sni.clone()
        } else {
            "bench.local".to_string()
        };
        let hold: f64 = o.get("hold", None)?;
        let cfg = IdleConfig {
            addr: o.get("addr", None)?,
            kind,
            connections: o.get("connections", None)?,
            hold: Duration::from_secs_f64(hold.clamp(0.0, MAX_HOLD_S)),
            host: o.get("host", Some(default_host))?,
            sni,
            path: o.get("path", Some("/".to_string()))?,
            ready_file: o.0.get("ready-file").cloned(),
        };
        if !cfg.addr.ip().is_loopback() {
            return Err("--addr must be a loopback address".into());
        }
        if cfg.connections == 0 || cfg.connections > MAX_CONNECTIONS || !hold.is_finite() {
            return Err(
                format!("--connections must be 1..{MAX_CONNECTIONS} and --hold finite").into(),
            );
        }
        Ok(cfg)
    }
}

/// What keeps one answered connection open: its request handle and the task driving it.
struct Held {
    _sender: Sender,
    driver: JoinHandle<()>,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

fn request(cfg: &IdleConfig) -> Result<Request<Empty<Bytes>>, BoxError> {
    let mut req = Request::get(cfg.path.as_str());
    if cfg.kind == Kind::H2c {
        req = req.uri(format!("http://{}{}", cfg.host, cfg.path));
    } else {
        req = req.header(HOST, cfg.host.as_str());
    }
    Ok(req.body(Empty::new())?)
}

async fn open_one(cfg: &IdleConfig, tls: Option<&TlsConnector>) -> Result<Held, BoxError> {
    let tcp = TcpStream::connect(cfg.addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, driver) = match (cfg.kind, tls) {
        (Kind::Tls, Some(connector)) => {
            let name = ServerName::try_from(cfg.sni.clone())?;
            let stream = connector.connect(name, tcp).await?;
            let (s, conn) = http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H1(s), driver)
        }
        (Kind::H2c, _) => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            // No pings: the connection must stay silent once answered.
            builder.keep_alive_interval(None);
            let (s, conn) = builder.handshake(TokioIo::new(tcp)).await?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H2(s), driver)
        }
        _ => {
            let (s, conn) = http1::handshake(TokioIo::new(tcp)).await?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H1(s), driver)
        }
    };
    let req = request(cfg)?;
    let resp = match &mut sender {
        Sender::H1(s) => s.send_request(req).await,
        Sender::H2(s) => s.send_request(req).await,
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e.into());
        }
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await;
    if body.is_err() || !(200..400).contains(&status) {
        driver.abort();
        return Err(format!("status {status}, body {:?}", body.err()).into());
    }
    Ok(Held {
        _sender: sender,
        driver,
    })
}

pub(crate) async fn idle_mode(cfg: IdleConfig) -> Result<String, BoxError> {
    let cfg = Arc::new(cfg);
    let tls = if cfg.kind == Kind::Tls {
        Some(Arc::new(TlsConnector::from(client_config(false)?)))
    } else {
        None
    };
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    for _ in 0..cfg.connections {
        let (cfg, tls, permits) = (cfg.clone(), tls.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            match tokio::time::timeout(CONNECT_TIMEOUT, open_one(&cfg, tls.as_deref())).await {
                Ok(r) => r,
                Err(_) => Err("timed out opening the connection".into()),
            }
        });
    }
    let mut held = Vec::with_capacity(cfg.connections);
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let collect = async {
        while let Some(joined) = set.join_next().await {
            match joined.map_err(BoxError::from).and_then(|r| r) {
                Ok(h) => held.push(h),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    };
    if tokio::time::timeout(OPEN_TIMEOUT, collect).await.is_err() {
        let left = set.len() as u64;
        set.abort_all();
        errors += left;
        first_error.get_or_insert_with(|| "timed out opening the connections".to_string());
    }
    if let Some(e) = &first_error {
        eprintln!("loadgen: {errors} connections failed; the first: {e}");
    }
    let summary = format!(
        "mode=idle kind={} connections={} opened={} errors={}",
        cfg.kind.name(),
        cfg.connections,
        held.len(),
        errors
    );
    if let Some(path) = &cfg.ready_file {
        // Written whole under another name first, so a reader never sees half of it.
        let partial = format!("{path}.partial");
        std::fs::write(&partial, format!("{summary}\n"))?;
        std::fs::rename(&partial, path)?;
    }
    tokio::time::sleep(cfg.hold).await;
    for h in held {
        h.driver.abort();
    }
    Ok(summary)
}
