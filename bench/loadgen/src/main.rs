//! The load generator behind `bench/run.sh` for the two things wrk and h2load do not measure:
//!
//! - `rate`: HTTP/1.1 keep-alive requests at a fixed rate (open loop), with latency corrected for
//!   coordinated omission: when a response comes back late and delays the next scheduled request on
//!   the same connection, that request's latency counts from when it *should* have been sent.
//! - `tls`: closed-loop new TLS connections, each doing one HTTP/1.1 request with
//!   `Connection: close`, with session resumption off (every handshake full) or on (tickets or
//!   session ids, as the server offers); the client reports how many handshakes actually resumed.
//!
//! Output is one line of `key=value` pairs on stdout.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "usage:
  loadgen rate --addr IP:PORT --rate REQ_PER_S --duration S [--connections N] [--host H] [--path P] [--threads N]
  loadgen tls  --addr IP:PORT --duration S [--concurrency N] [--sni NAME] [--host H] [--path P] [--resume] [--threads N]";

/// Extra time a run may take past `--duration` to finish requests in flight before it gives up.
const GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode.as_str() {
        "rate" => RateConfig::from_opts(&opts).and_then(|cfg| run(cfg.threads, rate_mode(cfg))),
        "tls" => TlsConfig::from_opts(&opts).and_then(|cfg| run(cfg.threads, tls_mode(cfg))),
        _ => Err(format!("unknown mode {mode:?}").into()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run<F>(threads: usize, fut: F) -> Result<String, BoxError>
where
    F: std::future::Future<Output = Result<String, BoxError>>,
{
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(fut)
}

/// `--key value` pairs; a `--flag` followed by another `--key` (or nothing) is `true`.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, BoxError> {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let key = args[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {:?}", args[i]))?;
            match args.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    map.insert(key.to_string(), v.clone());
                    i += 2;
                }
                _ => {
                    map.insert(key.to_string(), "true".to_string());
                    i += 1;
                }
            }
        }
        Ok(Opts(map))
    }

    fn get<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, BoxError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(key) {
            Some(v) => v.parse().map_err(|e| format!("--{key} {v:?}: {e}").into()),
            None => default.ok_or_else(|| format!("--{key} is required").into()),
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| v == "true" || v == "1")
    }
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency_fields(mut lat: Vec<u32>) -> String {
    lat.sort_unstable();
    format!(
        "p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().copied().unwrap_or(0)
    )
}

// ---------------------------------------------------------------------------------------------
// rate

struct RateConfig {
    addr: SocketAddr,
    host: String,
    path: String,
    rate: f64,
    duration: Duration,
    connections: u64,
    threads: usize,
}

impl RateConfig {
    fn from_opts(o: &Opts) -> Result<RateConfig, BoxError> {
        let cfg = RateConfig {
            addr: o.get("addr", None)?,
            host: o.get("host", Some("bench.local".to_string()))?,
            path: o.get("path", Some("/".to_string()))?,
            rate: o.get("rate", None)?,
            duration: Duration::from_secs_f64(o.get("duration", None)?),
            connections: o.get("connections", Some(50))?,
            threads: o.get("threads", Some(1))?,
        };
        if !cfg.rate.is_finite()
            || cfg.rate <= 0.0
            || cfg.connections == 0
            || cfg.duration.is_zero()
        {
            return Err("--rate, --connections and --duration must be positive".into());
        }
        Ok(cfg)
    }
}

#[derive(Default)]
struct RateResult {
    lat_us: Vec<u32>,
    ok: u64,
    non2xx: u64,
    errors: u64,
    unsent: u64,
    last_done: Option<Instant>,
}

async fn connect_h1(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on a kept-alive connection, reconnecting first if the server closed it between
/// requests (normal HTTP/1.1 behaviour, not an error). Returns the status code.
async fn keepalive_request(
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    cfg: &RateConfig,
) -> Result<u16, BoxError> {
    let mut s = match sender.take() {
        Some(s) if !s.is_closed() => s,
        _ => connect_h1(cfg.addr).await?,
    };
    s.ready().await?;
    let req = Request::get(cfg.path.as_str())
        .header(HOST, cfg.host.as_str())
        .body(Empty::new())?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    *sender = Some(s);
    Ok(status)
}

async fn rate_connection(
    cfg: Arc<RateConfig>,
    index: u64,
    total: u64,
    t0: Instant,
    deadline: Instant,
    mut sender: Option<SendRequest<Empty<Bytes>>>,
) -> RateResult {
    let interval_ns = 1e9 / cfg.rate;
    let mut out = RateResult {
        lat_us: Vec::with_capacity((total / cfg.connections + 1) as usize),
        ..Default::default()
    };
    // Scheduled send times on this connection: index, index + C, index + 2C, ...
    let mut i = index;
    let mut prev_done = t0;
    while i < total {
        let intended = t0 + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let now = Instant::now();
        if now >= deadline {
            out.unsent += (total - i).div_ceil(cfg.connections);
            break;
        }
        if intended > now {
            tokio::time::sleep_until(intended.into()).await;
        }
        let sent = Instant::now();
        // Late because the previous response on this connection was late: the server's delay,
        // so count from the scheduled time. Otherwise the only lateness is our timer's.
        let start = if prev_done > intended { intended } else { sent };
        let remaining = deadline.saturating_duration_since(sent);
        let outcome = tokio::time::timeout(remaining, keepalive_request(&mut sender, &cfg)).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok(status)) => {
                if (200..400).contains(&status) {
                    out.ok += 1;
                } else {
                    out.non2xx += 1;
                }
                out.lat_us
                    .push(u32::try_from((done - start).as_micros()).unwrap_or(u32::MAX));
                out.last_done = Some(done);
            }
            Ok(Err(_)) => {
                out.errors += 1;
                sender = None;
            }
            Err(_) => {
                out.errors += 1;
                sender = None;
            }
        }
        prev_done = done;
        i += cfg.connections;
    }
    out
}

