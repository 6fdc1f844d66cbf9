//! The load generator behind `bench/run.sh` for the two things wrk and h2load do not measure:
//!
//! - `rate`: HTTP/1.1 keep-alive requests at a fixed rate (open loop), with latency corrected for
//!   coordinated omission: when a response comes back late and delays the next scheduled request on
//!   the same connection, that request's latency counts from when it *should* have been sent.
//!   Kept cheap so that it is not the bottleneck on a CPU it shares with the backend: raw TCP
//!   connections with a minimal response parser (`h1`), and one task on a timerfd that releases
//!   requests at their scheduled times instead of a timer per request.
//! - `tls`: closed-loop new TLS connections, each doing one HTTP/1.1 request with
//!   `Connection: close`, with session resumption off (every handshake full) or on (tickets or
//!   session ids, as the server offers); the client reports how many handshakes actually resumed.
//!
//! - `idle`: many connections (HTTP/1.1, h2c or TLS), one request each, then held open and
//!   silent, for the server's memory per idle connection (see `idle`).
//!
//! Output is one line of `key=value` pairs on stdout.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

mod h1;
mod idle;
use h1::Client;

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "usage:
  loadgen rate --addr IP:PORT --rate REQ_PER_S --duration S [--connections N] [--host H] [--path P] [--tick-us N] [--threads N]
  loadgen tls  --addr IP:PORT --duration S [--concurrency N] [--sni NAME] [--host H] [--path P] [--resume] [--threads N]
  loadgen idle --addr IP:PORT --kind h1|h2c|tls --connections N --hold S [--sni NAME] [--host H] [--path P] [--ready-file PATH]";

/// `rate`: by default requests due within this many microseconds of each other are sent together.
const DEFAULT_TICK_US: u64 = 200;

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
        "idle" => idle::IdleConfig::from_opts(&opts).and_then(|cfg| run(1, idle::idle_mode(cfg))),
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
    tick: Duration,
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
            tick: Duration::from_micros(o.get("tick-us", Some(DEFAULT_TICK_US))?),
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
    first_error: Option<String>,
}

/// The request schedule: slot `i` is due at `t0 + i / rate` and belongs to connection
/// `i % connections`. `release_slots` publishes how many slots are due and wakes their
/// connections.
struct Schedule {
    t0: Instant,
    interval_ns: f64,
    total: u64,
    connections: u64,
    /// Shortest time between two releases: slots falling due closer together go out together.
    tick: Duration,
    released: AtomicU64,
    wake: Box<[Notify]>,
}

impl Schedule {
    fn intended(&self, slot: u64) -> Instant {
        self.t0 + Duration::from_nanos((slot as f64 * self.interval_ns) as u64)
    }
}

/// Releases the slots as they fall due, until all are. It waits on a timerfd polled by the
/// runtime: precise to microseconds, where tokio's own timer rounds up to whole milliseconds, and
/// without a timer per request or a thread to hand over from.
async fn release_slots(sched: Arc<Schedule>) -> std::io::Result<()> {
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, which keeps the descriptor open and returns the
    // same one from `as_raw_fd` until the `AsyncFd` is dropped.
    #[allow(unsafe_code)]
    let timer = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut next = 0;
    let mut last_release: Option<Instant> = None;
    while next < sched.total {
        let mut due = sched.intended(next);
        if let Some(last) = last_release {
            due = due.max(last + sched.tick);
        }
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            let value = Timespec::try_from(wait).map_err(std::io::Error::other)?;
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            timerfd_settime(
                timer.get_ref(),
                TimerfdTimerFlags::empty(),
                &Itimerspec {
                    it_interval: zero,
                    it_value: value,
                },
            )?;
            loop {
                let mut ready = timer.readable().await?;
                let mut expirations = [0u8; 8];
                match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                    Ok(result) => {
                        result?;
                        break;
                    }
                    Err(_would_block) => continue,
                }
            }
        }
        let now = Instant::now();
        last_release = Some(now);
        let mut end = next + 1;
        while end < sched.total && sched.intended(end) <= now {
            end += 1;
        }
        sched.released.store(end, Ordering::Release);
        for slot in next..end.min(next + sched.connections) {
            sched.wake[(slot % sched.connections) as usize].notify_one();
        }
        next = end;
    }
    Ok(())
}

