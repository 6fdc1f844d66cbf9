//! The proxy over real sockets: each test writes its own manifest folder, runs tiny backends on
//! `127.0.0.1:0` and talks to Portcullis like a client would. Nothing waits on a clock to
//! synchronise: changes are awaited through the published generations, loops are bounded.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::Running;
use proxy::ProxyConfig;
use support::tunnel::{open_websocket, spawn_upgrade_echo};
use support::{
    change_and_wait, connect_http1, count_body, deploy, endpoint_slices_yaml, ingress_yaml,
    quiet_proxy, read_response, routed_endpoints, send, send_both, service_yaml, spawn_http1,
    spawn_simple_echo, start, start_with, write_manifest, Echo, GeneratedBody, IngressPath,
    IngressRule, ServiceSpec, TestRequest, TestResponse, NAMESPACE,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

/// The class these tests' Ingresses carry.
const CLASS: &str = "portcullis";
/// The Service port every test Service exposes.
const PORT: u16 = 80;
/// 64 MiB, for the streaming tests.
const LARGE: u64 = 64 * 1024 * 1024;
/// Upper bound for the streaming tests (a debug build on two cores).
const LARGE_TIMEOUT: Duration = Duration::from_secs(120);

fn temp_folder() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary manifest folder")
}

/// A Service on [`PORT`] and one EndpointSlice per `(address, ready)` endpoint (none: no slices).
fn service_text(service: &str, endpoints: &[(SocketAddr, bool)]) -> String {
    let mut text = service_yaml(NAMESPACE, service, PORT, None);
    if !endpoints.is_empty() {
        text.push_str("---\n");
        text.push_str(&endpoint_slices_yaml(NAMESPACE, service, None, endpoints));
    }
    text
}

fn service_file(service: &str) -> String {
    format!("service-{service}.yaml")
}

fn write_service(dir: &Path, service: &str, endpoints: &[(SocketAddr, bool)]) {
    write_manifest(
        dir,
        &service_file(service),
        &service_text(service, endpoints),
    );
}

fn ready(addrs: &[SocketAddr]) -> Vec<(SocketAddr, bool)> {
    addrs.iter().map(|a| (*a, true)).collect()
}

/// An Ingress routing `host` (every path) to `service`.
fn ingress_to(host: &str, service: &str) -> String {
    ingress_yaml(
        NAMESPACE,
        "test",
        CLASS,
        None,
        &[IngressRule::new(
            Some(host),
            vec![IngressPath::new("/", "Prefix", service, PORT)],
        )],
    )
}

async fn get(running: &Running, host: &str, target: &str) -> TestResponse {
    send(running.http_addr, &TestRequest::get(host, target))
        .await
        .unwrap_or_else(|e| panic!("GET http://{host}{target}: {e}"))
}