async fn rate_mode(cfg: RateConfig) -> Result<String, BoxError> {
    let cfg = Arc::new(cfg);
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let mut senders = Vec::new();
    for _ in 0..cfg.connections {
        senders.push(connect_h1(cfg.addr).await?);
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let deadline = t0 + cfg.duration + GRACE;
    let mut tasks = Vec::new();
    for (k, sender) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(rate_connection(
            cfg.clone(),
            k as u64,
            total,
            t0,
            deadline,
            Some(sender),
        )));
    }
    let mut all = RateResult::default();
    for t in tasks {
        let r = t.await?;
        all.lat_us.extend_from_slice(&r.lat_us);
        all.ok += r.ok;
        all.non2xx += r.non2xx;
        all.errors += r.errors;
        all.unsent += r.unsent;
        all.last_done = all.last_done.max(r.last_done);
    }
    let elapsed = all
        .last_done
        .map_or(cfg.duration, |d| d.saturating_duration_since(t0))
        .as_secs_f64()
        .max(1e-9);
    let completed = all.ok + all.non2xx;
    Ok(format!(
        "mode=rate target_rps={:.0} achieved_rps={:.1} requests={} ok={} non2xx={} errors={} unsent={} elapsed_s={:.3} {}",
        cfg.rate,
        completed as f64 / elapsed,
        completed,
        all.ok,
        all.non2xx,
        all.errors,
        all.unsent,
        elapsed,
        latency_fields(all.lat_us)
    ))
}

// ---------------------------------------------------------------------------------------------
// tls

struct TlsConfig {
    addr: SocketAddr,
    sni: String,
    host: String,
    path: String,
    duration: Duration,
    concurrency: usize,
    resume: bool,
    threads: usize,
}

impl TlsConfig {
    fn from_opts(o: &Opts) -> Result<TlsConfig, BoxError> {
        let sni: String = o.get("sni", Some("tls.bench.local".to_string()))?;
        let cfg = TlsConfig {
            addr: o.get("addr", None)?,
            host: o.get("host", Some(sni.clone()))?,
            sni,
            path: o.get("path", Some("/".to_string()))?,
            duration: Duration::from_secs_f64(o.get("duration", None)?),
            concurrency: o.get("concurrency", Some(50))?,
            resume: o.flag("resume"),
            threads: o.get("threads", Some(1))?,
        };
        if cfg.concurrency == 0 || cfg.duration.is_zero() {
            return Err("--concurrency and --duration must be positive".into());
        }
        Ok(cfg)
    }
}

/// Accepts any certificate and signature: the benchmark measures the server's side of the
/// handshake, and keeping the client cheap keeps it from becoming the bottleneck on a shared CPU.
#[derive(Debug)]
struct AcceptAnything(Vec<SignatureScheme>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

fn client_config(resume: bool) -> Result<Arc<ClientConfig>, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(schemes)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if resume {
        Resumption::in_memory_sessions(16)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

#[derive(Default)]
struct TlsResult {
    lat_us: Vec<u32>,
    full: u64,
    resumed: u64,
    non2xx: u64,
    errors: u64,
}

/// Connect, handshake, one request with `Connection: close`, read to the end. Returns whether the
/// handshake resumed a session and the status code.
async fn tls_once(
    connector: &TlsConnector,
    cfg: &TlsConfig,
    name: ServerName<'static>,
) -> Result<(bool, u16), BoxError> {
    let tcp = TcpStream::connect(cfg.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(name, tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(cfg.path.as_str())
        .header(HOST, cfg.host.as_str())
        .header(CONNECTION, "close")
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    drop(sender);
    let _ = driver.await;
    Ok((resumed, status))
}

async fn tls_client(cfg: Arc<TlsConfig>, deadline: Instant) -> Result<TlsResult, BoxError> {
    // One resumption store per simulated client, as separate browsers would have.
    let connector = TlsConnector::from(client_config(cfg.resume)?);
    let name = ServerName::try_from(cfg.sni.clone())?;
    let mut out = TlsResult::default();
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        let remaining = (deadline - start) + GRACE;
        match tokio::time::timeout(remaining, tls_once(&connector, &cfg, name.clone())).await {
            Ok(Ok((resumed, status))) => {
                if resumed {
                    out.resumed += 1;
                } else {
                    out.full += 1;
                }
                if !(200..400).contains(&status) {
                    out.non2xx += 1;
                }
                out.lat_us
                    .push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Ok(Err(_)) => out.errors += 1,
            Err(_) => {
                out.errors += 1;
                break;
            }
        }
    }
    Ok(out)
}

async fn tls_mode(cfg: TlsConfig) -> Result<String, BoxError> {
    let cfg = Arc::new(cfg);
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration;
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        tasks.push(tokio::spawn(tls_client(cfg.clone(), deadline)));
    }
    let mut all = TlsResult::default();
    for t in tasks {
        let r = t.await??;
        all.lat_us.extend_from_slice(&r.lat_us);
        all.full += r.full;
        all.resumed += r.resumed;
        all.non2xx += r.non2xx;
        all.errors += r.errors;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let done = all.full + all.resumed;
    Ok(format!(
        "mode=tls resume={} handshakes_per_s={:.1} connections={} full={} resumed={} non2xx={} errors={} elapsed_s={:.3} {}",
        cfg.resume,
        done as f64 / elapsed,
        done,
        all.full,
        all.resumed,
        all.non2xx,
        all.errors,
        elapsed,
        latency_fields(all.lat_us)
    ))
}
