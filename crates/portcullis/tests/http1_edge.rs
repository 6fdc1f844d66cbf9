//! HTTP/1.x edge cases end to end, byte for byte: requests that try to smuggle a second request
//! past the proxy or are malformed, long request lines, chunk extensions and trailers, upstreams
//! that answer before the upload is over or break off mid-body, interim responses, pipelining,
//! clients that send their heads a byte at a time, and IPv6 on every hop.
//!
//! Each test drives a raw client against Portcullis in front of a raw backend that records every
//! byte it receives, so what a test asserts is exactly what went over the wire.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis::{Running, Settings};
use proxy::{AccessLog, ProxyConfig};
use raw::{access_log, always, count, find, logged, ok, Answer, RawBackend, RawClient};
use support::{
    class_options, endpoint_slices_yaml, ingress_yaml, quiet_proxy, service_yaml, start_with,
    write_manifest, IngressPath, IngressRule, NAMESPACE,
};

const CLASS: &str = "portcullis";
const PORT: u16 = 80;
const HOST: &str = "edge.example";

/// The manifests for one Service with `backend` as its endpoint, routed for [`HOST`].
fn write_routes(dir: &Path, slices: &str) {
    let mut text = service_yaml(NAMESPACE, "edge", PORT, None);
    text.push_str("---\n");
    text.push_str(slices);
    write_manifest(dir, "service.yaml", &text);
    let ingress = ingress_yaml(
        NAMESPACE,
        "edge",
        CLASS,
        None,
        &[IngressRule::new(
            Some(HOST),
            vec![IngressPath::new("/", "Prefix", "edge", PORT)],
        )],
    );
    write_manifest(dir, "ingress.yaml", &ingress);
}

/// A scripted backend behind Portcullis with `config`: the manifest folder (kept for the
/// test's lifetime), the proxy and the backend.
async fn rig_with(
    script: raw::Script,
    config: ProxyConfig,
) -> (tempfile::TempDir, Running, RawBackend) {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let backend = RawBackend::start(script).await;
    write_routes(
        dir.path(),
        &endpoint_slices_yaml(NAMESPACE, "edge", None, &[(backend.addr, true)]),
    );
    let running = start_with(dir.path(), CLASS, config, false).await;
    (dir, running, backend)
}

async fn rig(script: raw::Script) -> (tempfile::TempDir, Running, RawBackend) {
    rig_with(script, quiet_proxy()).await
}

/// Answers every request with its request line as the body.
fn echo_line() -> raw::Script {
    Arc::new(|head: &str| Answer::Reply(ok(head.lines().next().unwrap_or(""))))
}

/// A request for [`HOST`] with extra header lines and a body.
fn request(method: &str, target: &str, fields: &str, body: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n{body}").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Malformed requests and smuggling attempts
// ---------------------------------------------------------------------------------------------

/// What reaches the backend of a refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Nothing at all: the head was refused.
    Nothing,
    /// The head (and any body bytes before the fault), then the connection is closed.
    HeadOnly,
    /// The request is served (with its head normalised).
    Served,
}