fn assert_local_error(response: &TestResponse, status: u16, what: &str) {
    assert_eq!(
        response.status.as_u16(),
        status,
        "{what}: body {:?}",
        response.text()
    );
    assert!(
        response.headers.contains_key(header::SERVER),
        "{what}: no Server header in {:?}",
        response.headers
    );
    let length = response
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(
        length,
        Some(response.body.len()),
        "{what}: Content-Length must give the body's length; headers {:?}",
        response.headers
    );
    assert!(
        response.headers.contains_key(header::DATE),
        "{what}: no Date header in {:?}",
        response.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path() {
    let dir = temp_folder();
    let _pods = deploy(
        dir.path(),
        NAMESPACE,
        &["web", "api", "other", "wild"].map(|s| ServiceSpec::new(s, PORT)),
    )
    .await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            "routes",
            CLASS,
            None,
            &[
                IngressRule::new(
                    Some("a.example"),
                    vec![
                        IngressPath::new("/", "Prefix", "web", PORT),
                        IngressPath::new("/api", "Prefix", "api", PORT),
                    ],
                ),
                IngressRule::new(
                    Some("b.example"),
                    vec![IngressPath::new("/", "Prefix", "other", PORT)],
                ),
                IngressRule::new(
                    Some("*.wild.example"),
                    vec![IngressPath::new("/", "Prefix", "wild", PORT)],
                ),
            ],
        ),
    );
    let running = start(dir.path(), CLASS).await;
    let cases = [
        ("a.example", "/", Some("web")),
        ("a.example", "/index.html", Some("web")),
        ("a.example", "/api", Some("api")),
        ("a.example", "/api/v1/users?id=7", Some("api")),
        ("a.example", "/apix", Some("web")),
        ("A.Example:8080", "/api/x", Some("api")),
        ("b.example", "/api", Some("other")),
        ("x.wild.example", "/", Some("wild")),
        ("x.y.wild.example", "/", None),
        ("c.example", "/", None),
    ];
    let mut failures = Vec::new();
    for (host, target, want) in cases {
        let response = get(&running, host, target).await;
        let got = response.echo().map(|e| e.service);
        let ok = match want {
            Some(service) => response.status == StatusCode::OK && got.as_deref() == Some(service),
            None => response.status == StatusCode::NOT_FOUND,
        };
        if !ok {
            failures.push(format!(
                "GET http://{host}{target}: expected {}, got {} from {}",
                want.unwrap_or("404"),
                response.status,
                response.served_by()
            ));
        }
    }
    running.shutdown().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Dot segments are resolved before matching, over both protocols: a host whose only rule is
/// Prefix `/app` never sends `/app/../admin` to the `/app` backend, and what reaches a backend
/// is the resolved path; a path whose meaning depends on decoding `%2F` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_resolved_before_matching() {
    let dir = temp_folder();
    let _pods = deploy(
        dir.path(),
        NAMESPACE,
        &["app", "admin"].map(|s| ServiceSpec::new(s, PORT)),
    )
    .await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            "paths",
            CLASS,
            None,
            &[
                IngressRule::new(
                    Some("only-app.example"),
                    vec![IngressPath::new("/app", "Prefix", "app", PORT)],
                ),
                IngressRule::new(
                    Some("both.example"),
                    vec![
                        IngressPath::new("/app", "Prefix", "app", PORT),
                        IngressPath::new("/admin", "Prefix", "admin", PORT),
                    ],
                ),
            ],
        ),
    );
    let running = start(dir.path(), CLASS).await;
    // (host, target, status, service and path the backend saw)
    type Case = (
        &'static str,
        &'static str,
        u16,
        Option<(&'static str, &'static str)>,
    );
    let cases: [Case; 9] = [
        ("only-app.example", "/app/x", 200, Some(("app", "/app/x"))),
        ("only-app.example", "/app/../admin", 404, None),
        ("only-app.example", "/app/%2e%2e/admin", 404, None),
        ("only-app.example", "/app/..%2fadmin", 400, None),
        (
            "only-app.example",
            "/app/./x/../y?q=1",
            200,
            Some(("app", "/app/y?q=1")),
        ),
        (
            "both.example",
            "/app/../admin/x",
            200,
            Some(("admin", "/admin/x")),
        ),
        (
            "both.example",
            "/app/.%2E/admin",
            200,
            Some(("admin", "/admin")),
        ),
        ("both.example", "/app//x", 200, Some(("app", "/app//x"))),
        (
            "both.example",
            "/app/a%2Fb",
            200,
            Some(("app", "/app/a%2Fb")),
        ),
    ];
    let mut failures = Vec::new();
    for (host, target, status, want) in cases {
        for (proto, response) in send_both(running.http_addr, &TestRequest::get(host, target)).await
        {
            let echo = response.echo();
            let got = echo.as_ref().map(|e| (e.service.as_str(), e.path.as_str()));
            if response.status.as_u16() != status || got != want {
                failures.push(format!(
                    "{proto} GET http://{host}{target}: expected {status} {want:?}, got {} {got:?}",
                    response.status
                ));
            }
        }
    }
    running.shutdown().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_with_server_length_and_date() {
    let dir = temp_folder();
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("web", PORT)]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("only.example", "web"),
    );
    let running = start(dir.path(), CLASS).await;

    let response = get(&running, "elsewhere.example", "/").await;
    assert_local_error(&response, 404, "unknown host");
    let response = get(&running, running.http_addr.to_string().as_str(), "/x").await;
    assert_local_error(&response, 404, "the proxy's own address");

    // An HTTP/1.1 request without a Host header is refused (RFC 9112 §3.2), never routed.
    let response = send(running.http_addr, &TestRequest::new(Method::GET, "/"))
        .await
        .expect("a response to a request without Host");
    assert_local_error(&response, 400, "HTTP/1.1 request without Host");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_endpoints_is_503() {
    let dir = temp_folder();
    write_service(dir.path(), "lonely", &[]);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            "no-endpoints",
            CLASS,
            None,
            &[IngressRule::new(
                Some("svc.example"),
                vec![
                    IngressPath::new("/", "Prefix", "lonely", PORT),
                    IngressPath::new("/missing", "Prefix", "no-such-service", PORT),
                ],
            )],
        ),
    );
    let running = start(dir.path(), CLASS).await;
    let response = get(&running, "svc.example", "/").await;
    assert_local_error(&response, 503, "Service without EndpointSlice");
    let response = get(&running, "svc.example", "/missing").await;
    assert_local_error(&response, 503, "Service that does not exist");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_are_not_ready_get_no_traffic() {
    let dir = temp_folder();
    let pod = spawn_simple_echo("shy", "shy-0").await;
    write_service(dir.path(), "shy", &[(pod.addr(), false)]);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("shy.example", "shy"),
    );
    let mut running = start(dir.path(), CLASS).await;

    let response = get(&running, "shy.example", "/").await;
    assert_local_error(&response, 503, "only not-ready endpoints");

    let text = service_text("shy", &[(pod.addr(), true)]);
    let addr = pod.addr();
    change_and_wait(&mut running, dir.path(), &service_file("shy"), &text, |t| {
        routed_endpoints(t, "shy.example", "/") == vec![addr]
    })
    .await;
    let response = get(&running, "shy.example", "/").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.served_by(), "shy");
    running.shutdown().await;
}

