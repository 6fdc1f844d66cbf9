//! Faults under load: a thousand table changes while HTTP/1.1, HTTP/2 and TLS clients keep
//! sending and a WebSocket stays open; a backend killed mid-load and brought back; a backend that
//! keeps answering 503. Every loop is bounded in count and time, all traffic is on loopback.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::Running;
use proxy::health::HealthConfig;
use proxy::ProxyConfig;
use rustls::pki_types::ServerName;
use support::pki::{insecure_client_config, Pki};
use support::tunnel::{open_websocket, spawn_upgrade_echo};
use support::{
    class_options, endpoint_slices_yaml, ingress_yaml, quiet_proxy, read_response, send,
    service_yaml, start_with, start_with_options, translate_folder, write_manifest, IngressPath,
    IngressRule, TestRequest, TestResponse, NAMESPACE,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const CLASS: &str = "portcullis";
const PORT: u16 = 80;
/// The most requests one load client makes, whatever happens.
const MAX_REQUESTS: usize = 200_000;
/// The longest one load client runs, whatever happens.
const MAX_LOAD_TIME: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Backends that can be killed
// ---------------------------------------------------------------------------------------------

/// A backend that answers every request with its pod name (or a fixed status), and can be
/// killed: it stops listening and drops every open connection at once, as a crashed process
/// does.
struct Pod {
    addr: SocketAddr,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Pod {
    /// Starts answering 200 with `name` on `addr` (port 0: a fresh one).
    async fn start(name: &str, addr: SocketAddr) -> Pod {
        Pod::start_answering(name, StatusCode::OK, addr).await
    }

    /// Starts answering `status` with `name` on `addr`.
    async fn start_answering(name: &str, status: StatusCode, addr: SocketAddr) -> Pod {
        let health = Arc::new(AtomicU16::new(200));
        Pod::start_checked(name, status, addr, health, Arc::default()).await
    }

    /// Like [`Pod::start_answering`], but `/healthz` answers the status in `health` and is
    /// counted in `checks` when it comes from Portcullis's health checker.
    async fn start_checked(
        name: &str,
        status: StatusCode,
        addr: SocketAddr,
        health: Arc<AtomicU16>,
        checks: Arc<AtomicUsize>,
    ) -> Pod {
        let listener = TcpListener::bind(addr).await.expect("bind a backend port");
        let addr = listener.local_addr().expect("backend address");
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let body = Bytes::from(name.to_string());
        let connections = tasks.clone();
        let accept = async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                let (health, checks) = (health.clone(), checks.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let mut response = Response::new(Full::new(body.clone()));
                    *response.status_mut() = status;
                    if req.uri().path() == "/healthz" {
                        let checker = req
                            .headers()
                            .get(header::USER_AGENT)
                            .is_some_and(|v| v == "portcullis-health-check");
                        if checker {
                            checks.fetch_add(1, Ordering::SeqCst);
                        }
                        let code = health.load(Ordering::SeqCst);
                        *response.status_mut() = StatusCode::from_u16(code).unwrap_or(status);
                    }
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let serve = async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                };
                connections
                    .lock()
                    .expect("the backend's tasks")
                    .spawn(serve);
            }
        };
        tasks.lock().expect("the backend's tasks").spawn(accept);
        Pod { addr, tasks }
    }

    /// Stops listening and drops every connection.
    fn kill(&self) {
        self.tasks.lock().expect("the backend's tasks").abort_all();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// A Service on [`PORT`] with every one of `endpoints` ready.
fn service(dir: &Path, name: &str, endpoints: &[SocketAddr]) {
    let ready: Vec<(SocketAddr, bool)> = endpoints.iter().map(|a| (*a, true)).collect();
    let mut text = service_yaml(NAMESPACE, name, PORT, None);
    text.push_str("---\n");
    text.push_str(&endpoint_slices_yaml(NAMESPACE, name, None, &ready));
    write_manifest(dir, &format!("service-{name}.yaml"), &text);
}

/// An Ingress routing each of `hosts` (every path) to `service`, plus `extra` paths.
fn ingress(dir: &Path, hosts: &[&str], service: &str, extra: &[IngressPath], tls: &str) {
    let rules: Vec<IngressRule> = hosts
        .iter()
        .map(|host| {
            let mut paths = vec![IngressPath::new("/", "Prefix", service, PORT)];
            paths.extend_from_slice(extra);
            IngressRule::new(Some(host), paths)
        })
        .collect();
    let mut text = ingress_yaml(NAMESPACE, "faults", CLASS, None, &rules);
    text.push_str(tls);
    write_manifest(dir, "ingress.yaml", &text);
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// How a load client talks to Portcullis.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    /// HTTP/1.1 keep-alive over TCP.
    Http1,
    /// HTTP/2 with prior knowledge over TCP.
    Http2,
    /// HTTP/1.1 keep-alive over TLS.
    Https,
}

/// One open client connection.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn open(protocol: Protocol, addr: SocketAddr, host: &str) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match protocol {
            Protocol::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H1(sender))
            }
            Protocol::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H2(sender))
            }
            Protocol::Https => {
                let config = Arc::new(insecure_client_config(&[b"http/1.1"]));
                let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake over TLS: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H1(sender))
            }
        }
    }

    async fn get(&mut self, host: &str) -> Result<TestResponse, String> {
        let response = match self {
            Conn::H1(sender) => {
                let request = Request::builder()
                    .uri("/")
                    .header(header::HOST, host)
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                sender
                    .ready()
                    .await
                    .map_err(|e| format!("connection: {e}"))?;
                sender.send_request(request).await
            }
            Conn::H2(sender) => {
                let request = Request::builder()
                    .uri(format!("http://{host}/"))
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                sender
                    .ready()
                    .await
                    .map_err(|e| format!("connection: {e}"))?;
                sender.send_request(request).await
            }
        };
        read_response(response.map_err(|e| format!("request: {e}"))?).await
    }
}