/// What a connection is doing, kept outside its future so that the deadline can cut it short.
struct ConnState {
    out: RateResult,
    slot: u64,
    in_flight: bool,
}

/// Sends this connection's slots (`index`, `index + C`, ...) as they are released.
async fn rate_slots(sched: &Schedule, index: u64, client: &mut Client, st: &mut ConnState) {
    let wake = &sched.wake[index as usize];
    let mut prev_done = sched.t0;
    while st.slot < sched.total {
        while sched.released.load(Ordering::Acquire) <= st.slot {
            wake.notified().await;
        }
        let intended = sched.intended(st.slot);
        let sent = Instant::now();
        // Late because the previous response on this connection was late: the server's delay,
        // so count from the scheduled time. Otherwise count from the actual send.
        let start = if prev_done > intended { intended } else { sent };
        st.in_flight = true;
        let result = client.request().await;
        st.in_flight = false;
        let done = Instant::now();
        match result {
            Ok(status) => {
                if (200..400).contains(&status) {
                    st.out.ok += 1;
                } else {
                    st.out.non2xx += 1;
                }
                st.out
                    .lat_us
                    .push(u32::try_from((done - start).as_micros()).unwrap_or(u32::MAX));
                st.out.last_done = Some(done);
            }
            Err(e) => {
                st.out.errors += 1;
                if st.out.first_error.is_none() {
                    st.out.first_error = Some(e.to_string());
                }
            }
        }
        prev_done = done;
        st.slot += sched.connections;
    }
}

async fn rate_connection(
    sched: Arc<Schedule>,
    index: u64,
    mut client: Client,
    deadline: Instant,
) -> RateResult {
    let mut st = ConnState {
        out: RateResult {
            lat_us: Vec::with_capacity((sched.total / sched.connections + 1) as usize),
            ..Default::default()
        },
        slot: index,
        in_flight: false,
    };
    let run = rate_slots(&sched, index, &mut client, &mut st);
    if tokio::time::timeout_at(deadline.into(), run).await.is_err() {
        if st.in_flight {
            st.out.errors += 1;
            st.out
                .first_error
                .get_or_insert_with(|| "request still unanswered at the deadline".to_string());
            st.slot += sched.connections;
        }
        if st.slot < sched.total {
            st.out.unsent += (sched.total - st.slot).div_ceil(sched.connections);
        }
    }
    st.out
}

async fn rate_mode(cfg: RateConfig) -> Result<String, BoxError> {
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let request = h1::get_request(&cfg.host, &cfg.path);
    let mut clients = Vec::new();
    for _ in 0..cfg.connections {
        let stream = h1::connect(cfg.addr).await?;
        clients.push(Client::new(cfg.addr, request.clone(), Some(stream)));
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let deadline = t0 + cfg.duration + GRACE;
    let sched = Arc::new(Schedule {
        t0,
        interval_ns: 1e9 / cfg.rate,
        total,
        connections: cfg.connections,
        released: AtomicU64::new(0),
        tick: cfg.tick,
        wake: (0..cfg.connections).map(|_| Notify::new()).collect(),
    });
    let mut tasks = Vec::new();
    for (k, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(rate_connection(
            sched.clone(),
            k as u64,
            client,
            deadline,
        )));
    }
    let releaser = tokio::spawn(release_slots(sched.clone()));
    let mut all = RateResult::default();
    for t in tasks {
        let r = t.await?;
        all.lat_us.extend_from_slice(&r.lat_us);
        all.ok += r.ok;
        all.non2xx += r.non2xx;
        all.errors += r.errors;
        all.unsent += r.unsent;
        all.last_done = all.last_done.max(r.last_done);
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    releaser.await??;
    if let Some(e) = &all.first_error {
        eprintln!("loadgen: {} failed requests; the first: {e}", all.errors);
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