/// An address that refuses connections: bound but not listening, so no other test can take the
/// port while the socket is held.
fn refusing_endpoint() -> (TcpSocket, SocketAddr) {
    let reserved = TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = reserved.local_addr().expect("address");
    (reserved, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_502() {
    let dir = temp_folder();
    let (reserved, closed) = refusing_endpoint();
    write_service(dir.path(), "gone", &[(closed, true)]);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("gone.example", "gone"),
    );
    let running = start(dir.path(), CLASS).await;
    let response = get(&running, "gone.example", "/").await;
    assert_local_error(&response, 502, "endpoint refuses connections");
    running.shutdown().await;
    drop(reserved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoint_is_skipped_for_another_ready_one() {
    let dir = temp_folder();
    let (reserved, closed) = refusing_endpoint();
    let alive = support::spawn_simple_echo("mixed", "mixed-alive").await;
    write_service(dir.path(), "mixed", &[(closed, true), (alive.addr(), true)]);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("mixed.example", "mixed"),
    );
    let running = start(dir.path(), CLASS).await;
    // Round-robin sends about half of these to the refusing endpoint first; each must still be
    // answered by the live one.
    for _ in 0..10 {
        let response = get(&running, "mixed.example", "/").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        assert_eq!(response.served_by(), "mixed");
    }
    running.shutdown().await;
    drop(reserved);
}

/// Accepts connections and reads them, but never answers.
async fn spawn_silent_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_is_504() {
    let dir = temp_folder();
    let (silent, task) = spawn_silent_backend().await;
    write_service(dir.path(), "silent", &[(silent, true)]);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("slow.example", "silent"),
    );
    let config = ProxyConfig {
        response_header_timeout: Duration::from_millis(300),
        ..quiet_proxy()
    };
    let running = start_with(dir.path(), CLASS, config, false).await;
    let response = get(&running, "slow.example", "/").await;
    assert_local_error(&response, 504, "backend never answers");
    running.shutdown().await;
    task.abort();
}

fn is_request_id(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_forwarding_headers_and_no_hop_by_hop_ones() {
    let dir = temp_folder();
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("echo", PORT)]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("fwd.example", "echo"),
    );
    let running = start(dir.path(), CLASS).await;
    let proxy_port = running.http_addr.port().to_string();

    // Empty segments, escapes and the query reach the backend as sent; the dot segment is
    // resolved (the path routed is the path forwarded).
    let target = "/a//b/../c?x=1&y=%2F&x=2";
    let forwarded = "/a//c?x=1&y=%2F&x=2";
    let request = TestRequest::new(Method::GET, target)
        .host("fwd.example")
        .header("User-Agent", "curl/8.5.0 (portcullis test)")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Connection", "x-custom")
        .header("X-Custom", "must not pass")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("Accept", "application/json");
    let response = send(running.http_addr, &request).await.expect("a response");
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let echo = response.echo().expect("an echo reply");

    let mut failures = Vec::new();
    let mut want = |what: &str, got: Option<&str>, expected: Option<&str>| {
        if got != expected {
            failures.push(format!("{what}: got {got:?}, expected {expected:?}"));
        }
    };
    want("path", Some(&echo.path), Some(forwarded));
    want("host", Some(&echo.host), Some("fwd.example"));
    want("proto", Some(&echo.proto), Some("HTTP/1.1"));
    want(
        "X-Forwarded-For",
        echo.first("X-Forwarded-For"),
        Some("203.0.113.9, 127.0.0.1"),
    );
    want(
        "X-Forwarded-Proto",
        echo.first("X-Forwarded-Proto"),
        Some("http"),
    );
    want(
        "X-Forwarded-Host",
        echo.first("X-Forwarded-Host"),
        Some("fwd.example"),
    );
    want(
        "X-Forwarded-Port",
        echo.first("X-Forwarded-Port"),
        Some(proxy_port.as_str()),
    );
    want("X-Real-IP", echo.first("X-Real-IP"), Some("127.0.0.1"));
    want(
        "User-Agent",
        echo.first("User-Agent"),
        Some("curl/8.5.0 (portcullis test)"),
    );
    want("Accept", echo.first("Accept"), Some("application/json"));
    for hop in ["X-Custom", "Keep-Alive", "Proxy-Connection"] {
        want(hop, echo.first(hop), None);
    }
    if echo
        .header("Connection")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("x-custom"))
    {
        failures.push(format!(
            "Connection still names x-custom: {:?}",
            echo.header("Connection")
        ));
    }
    if echo.header("X-Forwarded-For").len() != 1 {
        failures.push(format!(
            "X-Forwarded-For must be one field: {:?}",
            echo.header("X-Forwarded-For")
        ));
    }
    match echo.header("X-Request-Id") {
        [one] if is_request_id(one) => {}
        other => failures.push(format!("X-Request-ID must be 32 hex digits, got {other:?}")),
    }

    // A request id the client chose is kept.
    let request =
        TestRequest::get("fwd.example", "/").header("X-Request-ID", "client-chosen-id-42");
    let response = send(running.http_addr, &request).await.expect("a response");
    let echo = response.echo().expect("an echo reply");
    if echo.header("X-Request-Id") != ["client-chosen-id-42".to_string()] {
        failures.push(format!(
            "a client's X-Request-ID must be kept, backend saw {:?}",
            echo.header("X-Request-Id")
        ));
    }
    // Without an incoming X-Forwarded-For, the client address alone.
    let response = get(&running, "fwd.example", "/").await;
    let echo = response.echo().expect("an echo reply");
    if echo.header("X-Forwarded-For") != ["127.0.0.1".to_string()] {
        failures.push(format!(
            "fresh X-Forwarded-For: {:?}",
            echo.header("X-Forwarded-For")
        ));
    }
    running.shutdown().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_reaches_an_http1_backend() {
    let dir = temp_folder();
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("echo", PORT)]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("h2.example", "echo"),
    );
    let running = start(dir.path(), CLASS).await;

    let stream = TcpStream::connect(running.http_addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake with prior knowledge");
    let conn_task = tokio::spawn(conn);
    for target in ["/h2/one?q=1", "/h2//two"] {
        let request = Request::builder()
            .uri(format!("http://h2.example{target}"))
            .header("user-agent", "h2-test")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("a response in time")
            .expect("a response");
        assert_eq!(response.version(), Version::HTTP_2);
        let response = read_response(response).await.expect("a body");
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let echo = response.echo().expect("an echo reply");
        assert_eq!(echo.host, "h2.example", "Host comes from :authority");
        assert_eq!(echo.proto, "HTTP/1.1", "upstream is HTTP/1.1");
        assert_eq!(echo.path, target);
        assert_eq!(echo.first("User-Agent"), Some("h2-test"));
    }
    drop(sender);
    conn_task.abort();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_body_is_streamed_to_the_backend() {
    // The backend signals once it holds the first bytes; the client makes the rest only then, so a
    // proxy that collected the whole body before forwarding it would never finish.
    let (first_tx, first_rx) = oneshot::channel::<()>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let counter = spawn_http1(move |req: Request<Incoming>| {
        let first = first_tx.lock().ok().and_then(|mut f| f.take());
        async move {
            let text = match count_body(req.into_body(), first).await {
                Ok(n) => n.to_string(),
                Err(e) => format!("error: {e}"),
            };
            Response::new(Full::new(Bytes::from(text)))
        }
    })
    .await;

    let dir = temp_folder();
    write_service(dir.path(), "sink", &[(counter.addr, true)]);
    // ingress-nginx's default body limit (1m) would refuse this upload; the annotation lifts it.
    let ingress = ingress_to("upload.example", "sink").replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    nginx.ingress.kubernetes.io/proxy-body-size: \"0\"\n",
        1,
    );
    write_manifest(dir.path(), "ingress.yaml", &ingress);
    let running = start(dir.path(), CLASS).await;

    let body = GeneratedBody::new(LARGE, 64 * 1024).gated(1024 * 1024, first_rx);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header(header::HOST, "upload.example")
        .body(body)
        .expect("request");
    let exchange = async {
        let mut sender = connect_http1::<GeneratedBody>(running.http_addr).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("POST: {e}"))?;
        read_response(response).await
    };
    let response = tokio::time::timeout(LARGE_TIMEOUT, exchange)
        .await
        .expect("the upload finishes (a proxy that buffers the whole body never does)")
        .expect("a response");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.text(), LARGE.to_string());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_body_is_streamed_to_the_client() {
    // The backend makes the rest of the body only after the client has the first bytes.
    let (first_tx, first_rx) = oneshot::channel::<()>();
    let first_rx = Arc::new(Mutex::new(Some(first_rx)));
    let source = spawn_http1(move |_req: Request<Incoming>| {
        let gate = first_rx.lock().ok().and_then(|mut g| g.take());
        async move {
            let body = GeneratedBody::new(LARGE, 64 * 1024);
            let body = match gate {
                Some(gate) => body.gated(1024 * 1024, gate),
                None => body,
            };
            Response::new(body)
        }
    })
    .await;

    let dir = temp_folder();
    write_service(dir.path(), "source", &[(source.addr, true)]);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("download.example", "source"),
    );
    let running = start(dir.path(), CLASS).await;

    let exchange = async {
        let mut sender = connect_http1::<Full<Bytes>>(running.http_addr).await?;
        let request = Request::builder()
            .uri("/download")
            .header(header::HOST, "download.example")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET: {e}"))?;
        let (parts, body) = response.into_parts();
        let total = count_body(body, Some(first_tx))
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok::<_, String>((parts, total))
    };
    let (parts, total) = tokio::time::timeout(LARGE_TIMEOUT, exchange)
        .await
        .expect("the download finishes (a proxy that buffers the whole body never does)")
        .expect("a response");
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(total, LARGE);
    assert_eq!(
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()),
        Some(LARGE.to_string().as_str()),
        "the upstream's Content-Length is passed on"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let backend = spawn_upgrade_echo().await;
    let dir = temp_folder();
    write_service(dir.path(), "ws", &[(backend.addr, true)]);
    write_manifest(dir.path(), "ingress.yaml", &ingress_to("ws.example", "ws"));
    let running = start(dir.path(), CLASS).await;

    let exchange = async {
        let mut tunnel = open_websocket(running.http_addr, "ws.example", "/chat").await?;
        let mut echoed = Vec::new();
        for message in [&b"hello through the tunnel"[..], &[0u8, 1, 2, 255, 254][..]] {
            echoed.push((message.to_vec(), tunnel.echo(message).await?));
        }
        Ok::<_, String>((tunnel.upgrade, echoed))
    };
    let (upgrade_header, echoed) = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the tunnel answers in time")
        .expect("a working tunnel");
    assert_eq!(
        upgrade_header.as_ref().and_then(|v| v.to_str().ok()),
        Some("websocket")
    );
    for (sent, got) in echoed {
        assert_eq!(sent, got);
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_round_robin_over_endpoints() {
    let dir = temp_folder();
    let mut spec = ServiceSpec::new("spread", PORT);
    spec.replicas = 3;
    let pods = deploy(dir.path(), NAMESPACE, &[spec]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("rr.example", "spread"),
    );
    let running = start(dir.path(), CLASS).await;

    // Sequential requests visit the endpoints in turn: the first three reach all three pods, and
    // from then on each request goes where the one three before it went.
    let mut order: Vec<String> = Vec::new();
    for _ in 0..30 {
        let response = get(&running, "rr.example", "/").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        order.push(response.echo().expect("an echo reply").pod);
    }
    running.shutdown().await;
    let pods: BTreeSet<String> = pods.echoes.iter().map(|e| e.identity.pod.clone()).collect();
    let first_round: BTreeSet<String> = order[..3].iter().cloned().collect();
    assert_eq!(first_round, pods, "the first three requests: {order:?}");
    for (i, pod) in order.iter().enumerate().skip(3) {
        assert_eq!(
            pod,
            &order[i - 3],
            "request {i} broke the rotation: {order:?}"
        );
    }
    let mut hits: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in &order {
        *hits.entry(pod).or_default() += 1;
    }
    assert!(hits.values().all(|&n| n == 10), "{hits:?}");
}

/// What one load-generating client saw.
#[derive(Default)]
struct ClientLog {
    ok: usize,
    failures: Vec<String>,
    after_switch: Vec<String>,
}

/// Sends requests over one keep-alive connection until told to finish, then `tail` more.
async fn keep_sending(
    addr: SocketAddr,
    host: &'static str,
    switched: Arc<AtomicBool>,
    progress: Arc<watch::Sender<usize>>,
    tail: usize,
) -> ClientLog {
    const MAX_REQUESTS: usize = 50_000;
    let mut log = ClientLog::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut sender = None;
    for _ in 0..MAX_REQUESTS {
        let finishing = switched.load(Ordering::SeqCst);
        if finishing && log.after_switch.len() >= tail {
            return log;
        }
        if tokio::time::Instant::now() > deadline {
            log.failures.push("ran out of time".into());
            return log;
        }
        if sender.is_none() {
            match connect_http1::<Full<Bytes>>(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    log.failures.push(e);
                    continue;
                }
            }
        }
        let Some(conn) = sender.as_mut() else {
            continue;
        };
        let request = match TestRequest::get(host, "/live").to_hyper() {
            Ok(r) => r,
            Err(e) => {
                log.failures.push(e);
                return log;
            }
        };
        let outcome = async {
            conn.ready().await.map_err(|e| format!("connection: {e}"))?;
            let response = conn
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            read_response(response).await
        };
        match tokio::time::timeout(Duration::from_secs(10), outcome).await {
            Ok(Ok(response)) if response.status == StatusCode::OK => {
                log.ok += 1;
                if finishing {
                    log.after_switch.push(response.served_by());
                }
            }
            Ok(Ok(response)) => log.failures.push(format!(
                "status {} from {}: {:?}",
                response.status,
                response.served_by(),
                response.text()
            )),
            Ok(Err(e)) => {
                log.failures.push(e);
                sender = None;
            }
            Err(_) => {
                log.failures.push("no response within 10 s".into());
                sender = None;
            }
        }
        progress.send_modify(|n| *n += 1);
    }
    log.failures
        .push(format!("stopped after {MAX_REQUESTS} requests"));
    log
}