/// What one load client saw: responses by pod, and everything that went wrong.
#[derive(Debug, Default)]
struct Tally {
    served: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn ok(&self) -> usize {
        self.served.values().sum()
    }
}

/// A running load client and how to stop it.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    clients: Vec<(Protocol, tokio::task::JoinHandle<Tally>)>,
}

impl Load {
    fn new() -> Self {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicUsize::new(0)),
            clients: Vec::new(),
        }
    }

    /// Starts a client sending GETs for `host` over one connection at a time, reconnecting
    /// only after a failure.
    fn spawn(&mut self, protocol: Protocol, addr: SocketAddr, host: &'static str) {
        let (stop, done) = (self.stop.clone(), self.done.clone());
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            let deadline = tokio::time::Instant::now() + MAX_LOAD_TIME;
            let mut conn = None;
            for _ in 0..MAX_REQUESTS {
                if stop.load(Ordering::SeqCst) || tokio::time::Instant::now() > deadline {
                    break;
                }
                if conn.is_none() {
                    match Conn::open(protocol, addr, host).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tally.failures.push(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                match tokio::time::timeout(Duration::from_secs(10), c.get(host)).await {
                    Ok(Ok(r)) if r.status == StatusCode::OK => {
                        *tally.served.entry(r.text()).or_default() += 1;
                    }
                    Ok(Ok(r)) => {
                        let text = r.text();
                        tally.failures.push(format!("{} {text:?}", r.status));
                    }
                    Ok(Err(e)) => {
                        tally.failures.push(e);
                        conn = None;
                    }
                    Err(_) => {
                        tally.failures.push("no response within 10 s".into());
                        conn = None;
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            tally
        });
        self.clients.push((protocol, task));
    }

    /// Waits until the clients together have made `more` further requests.
    async fn progress(&self, more: usize) {
        let target = self.done.load(Ordering::SeqCst) + more;
        for _ in 0..3000 {
            if self.done.load(Ordering::SeqCst) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the load clients stopped making progress");
    }

    /// Stops the clients and returns what each saw.
    async fn finish(self) -> Vec<(Protocol, Tally)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut tallies = Vec::new();
        for (protocol, task) in self.clients {
            tallies.push((protocol, task.await.expect("a load client")));
        }
        tallies
    }
}

/// Every failure of every client, labelled.
fn failures(tallies: &[(Protocol, Tally)]) -> Vec<String> {
    tallies
        .iter()
        .flat_map(|(p, t)| t.failures.iter().map(move |f| format!("{p:?}: {f}")))
        .collect()
}

/// Responses by pod over all clients.
fn served(tallies: &[(Protocol, Tally)]) -> BTreeMap<String, usize> {
    let mut all = BTreeMap::new();
    for (_, tally) in tallies {
        for (pod, n) in &tally.served {
            *all.entry(pod.clone()).or_default() += n;
        }
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_table_changes_under_load_fail_no_request() {
    const PLAIN: &str = "churn.example";
    const SECURE: &str = "secure.example";
    const CHANGES: usize = 1000;
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = [
        Pod::start("a-0", loopback).await,
        Pod::start("a-1", loopback).await,
    ];
    let b = [
        Pod::start("b-0", loopback).await,
        Pod::start("b-1", loopback).await,
    ];
    let ws = spawn_upgrade_echo().await;
    let pki = Pki::new("Portcullis Test CA");
    let tls = format!("  tls:\n    - secretName: churn\n      hosts: [\"{SECURE}\"]\n");
    // Two folders that differ only in where both hosts send `/`.
    let folders = [
        ("svc-a", tempfile::tempdir().unwrap()),
        ("svc-b", tempfile::tempdir().unwrap()),
    ];
    for (target, dir) in &folders {
        let dir = dir.path();
        service(dir, "svc-a", &[a[0].addr, a[1].addr]);
        service(dir, "svc-b", &[b[0].addr, b[1].addr]);
        service(dir, "ws", &[ws.addr]);
        write_manifest(
            dir,
            "secret.yaml",
            &pki.leaf(&[SECURE], SECURE).secret_yaml("churn"),
        );
        let chat = [IngressPath::new("/chat", "Prefix", "ws", PORT)];
        ingress(dir, &[PLAIN, SECURE], target, &chat, &tls);
    }
    let snapshots = folders.each_ref().map(|(_, dir)| {
        let (load, translation) = translate_folder(dir.path(), CLASS);
        assert!(!translation.has_errors(), "{:#?}", translation.diagnostics);
        load.snapshot
    });
    let running = start_with_options(
        folders[0].1.path(),
        class_options(CLASS),
        quiet_proxy(),
        true,
    )
    .await;
    let https = running.https_addr.expect("an HTTPS listener");

    let mut tunnel = open_websocket(running.http_addr, PLAIN, "/chat")
        .await
        .expect("a WebSocket through Portcullis");
    let mut load = Load::new();
    load.spawn(Protocol::Http1, running.http_addr, PLAIN);
    load.spawn(Protocol::Http1, running.http_addr, PLAIN);
    load.spawn(Protocol::Http2, running.http_addr, PLAIN);
    load.spawn(Protocol::Https, https, SECURE);
    load.progress(100).await;

    let mut translator = translate::Translator::new();
    let options = class_options(CLASS);
    let before = load.done.load(Ordering::SeqCst);
    for change in 0..CHANGES {
        let translation = translator.translate(&snapshots[(change + 1) % 2], &options);
        running.published.publish(translation.table);
        if change % 100 == 0 {
            let message = format!("message {change}");
            let echoed = tunnel.echo(message.as_bytes()).await;
            assert_eq!(
                echoed.as_deref(),
                Ok(message.as_bytes()),
                "after {change} changes"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let during = load.done.load(Ordering::SeqCst) - before;
    load.progress(100).await;
    let tallies = load.finish().await;
    let echoed = tunnel.echo(b"still here").await;
    running.shutdown().await;

    assert_eq!(failures(&tallies), Vec::<String>::new());
    assert_eq!(
        echoed.as_deref(),
        Ok(&b"still here"[..]),
        "the WebSocket outlived the changes"
    );
    assert!(
        during >= 100,
        "only {during} requests while the tables changed"
    );
    for (protocol, tally) in &tallies {
        let pods: Vec<&String> = tally.served.keys().collect();
        assert!(
            tally.ok() > 0
                && pods.iter().any(|p| p.starts_with("a-"))
                && pods.iter().any(|p| p.starts_with("b-")),
            "{protocol:?} saw {:?}: both tables must have served it",
            tally.served
        );
    }
}

/// Portcullis with an admin server and ejections short enough to end within the test.
async fn start_ejecting(dir: &Path, ejection: Duration) -> Running {
    let proxy = ProxyConfig {
        health: HealthConfig {
            consecutive_failures: 3,
            base_ejection: ejection,
            max_ejection: ejection,
        },
        ..quiet_proxy()
    };
    start_with(dir, CLASS, proxy, true).await
}

/// One sample of a metric family with the given labels, from `/metrics`.
async fn metric(running: &Running, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let admin = running.admin_addr.expect("an admin listener");
    let text = send(admin, &TestRequest::get("admin", "/metrics"))
        .await
        .expect("/metrics")
        .text();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let labelled = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (labelled && (rest.is_empty() || rest.starts_with('{'))).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_load_fails_no_get_and_is_readmitted_when_back() {
    const HOST: &str = "kill.example";
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let steady = Pod::start("steady", loopback).await;
    let doomed = Pod::start("doomed", loopback).await;
    let dir = tempfile::tempdir().unwrap();
    service(dir.path(), "svc", &[steady.addr, doomed.addr]);
    ingress(dir.path(), &[HOST], "svc", &[], "");
    let running = start_ejecting(dir.path(), Duration::from_millis(300)).await;

    let mut load = Load::new();
    load.spawn(Protocol::Http1, running.http_addr, HOST);
    load.spawn(Protocol::Http1, running.http_addr, HOST);
    load.spawn(Protocol::Http2, running.http_addr, HOST);
    load.progress(200).await;
    doomed.kill();
    let dead_addr = doomed.addr;
    drop(doomed);
    load.progress(300).await;
    let ejections = metric(&running, "portcullis_endpoint_ejections_total", &[]).await;
    // The same address comes back, as a restarted pod with a stable address does.
    let reborn = Pod::start("reborn", dead_addr).await;
    let mut readmitted = false;
    for _ in 0..100 {
        load.progress(20).await;
        if metric(
            &running,
            "portcullis_endpoint_healthy",
            &[("endpoint", &dead_addr.to_string())],
        )
        .await
        .is_some_and(|v| v == 1.0)
        {
            readmitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.progress(200).await;
    let tallies = load.finish().await;
    running.shutdown().await;
    drop(reborn);

    assert_eq!(failures(&tallies), Vec::<String>::new(), "no GET fails");
    assert!(
        ejections.is_some_and(|n| n >= 1.0),
        "the dead endpoint was ejected: {ejections:?}"
    );
    assert!(readmitted, "the endpoint that came back is healthy again");
    let served = served(&tallies);
    assert!(
        served.get("doomed").is_some_and(|&n| n > 0)
            && served.get("reborn").is_some_and(|&n| n > 0),
        "traffic reached the endpoint before it died and after it came back: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_keeps_answering_503_is_ejected() {
    const HOST: &str = "sick.example";
    const REQUESTS: usize = 40;
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let healthy = Pod::start("healthy", loopback).await;
    let sick = Pod::start_answering("sick", StatusCode::SERVICE_UNAVAILABLE, loopback).await;
    let dir = tempfile::tempdir().unwrap();
    service(dir.path(), "svc", &[healthy.addr, sick.addr]);
    ingress(dir.path(), &[HOST], "svc", &[], "");
    // An ejection that outlasts the test, so what follows it cannot depend on timing.
    let running = start_ejecting(dir.path(), Duration::from_secs(600)).await;

    let mut statuses = Vec::new();
    for _ in 0..REQUESTS {
        let response = send(running.http_addr, &TestRequest::get(HOST, "/"))
            .await
            .expect("a response");
        statuses.push((response.status.as_u16(), response.text()));
    }
    let healthy_metric = metric(
        &running,
        "portcullis_endpoint_healthy",
        &[("endpoint", &sick.addr.to_string())],
    )
    .await;
    running.shutdown().await;

    let sick_answers = statuses.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(
        sick_answers, 3,
        "three 503s eject the endpoint: {statuses:?}"
    );
    assert!(
        statuses[statuses.len() - 20..]
            .iter()
            .all(|(s, pod)| *s == 200 && pod == "healthy"),
        "after the ejection only the healthy endpoint answers: {statuses:?}"
    );
    assert_eq!(
        healthy_metric,
        Some(0.0),
        "the sick endpoint is reported unhealthy"
    );
}

/// Sends sequential GETs for `host` until `until` holds for the pod that answered `streak`
/// times in a row; every answer must be a 200. Returns whether that happened within `limit`
/// requests.
async fn serve_until(
    addr: SocketAddr,
    host: &str,
    streak: usize,
    limit: usize,
    until: impl Fn(&str) -> bool,
) -> bool {
    let mut run = 0;
    for _ in 0..limit {
        let response = send(addr, &TestRequest::get(host, "/"))
            .await
            .expect("a response");
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        run = if until(&response.text()) { run + 1 } else { 0 };
        if run >= streak {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_health_check_gets_no_traffic_until_it_passes_again() {
    const HOST: &str = "checked.example";
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let checks = Arc::new(AtomicUsize::new(0));
    let flaky_health = Arc::new(AtomicU16::new(200));
    let steady = Pod::start("steady", loopback).await;
    let flaky = Pod::start_checked(
        "flaky",
        StatusCode::OK,
        loopback,
        flaky_health.clone(),
        checks.clone(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    service(dir.path(), "svc", &[steady.addr, flaky.addr]);
    ingress(dir.path(), &[HOST], "svc", &[], "");
    let path = dir.path().join("ingress.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    portcullis.io/health-check-path: /healthz\n    \
         portcullis.io/health-check-interval: 100ms\n    \
         portcullis.io/health-check-unhealthy-threshold: \"2\"\n    \
         portcullis.io/health-check-healthy-threshold: \"2\"\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let running = start_with(dir.path(), CLASS, quiet_proxy(), true).await;
    let flaky_addr = flaky.addr.to_string();

    assert!(
        serve_until(running.http_addr, HOST, 1, 200, |pod| pod == "flaky").await,
        "a healthy endpoint gets traffic"
    );
    for _ in 0..200 {
        if checks.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        checks.load(Ordering::SeqCst) >= 2,
        "the checker checks the endpoint"
    );

    flaky_health.store(503, Ordering::SeqCst);
    assert!(
        serve_until(running.http_addr, HOST, 20, 500, |pod| pod == "steady").await,
        "after failing its checks the endpoint gets no traffic"
    );
    let down = metric(
        &running,
        "portcullis_endpoint_healthy",
        &[("endpoint", &flaky_addr)],
    )
    .await;

    flaky_health.store(200, Ordering::SeqCst);
    let back = serve_until(running.http_addr, HOST, 1, 500, |pod| pod == "flaky").await;
    running.shutdown().await;
    assert_eq!(
        down,
        Some(0.0),
        "an endpoint down by its checks is reported unhealthy"
    );
    assert!(back, "the endpoint gets traffic again once its checks pass");
}