/// One case of the table: the raw bytes a client sends, the status it must get, and what the
/// backend may see. Every request carries a second one after it that must never arrive.
struct Case {
    name: &'static str,
    bytes: String,
    status: u16,
    reach: Reach,
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: edge.example\r\n\r\n";

fn case(name: &'static str, status: u16, reach: Reach, head_and_body: &str) -> Case {
    Case {
        name,
        bytes: format!("{head_and_body}{SMUGGLED}"),
        status,
        reach,
    }
}

fn post(fields: &str, body: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n{body}")
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Reach::*;
    let many: String = (0..150).map(|i| format!("X-F{i}: v\r\n")).collect();
    let big = "b".repeat(40 * 1024);
    let get = |fields: &str| format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n");
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    vec![
        case("CL then TE", 400, Nothing, &post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        case("TE then CL", 400, Nothing, &post("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", "0\r\n\r\n")),
        case("two differing CL", 400, Nothing, &post("Content-Length: 5\r\nContent-Length: 44\r\n", "hello")),
        case("two equal CL", 400, Nothing, &post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello")),
        case("CL list 1,1", 400, Nothing, &post("Content-Length: 1,1\r\n", "x")),
        case("CL +5", 400, Nothing, &post("Content-Length: +5\r\n", "hello")),
        case("CL ' 5x'", 400, Nothing, &post("Content-Length:  5x\r\n", "hello")),
        case("CL empty", 400, Nothing, &post("Content-Length: \r\n", "")),
        case("CL negative", 400, Nothing, &post("Content-Length: -1\r\n", "")),
        case("chunk size not hex", 400, HeadOnly, &chunked("zz\r\nhello\r\n0\r\n\r\n")),
        case("chunk size with sign", 400, HeadOnly, &chunked("+5\r\nhello\r\n0\r\n\r\n")),
        case("chunk size 17 digits", 400, HeadOnly, &chunked("00000000000000005\r\nhello\r\n0\r\n\r\n")),
        case("chunk size overflow", 400, HeadOnly, &chunked("10000000000000000\r\nhello\r\n0\r\n\r\n")),
        case("chunk line bare LF", 400, HeadOnly, &chunked("5\nhello\r\n0\r\n\r\n")),
        case("chunk data too long", 400, HeadOnly, &chunked("3\r\nhello\r\n0\r\n\r\n")),
        case("obs-fold", 400, Nothing, &get("X-A: a\r\n folded\r\n")),
        case("NUL in a value", 400, Nothing, &get("X-A: a\0b\r\n")),
        case("CR in a value", 400, Nothing, &get("X-A: a\rb\r\n")),
        case("space before colon", 400, Nothing, &get("X-A : a\r\n")),
        case("head too large", 431, Nothing, &get(&format!("X-Big: {big}\r\n"))),
        case("too many fields", 431, Nothing, &get(&many)),
        case("no Host in HTTP/1.1", 400, Nothing, "GET / HTTP/1.1\r\nX-A: a\r\n\r\n"),
        case("two Hosts", 400, Nothing, &get("Host: other.example\r\n")),
        case("TE chunked, identity", 400, Nothing, &post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n")),
        case("TE identity", 400, Nothing, &post("Transfer-Encoding: identity\r\n", "0\r\n\r\n")),
        case("TE gzip", 400, Nothing, &post("Transfer-Encoding: gzip\r\n", "0\r\n\r\n")),
        case("TE chunked twice", 400, Nothing, &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        case("TE gzip, chunked", 501, Nothing, &post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n")),
        case("TE in HTTP/1.0", 400, Nothing, &format!("POST / HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        // Bare LF line ends in a head are accepted, as nginx accepts them (RFC 9112 §2.2), and
        // the head goes upstream with CRLF only.
        case("bare LF head", 200, Served, &format!("GET /lf HTTP/1.1\nHost: {HOST}\nX-A: a\n\n")),
    ]
}

/// The bytes that arrived at the backend since `before` connections had been opened.
fn arrived_since(backend: &RawBackend, before: usize) -> Vec<u8> {
    backend.received()[before..].concat()
}

async fn check_case(running: &Running, backend: &RawBackend, c: &Case) {
    let (connections, requests) = (backend.connections(), backend.requests().len());
    let mut client = RawClient::connect(running.http_addr).await;
    client.send(c.bytes.as_bytes()).await;
    let response = client
        .response()
        .await
        .unwrap_or_else(|| panic!("{}: no response", c.name));
    assert_eq!(response.status, c.status, "{}: {}", c.name, response.head);
    if c.reach == Reach::Served {
        // The smuggled-looking second request is an ordinary pipelined one here.
        let second = client
            .response()
            .await
            .expect("the second request's answer");
        assert_eq!(second.status, 200, "{}", c.name);
        backend.wait_requests(requests + 2).await;
        let first = &backend.requests()[requests];
        assert!(first.starts_with("GET /lf HTTP/1.1\r\n"), "{first:?}");
        assert_eq!(
            count(first.as_bytes(), b"\n"),
            count(first.as_bytes(), b"\r\n"),
            "{first:?}"
        );
        return;
    }
    assert_eq!(response.header("connection"), Some("close"), "{}", c.name);
    assert!(
        client.closes().await.is_some(),
        "{}: the connection closes",
        c.name
    );
    if c.reach == Reach::HeadOnly {
        backend.wait_connections(connections + 1).await;
    }
    backend.wait_all_closed().await;
    let arrived = arrived_since(backend, connections);
    match c.reach {
        Reach::Nothing => assert!(
            arrived.is_empty(),
            "{}: {:?}",
            c.name,
            String::from_utf8_lossy(&arrived)
        ),
        Reach::HeadOnly => {
            assert_eq!(
                count(&arrived, b" HTTP/1.1\r\n"),
                1,
                "{}: {:?}",
                c.name,
                String::from_utf8_lossy(&arrived)
            );
            assert!(
                arrived.starts_with(b"POST /upload HTTP/1.1\r\n"),
                "{}",
                c.name
            );
        }
        Reach::Served => unreachable!(),
    }
    assert!(
        find(&arrived, b"/smuggled").is_none(),
        "{}: smuggled through",
        c.name
    );
    assert_eq!(
        backend.requests().len(),
        requests,
        "{}: no whole request arrived",
        c.name
    );
}

#[tokio::test]
async fn malformed_and_smuggling_requests_never_reach_the_backend_as_two() {
    // One worker, so that one pool serves every connection.
    let config = ProxyConfig {
        workers: 1,
        ..quiet_proxy()
    };
    let (_dir, running, backend) = rig_with(echo_line(), config).await;
    let cases = cases();
    for c in &cases {
        check_case(&running, &backend, c).await;
    }
    // The proxy still serves an ordinary request afterwards, on the connection the served
    // case left in the pool. The backend accepts connections in the order they were made, so
    // by now it has seen every one: one per case that got as far as its body, and that one.
    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", "/after", "", "")).await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.text(), "GET /after HTTP/1.1");
    let head_only = cases.iter().filter(|c| c.reach == Reach::HeadOnly).count();
    assert_eq!(backend.connections(), head_only + 1);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Long request lines
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn long_targets_are_forwarded_whole_and_overlong_request_lines_are_414() {
    let (_dir, running, backend) = rig(echo_line()).await;
    let target = format!("/long/{}?q={}", "p".repeat(12 * 1024), "v".repeat(4 * 1024));
    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", &target, "", "")).await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.text(), format!("GET {target} HTTP/1.1"));

    let mut client = RawClient::connect(running.http_addr).await;
    let overlong = format!("/{}", "p".repeat(40 * 1024));
    client.send(&request("GET", &overlong, "", "")).await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.status, 414, "{}", response.head);
    assert!(client.closes().await.is_some());
    assert_eq!(backend.requests().len(), 1);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Chunk extensions and trailers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn chunked_uploads_lose_extensions_and_framing_trailers() {
    let (_dir, running, backend) = rig(always(|| Answer::Reply(ok("stored")))).await;
    let mut client = RawClient::connect(running.http_addr).await;
    let body = "5;sig=abc\r\nhello\r\n6;x\r\n world\r\n0;end\r\nX-Checksum: 42\r\nContent-Length: 5\r\nHost: evil.example\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\nAuthorization: Basic eA==\r\nX-Other: kept\r\n\r\n";
    client
        .send(&request(
            "POST",
            "/up",
            "Transfer-Encoding: chunked\r\n",
            body,
        ))
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.status, 200, "{}", response.head);
    backend.wait_requests(1).await;
    let upload = &backend.requests()[0];
    let (head, body) = upload.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
    assert!(!body.contains(';'), "extensions dropped: {body:?}");
    assert!(
        body.ends_with("0\r\nX-Checksum: 42\r\nX-Other: kept\r\n\r\n"),
        "{body:?}"
    );
    for dropped in [
        "Content-Length",
        "evil.example",
        "Trailer:",
        "Connection",
        "Authorization",
    ] {
        assert!(!body.contains(dropped), "{dropped} forwarded: {body:?}");
    }
    let data: String = body
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .take_while(|pair| pair[0] != "0")
        .map(|pair| pair[1])
        .collect();
    assert_eq!(data, "hello world");

    // Extensions are bounded over the whole body, not only per chunk.
    let mut client = RawClient::connect(running.http_addr).await;
    let ext = "e".repeat(3000);
    let body: String = (0..10).map(|_| format!("1;{ext}\r\na\r\n")).collect();
    client
        .send(&request(
            "POST",
            "/up",
            "Transfer-Encoding: chunked\r\n",
            &format!("{body}0\r\n\r\n"),
        ))
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.status, 400, "{}", response.head);
    assert!(client.closes().await.is_some());
    running.shutdown().await;
}

fn chunked_with_extras() -> Answer {
    Answer::Reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Digest: d\r\nContent-Length: 99\r\nSet-Cookie: s=1\r\n\r\n"
            .to_vec(),
    )
}

#[tokio::test]
async fn chunked_responses_are_reframed_for_the_client() {
    let (_dir, running, _backend) = rig(always(chunked_with_extras)).await;
    let mut client = RawClient::connect(running.http_addr).await;
    for _ in 0..2 {
        client.send(&request("GET", "/", "", "")).await;
        let response = client.response().await.expect("a response");
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        let body = response.text();
        assert!(!body.contains(';'), "{body:?}");
        assert!(body.ends_with("0\r\nX-Digest: d\r\n\r\n"), "{body:?}");
        assert!(
            !body.contains("Set-Cookie") && !body.contains("99"),
            "{body:?}"
        );
    }
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Upstreams that answer before the upload is over
// ---------------------------------------------------------------------------------------------

/// Answers `413`, `401` or a redirect as soon as the head arrives, by path.
fn answers_early() -> raw::Script {
    Arc::new(|head: &str| {
        let line = head.lines().next().unwrap_or("");
        if line.contains("/big") {
            Answer::Early(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n".to_vec())
        } else if line.contains("/reset") {
            Answer::EarlyAndClose(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied".to_vec(),
            )
        } else if line.contains("/auth") {
            Answer::Early(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else if line.contains("/moved") {
            Answer::Early(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Answer::Reply(ok(line))
        }
    })
}

/// A POST head announcing `len` body bytes.
fn upload_head(path: &str, len: usize) -> Vec<u8> {
    request("POST", path, &format!("Content-Length: {len}\r\n"), "")
}

#[tokio::test]
async fn an_upstream_answering_before_the_upload_ends_is_relayed() {
    // No body limit of the proxy's own, so that the backend is the one to refuse; one worker,
    // so that one pool serves every connection.
    let config = ProxyConfig {
        max_body_size: 0,
        workers: 1,
        ..quiet_proxy()
    };
    let (_dir, running, backend) = rig_with(answers_early(), config).await;

    // A large upload: the answer comes through, and the client connection closes.
    let mut client = RawClient::connect(running.http_addr).await;
    let response = client.upload(&upload_head("/big", 8 << 20), 8 << 20).await;
    assert_eq!(response.status, 413, "{}", response.head);
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "{}",
        response.head
    );
    let rest = client.closes().await.expect("the client connection closes");
    let body = format!("{}{}", response.text(), String::from_utf8_lossy(&rest));
    assert_eq!(body, "too big\n", "the backend's own answer");
    drop(client);

    // An upstream that answers and closes at once, leaving the body unread: the answer still
    // comes through (not a 502 for the reset that follows).
    let mut client = RawClient::connect(running.http_addr).await;
    let response = client
        .upload(&upload_head("/reset", 8 << 20), 8 << 20)
        .await;
    assert_eq!(response.status, 401, "{}", response.head);
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "{}",
        response.head
    );
    drop(client);
    backend.wait_connections(1).await;
    assert!(
        backend.received()[0].len() < 8 << 20,
        "the upload stopped early"
    );

    // 401 and a redirect with a small rest left: the rest is read and dropped, and the
    // connection goes on.
    for (path, status) in [("/auth", 401), ("/moved", 307)] {
        let mut client = RawClient::connect(running.http_addr).await;
        client
            .send(&request(
                "POST",
                path,
                "Content-Length: 30000\r\n",
                &"u".repeat(1000),
            ))
            .await;
        let response = client.response().await.expect("the early answer");
        assert_eq!(response.status, status, "{}", response.head);
        assert_eq!(response.header("connection"), None, "{}", response.head);
        client.send("u".repeat(29000).as_bytes()).await;
        client.send(&request("GET", "/next", "", "")).await;
        let next = client.response().await.expect("the next answer");
        assert_eq!(next.text(), "GET /next HTTP/1.1", "{}", next.head);
    }
    // A connection that answered early is not reused: /big, /reset, /auth and /moved had one
    // each (/moved the one /next had left in the pool), and the /next after each of the last
    // two had to open one.
    assert_eq!(backend.connections(), 5);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Upstream framing and Connection: close
// ---------------------------------------------------------------------------------------------

fn both_framings() -> Answer {
    Answer::Reply(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
    )
}

#[tokio::test]
async fn a_response_with_both_framings_is_chunked_and_its_connection_not_reused() {
    let (_dir, running, backend) = rig(always(both_framings)).await;
    let mut client = RawClient::connect(running.http_addr).await;
    for i in 1..=2 {
        client.send(&request("GET", "/", "", "")).await;
        let response = client.response().await.expect("a response");
        assert_eq!(response.header("content-length"), None, "{}", response.head);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.text(), "5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            backend.connections(),
            i,
            "a fresh upstream connection per request"
        );
    }
    running.shutdown().await;
}

/// Says `Connection: close` on `/close` but keeps the connection open.
fn closes_by_header() -> raw::Script {
    Arc::new(|head: &str| {
        if head.starts_with("GET /close ") {
            Answer::Reply(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            )
        } else {
            Answer::Reply(ok("kept"))
        }
    })
}

#[tokio::test]
async fn connection_close_from_either_side_is_honoured() {
    let (_dir, running, backend) = rig(closes_by_header()).await;
    // Kept-alive requests share one upstream connection.
    let mut client = RawClient::connect(running.http_addr).await;
    for _ in 0..3 {
        client.send(&request("GET", "/", "", "")).await;
        assert_eq!(client.response().await.expect("a response").text(), "kept");
    }
    assert_eq!(backend.connections(), 1);
    // The upstream says close: that connection is not pooled.
    client.send(&request("GET", "/close", "", "")).await;
    let response = client.response().await.expect("a response");
    assert_eq!(
        response.header("connection"),
        None,
        "the client connection stays: {}",
        response.head
    );
    client.send(&request("GET", "/", "", "")).await;
    assert_eq!(client.response().await.expect("a response").text(), "kept");
    assert_eq!(
        backend.connections(),
        2,
        "a new upstream connection after Connection: close"
    );
    // The client says close: answered with close, then closed.
    client
        .send(&request("GET", "/", "Connection: close\r\n", ""))
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "{}",
        response.head
    );
    assert!(client.closes().await.is_some());
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Bodies that break off
// ---------------------------------------------------------------------------------------------

fn breaks_off() -> raw::Script {
    Arc::new(|head: &str| {
        if head.starts_with("GET /cl ") {
            Answer::ReplyAndClose(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            )
        } else {
            Answer::ReplyAndClose(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            )
        }
    })
}

#[tokio::test]
async fn bodies_that_break_off_end_the_client_connection_and_abandoned_uploads_are_499() {
    access_log();
    let config = ProxyConfig {
        access_log: AccessLog::Text,
        ..quiet_proxy()
    };
    let (_dir, running, _backend) = rig_with(breaks_off(), config).await;

    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", "/cl", "", "")).await;
    let received = client.closes().await.expect("the proxy closes");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n0123456789"), "{text:?}");

    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", "/chunked", "", "")).await;
    let received = client.closes().await.expect("the proxy closes");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.ends_with("\r\n\r\n5\r\nhello\r\n"),
        "no last chunk: {text:?}"
    );

    let mut client = RawClient::connect(running.http_addr).await;
    client
        .send(&request(
            "POST",
            "/abandoned-upload",
            "Content-Length: 100\r\n",
            "0123456789",
        ))
        .await;
    drop(client);
    let line = logged("/abandoned-upload").await;
    assert!(
        line.contains("\"POST /abandoned-upload HTTP/1.1\" 499"),
        "{line}"
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Interim responses
// ---------------------------------------------------------------------------------------------

fn interim_then_final() -> raw::Script {
    Arc::new(|head: &str| {
        if head.starts_with("GET /switch ") {
            Answer::Reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_vec())
        } else {
            Answer::Reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone".to_vec())
        }
    })
}

#[tokio::test]
async fn interim_responses_go_to_http11_clients_only_and_unasked_switches_are_502() {
    let (_dir, running, _backend) = rig(interim_then_final()).await;
    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", "/", "", "")).await;
    for status in [100, 102, 103, 200] {
        let response = client.response().await.expect("a response");
        assert_eq!(response.status, status, "{}", response.head);
    }

    let mut client = RawClient::connect(running.http_addr).await;
    client
        .send(format!("GET / HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(
        response.status, 200,
        "no interim response for HTTP/1.0: {}",
        response.head
    );
    assert_eq!(response.text(), "done");

    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", "/switch", "", "")).await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.status, 502, "{}", response.head);
    client.send(&request("GET", "/", "", "")).await;
    let response = client
        .response()
        .await
        .expect("the connection still serves");
    assert_eq!(response.status, 100);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    let (_dir, running, backend) = rig(echo_line()).await;
    let mut client = RawClient::connect(running.http_addr).await;
    let mut all = Vec::new();
    all.extend(request("POST", "/1", "Content-Length: 5\r\n", "first"));
    all.extend(request(
        "POST",
        "/2",
        "Transfer-Encoding: chunked\r\n",
        "6\r\nsecond\r\n0\r\n\r\n",
    ));
    all.extend(request("GET", "/3", "", ""));
    all.extend(request(
        "PUT",
        "/4",
        "Content-Length: 20000\r\n",
        &"f".repeat(20000),
    ));
    client.send(&all).await;
    for line in ["POST /1", "POST /2", "GET /3", "PUT /4"] {
        let response = client.response().await.expect("a response");
        assert_eq!(response.text(), format!("{line} HTTP/1.1"));
    }
    backend.wait_requests(4).await;
    let requests = backend.requests();
    assert!(requests[0].ends_with("\r\n\r\nfirst"));
    assert!(
        requests[1].ends_with("\r\n\r\n6\r\nsecond\r\n0\r\n\r\n"),
        "{:?}",
        requests[1]
    );
    assert!(requests[3].ends_with(&"f".repeat(20000)));
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Slow heads
// ---------------------------------------------------------------------------------------------

/// The start of a head that a slow client never finishes.
const SLOW_START: &[u8] = b"GET / HTTP/1.1\r\nHost: edge.example\r\nX-Slow: ";

#[tokio::test]
async fn heads_sent_a_byte_at_a_time_are_cut_off_without_holding_up_others() {
    let config = ProxyConfig {
        client_header_timeout: Duration::from_secs(1),
        ..quiet_proxy()
    };
    let (_dir, running, _backend) = rig_with(echo_line(), config).await;
    let dribblers: Vec<_> = (0..200)
        .map(|_| tokio::spawn(raw::dribble(running.http_addr, SLOW_START)))
        .collect();
    // An ordinary client is served meanwhile.
    let mut client = RawClient::connect(running.http_addr).await;
    client.send(&request("GET", "/normal", "", "")).await;
    assert_eq!(
        client.response().await.expect("a response").text(),
        "GET /normal HTTP/1.1"
    );
    for dribbler in dribblers {
        let (sent, received) = dribbler.await.expect("the dribbler ran");
        assert!(received.starts_with("HTTP/1.1 408 "), "{received:?}");
        assert!(received.contains("Connection: close"), "{received:?}");
        assert!((2..50).contains(&sent), "cut off after {sent} bytes");
    }
    // The header timeout does not cut an idle keep-alive connection: it waits for its next
    // request under the idle timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.send(&request("GET", "/again", "", "")).await;
    assert_eq!(
        client.response().await.expect("a response").text(),
        "GET /again HTTP/1.1"
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// IPv6
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ipv6_listener_endpoint_and_client_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no ::1");
        return;
    }
    let backend =
        RawBackend::start_on("[::1]:0", Arc::new(|head: &str| Answer::Reply(ok(head)))).await;
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let slice = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: edge-v6\n  \
         namespace: {NAMESPACE}\n  labels:\n    kubernetes.io/service-name: edge\n\
         addressType: IPv6\nendpoints:\n  - addresses: [\"::1\"]\n    conditions:\n      \
         ready: true\nports:\n  - port: {}\n    protocol: TCP\n",
        backend.addr.port()
    );
    write_routes(dir.path(), &slice);
    let running = portcullis::start(Settings {
        manifests: vec![dir.path().to_path_buf()],
        http_addr: "[::1]:0".parse().expect("an IPv6 address"),
        https_addr: None,
        admin_addr: None,
        translate: class_options(CLASS),
        proxy: quiet_proxy(),
    })
    .await
    .expect("Portcullis starts on ::1");
    assert!(running.http_addr.is_ipv6());
    let mut client = RawClient::connect(running.http_addr).await;
    client
        .send(&request(
            "GET",
            "/v6",
            "X-Forwarded-For: 2001:db8::7\r\n",
            "",
        ))
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(response.status, 200, "{}", response.head);
    let seen = response.text();
    assert!(
        seen.contains("\r\nX-Forwarded-For: 2001:db8::7, ::1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nX-Real-IP: ::1\r\n"), "{seen}");
    assert!(
        seen.contains(&format!(
            "\r\nX-Forwarded-Port: {}\r\n",
            running.http_addr.port()
        )),
        "{seen}"
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Uploads to a TLS upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn uploads_reach_a_tls_upstream_whole() {
    let pki = support::pki::Pki::new("Edge Test CA");
    let upstream = raw::spawn_tls_counter(pki.server("tls.internal", &[])).await;
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    write_routes(
        dir.path(),
        &endpoint_slices_yaml(NAMESPACE, "edge", None, &[(upstream, true)]),
    );
    let ingress = std::fs::read_to_string(dir.path().join("ingress.yaml")).expect("the Ingress");
    let ingress = ingress.replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    nginx.ingress.kubernetes.io/backend-protocol: HTTPS\n",
        1,
    );
    write_manifest(dir.path(), "ingress.yaml", &ingress);
    let running = start_with(dir.path(), CLASS, quiet_proxy(), false).await;
    let mut client = RawClient::connect(running.http_addr).await;
    for _ in 0..2 {
        let body = "t".repeat(200_000);
        client
            .send(&request("POST", "/", "Content-Length: 200000\r\n", &body))
            .await;
        let response = client.response().await.expect("a response");
        assert_eq!(response.text(), "200000 ", "{}", response.head);
        let chunked = "4000\r\n".to_string()
            + &"c".repeat(0x4000)
            + "\r\n3;e\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n";
        client
            .send(&request(
                "POST",
                "/",
                "Transfer-Encoding: chunked\r\n",
                &chunked,
            ))
            .await;
        let response = client.response().await.expect("a response");
        assert_eq!(response.text(), "16387 x-sum", "{}", response.head);
    }
    running.shutdown().await;
}