/// Waits until the clients together have made `more` further requests.
async fn more_requests(progress: &mut watch::Receiver<usize>, more: usize) {
    let target = *progress.borrow_and_update() + more;
    let reached =
        tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|n| *n >= target))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
    assert!(reached, "the clients stopped making progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_changes_under_load_fail_no_request() {
    const HOST: &str = "live.example";
    const CLIENTS: usize = 4;
    const TAIL: usize = 20;
    let dir = temp_folder();
    let a: Vec<Echo> = vec![
        spawn_simple_echo("svc-a", "svc-a-0").await,
        spawn_simple_echo("svc-a", "svc-a-1").await,
    ];
    let b: Vec<Echo> = vec![
        spawn_simple_echo("svc-b", "svc-b-0").await,
        spawn_simple_echo("svc-b", "svc-b-1").await,
    ];
    let (a0, a1, b0, b1) = (a[0].addr(), a[1].addr(), b[0].addr(), b[1].addr());
    write_service(dir.path(), "svc-a", &ready(&[a0]));
    write_service(dir.path(), "svc-b", &ready(&[b0]));
    write_manifest(dir.path(), "ingress.yaml", &ingress_to(HOST, "svc-a"));
    let mut running = start(dir.path(), CLASS).await;

    let switched = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(watch::channel(0usize).0);
    let mut progress_rx = progress.subscribe();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(keep_sending(
                running.http_addr,
                HOST,
                switched.clone(),
                progress.clone(),
                TAIL,
            ))
        })
        .collect();
    more_requests(&mut progress_rx, 100).await;

    let ingress = "ingress.yaml";
    let steps: Vec<(String, String, Vec<SocketAddr>)> = vec![
        (
            service_file("svc-a"),
            service_text("svc-a", &ready(&[a0, a1])),
            vec![a0, a1],
        ),
        (ingress.into(), ingress_to(HOST, "svc-b"), vec![b0]),
        (
            service_file("svc-b"),
            service_text("svc-b", &ready(&[b0, b1])),
            vec![b0, b1],
        ),
        (ingress.into(), ingress_to(HOST, "svc-a"), vec![a0, a1]),
        (
            service_file("svc-a"),
            service_text("svc-a", &ready(&[a1])),
            vec![a1],
        ),
        (ingress.into(), ingress_to(HOST, "svc-b"), vec![b0, b1]),
    ];
    for (file, text, endpoints) in &steps {
        change_and_wait(&mut running, dir.path(), file, text, |t| {
            let mut now = routed_endpoints(t, HOST, "/live");
            now.sort();
            let mut want = endpoints.clone();
            want.sort();
            now == want
        })
        .await;
        more_requests(&mut progress_rx, 100).await;
    }
    switched.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    let mut total = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let log = client.await.expect("client task");
        total += log.ok;
        failures.extend(log.failures.iter().map(|f| format!("client {i}: {f}")));
        if log.after_switch.len() < TAIL {
            failures.push(format!(
                "client {i}: only {} requests after the last switch",
                log.after_switch.len()
            ));
        }
        if let Some(other) = log.after_switch.iter().find(|s| *s != "svc-b") {
            failures.push(format!(
                "client {i}: after the switch to svc-b a request was served by {other}"
            ));
        }
    }
    let response = get(&running, HOST, "/live").await;
    assert_eq!(response.served_by(), "svc-b");
    running.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} failed requests out of {}: {failures:#?}",
        failures.len(),
        total + failures.len()
    );
    eprintln!(
        "{total} requests, all 200, over {} table changes",
        steps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifest_keeps_the_last_good_routes() {
    let dir = temp_folder();
    let a0 = spawn_simple_echo("svc-a", "svc-a-0").await;
    let a1 = spawn_simple_echo("svc-a", "svc-a-1").await;
    let b0 = spawn_simple_echo("svc-b", "svc-b-0").await;
    write_service(dir.path(), "svc-a", &ready(&[a0.addr()]));
    write_service(dir.path(), "svc-b", &ready(&[b0.addr()]));
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("keep.example", "svc-a"),
    );
    let mut running = start_with(dir.path(), CLASS, quiet_proxy(), true).await;
    assert_eq!(
        get(&running, "keep.example", "/").await.served_by(),
        "svc-a"
    );

    // Break the Ingress file, then change something else: once that later change is served, the
    // table was built from a read that already saw the broken file.
    write_manifest(
        dir.path(),
        "ingress.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: test\nspec: [oops\n",
    );
    let both = vec![a0.addr(), a1.addr()];
    change_and_wait(
        &mut running,
        dir.path(),
        &service_file("svc-a"),
        &service_text("svc-a", &ready(&both)),
        |t| {
            let mut now = routed_endpoints(t, "keep.example", "/");
            now.sort();
            let mut want = both.clone();
            want.sort();
            now == want
        },
    )
    .await;
    for _ in 0..4 {
        let response = get(&running, "keep.example", "/").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        assert_eq!(response.served_by(), "svc-a");
    }
    let admin = running.admin_addr.expect("admin address");
    let config = send(admin, &TestRequest::get(admin.to_string(), "/config"))
        .await
        .expect("/config");
    let config: serde_json::Value = serde_json::from_slice(&config.body).expect("JSON");
    let reports_file = config["diagnostics"].as_array().is_some_and(|d| {
        d.iter().any(|d| {
            d["severity"] == "error"
                && d["object"]
                    .as_str()
                    .is_some_and(|o| o.ends_with("ingress.yaml"))
        })
    });
    assert!(
        reports_file,
        "the broken file is reported: {:#}",
        config["diagnostics"]
    );

    // The watcher is still alive: a good file is picked up again.
    let b = vec![b0.addr()];
    change_and_wait(
        &mut running,
        dir.path(),
        "ingress.yaml",
        &ingress_to("keep.example", "svc-b"),
        |t| routed_endpoints(t, "keep.example", "/") == b,
    )
    .await;
    assert_eq!(
        get(&running, "keep.example", "/").await.served_by(),
        "svc-b"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_and_routes() {
    let dir = temp_folder();
    let pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("svc-a", PORT)]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_to("admin.example", "svc-a"),
    );
    let running = start_with(dir.path(), CLASS, quiet_proxy(), true).await;
    let admin = running.admin_addr.expect("admin address");
    let admin_get = |path: &'static str| async move {
        send(admin, &TestRequest::get(admin.to_string(), path))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };

    let healthz = admin_get("/healthz").await;
    assert_eq!(healthz.status, StatusCode::OK, "{}", healthz.text());
    let readyz = admin_get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::OK, "{}", readyz.text());
    let missing = admin_get("/no-such-page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let config = admin_get("/config").await;
    assert_eq!(config.status, StatusCode::OK);
    let config: serde_json::Value = serde_json::from_slice(&config.body).expect("/config is JSON");
    assert!(
        config["generation"].as_u64().is_some_and(|g| g >= 1),
        "{config:#}"
    );
    let endpoint = pods.addrs("svc-a")[0].to_string();
    let routes = config["routes"].as_array().cloned().unwrap_or_default();
    let listed = routes.iter().any(|r| {
        r["host"] == "admin.example"
            && r["path"] == "/"
            && r["path_type"] == "Prefix"
            && r["backend"] == format!("{NAMESPACE}/svc-a:{PORT}").as_str()
            && r["endpoints"]
                .as_str()
                .is_some_and(|e| e.contains(&endpoint))
    });
    assert!(listed, "the route is listed: {:#}", config["routes"]);
    running.shutdown().await;
}

/// A change written the moment `start` returns must still be served. Tried a few times, because
/// the window in which a change can be lost is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_written_right_after_start_is_published() {
    const ATTEMPTS: usize = 5;
    let pod = spawn_simple_echo("svc-a", "svc-a-0").await;
    for attempt in 1..=ATTEMPTS {
        let dir = temp_folder();
        write_service(dir.path(), "svc-a", &ready(&[pod.addr()]));
        write_manifest(
            dir.path(),
            "ingress.yaml",
            &ingress_to("before.example", "svc-a"),
        );
        let mut running = start(dir.path(), CLASS).await;
        running.generations.borrow_and_update();
        write_manifest(
            dir.path(),
            "ingress.yaml",
            &ingress_to("after.example", "svc-a"),
        );
        let published = tokio::time::timeout(support::PUBLISH_TIMEOUT, async {
            loop {
                if running.generations.changed().await.is_err() {
                    return false;
                }
                if !routed_endpoints(&running.published.load(), "after.example", "/").is_empty() {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false);
        let response = get(&running, "after.example", "/").await;
        running.shutdown().await;
        assert!(
            published && response.status == StatusCode::OK,
            "attempt {attempt}: ingress.yaml was rewritten (host before.example -> after.example) \
             right after start returned; within {:?} no new table was published and \
             GET http://after.example/ answers {} instead of 200",
            support::PUBLISH_TIMEOUT,
            response.status
        );
    }
}
