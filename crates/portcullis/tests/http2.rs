//! The HTTP/2 path end to end: HTTP/2 clients (the `h2` crate, hyper) talking to Portcullis on
//! loopback, in-test HTTP/1.1 backends behind it. Request bodies, error answers, redirects,
//! pooled connections the upstream closed, cookies, cancelled streams, connection-specific
//! response fields, idle and handshake timeouts, and clients that grant no flow-control window.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proxy::ProxyConfig;
use support::wire::{
    answer, get, h2_body, h2_connect, h2_send, ingress, next, read_head, refused_addr,
    requests_with_status, service_at, site, skip_body, spawn_raw, spawn_raw_on, wait_closed,
    Listening, Paced, H2,
};
use support::{quiet_proxy, send, send_h2, spawn_http1, Server, TestRequest, TestResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Upper bound on any wait: a failure guard, not a measurement.
const GUARD: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// Byte `i` of every test body: a pattern that shows a lost, repeated or reordered chunk.
fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// `len` bytes of the pattern in chunks of `chunk`.
fn pattern_chunks(len: usize, chunk: usize) -> Vec<Bytes> {
    let all: Vec<u8> = (0..len as u64).map(pattern_byte).collect();
    all.chunks(chunk.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

/// A backend that reads the request body and answers what it saw: framing fields, length, and
/// whether every byte matched the pattern.
async fn spawn_body_checker() -> Server {
    spawn_http1(|req: Request<hyper::body::Incoming>| async move {
        let field = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let (content_length, chunked) = (field("content-length"), field("transfer-encoding"));
        let mut body = req.into_body();
        let (mut len, mut intact) = (0u64, true);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                intact = false;
                break;
            };
            if let Ok(data) = frame.into_data() {
                intact &= data
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == pattern_byte(len + i as u64));
                len += data.len() as u64;
            }
        }
        let seen = serde_json::json!({
            "content_length": content_length,
            "transfer_encoding": chunked,
            "len": len,
            "intact": intact,
        });
        Response::new(Full::new(Bytes::from(seen.to_string())))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_an_http1_backend_intact() {
    const BIG: usize = 4 << 20;
    let checker = spawn_body_checker().await;
    let manifests = [
        service_at("bodies", checker.addr, true),
        ingress("bodies", "bodies.example", "bodies", &[]),
    ];
    let proxy = ProxyConfig {
        max_body_size: 16 << 20,
        ..quiet_proxy()
    };
    let site = site(&manifests, proxy, Listening::default(), vec![checker]).await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    for (len, chunk, declared) in [
        (5, 5, true),
        (5, 5, false),
        (BIG, 64 << 10, true),
        (BIG, 64 << 10, false),
    ] {
        let mut request = Request::post("http://bodies.example/upload");
        if declared {
            request = request.header("content-length", len);
        }
        let request = request.body(()).expect("a request");
        let response = h2_send(&client, request, Some(pattern_chunks(len, chunk))).await;
        let (parts, body) = h2_body(response).await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "{len} bytes, declared {declared}"
        );
        let seen: serde_json::Value = serde_json::from_slice(&body).expect("the checker's JSON");
        let what = format!("{len} bytes, Content-Length given: {declared}: {seen}");
        assert_eq!(seen["len"], len as u64, "{what}");
        assert_eq!(seen["intact"], true, "{what}");
        if declared {
            assert_eq!(seen["content_length"], len.to_string(), "{what}");
            assert!(seen["transfer_encoding"].is_null(), "{what}");
        } else {
            assert_eq!(seen["transfer_encoding"], "chunked", "{what}");
            assert!(seen["content_length"].is_null(), "{what}");
        }
    }
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Error answers
// ---------------------------------------------------------------------------------------------

/// The fields that describe a local answer, as both protocols should carry them.
fn answer_fields(r: &TestResponse) -> Vec<(String, Option<String>)> {
    ["server", "content-type", "content-length"]
        .iter()
        .map(|name| {
            let value = r
                .headers
                .get(*name)
                .map(|v| v.to_str().unwrap_or("?").to_string());
            (name.to_string(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_the_same_over_http2_and_http1() {
    let silent = spawn_http1(|_req| async {
        std::future::pending::<()>().await;
        Response::new(Full::new(Bytes::new()))
    })
    .await;
    let manifests = [
        service_at("refused", refused_addr().await, true),
        service_at("empty", silent.addr, false),
        service_at("silent", silent.addr, true),
        ingress("refused", "refused.example", "refused", &[]),
        ingress("empty", "empty.example", "empty", &[]),
        ingress(
            "silent",
            "silent.example",
            "silent",
            &[("proxy-read-timeout", "1")],
        ),
    ];
    let site = site(
        &manifests,
        quiet_proxy(),
        Listening::default(),
        vec![silent],
    )
    .await;
    for (host, status) in [
        ("refused.example", StatusCode::BAD_GATEWAY),
        ("empty.example", StatusCode::SERVICE_UNAVAILABLE),
        ("silent.example", StatusCode::GATEWAY_TIMEOUT),
    ] {
        let request = TestRequest::get(host, "/x");
        let h1 = send(site.http(), &request)
            .await
            .expect("an HTTP/1.1 answer");
        let h2 = send_h2(site.http(), &request)
            .await
            .expect("an HTTP/2 answer");
        assert_eq!(h1.status, status, "HTTP/1.1 {host}: {}", h1.text());
        assert_eq!(h2.status, status, "HTTP/2 {host}: {}", h2.text());
        assert_eq!(h2.body, h1.body, "{host}: the same body");
        assert_eq!(
            answer_fields(&h2),
            answer_fields(&h1),
            "{host}: the same fields"
        );
        assert_eq!(
            h2.headers.get("content-length").map(|v| v.as_bytes()),
            Some(h2.body.len().to_string().as_bytes()),
            "{host}"
        );
        for (proto, r) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
            assert!(
                r.headers.contains_key("date"),
                "{proto} {host}: a Date field"
            );
        }
    }
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_over_http2_name_the_authority() {
    let pki = support::pki::Pki::new("redirect test CA");
    let leaf = pki.leaf(&["secure.example"], "secure.example");
    let secure = ingress("secure", "secure.example", "site", &[]).replacen(
        "spec:\n",
        "spec:\n  tls:\n    - hosts: [secure.example]\n      secretName: secure-tls\n",
        1,
    );
    let manifests = [
        service_at("site", refused_addr().await, true),
        leaf.secret_yaml("secure-tls"),
        secure,
        ingress(
            "moved",
            "moved.example",
            "site",
            &[("permanent-redirect", "https://new.example/landing")],
        ),
    ];
    let site = site(
        &manifests,
        quiet_proxy(),
        Listening {
            https: true,
            ..Listening::default()
        },
        Vec::new(),
    )
    .await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    for (uri, host_field, status, location) in [
        (
            "http://secure.example/a/b?q=1",
            None,
            StatusCode::PERMANENT_REDIRECT,
            "https://secure.example/a/b?q=1",
        ),
        // `:authority` names the request's host, whatever a Host field says.
        (
            "http://secure.example:8080/p",
            Some("moved.example"),
            StatusCode::PERMANENT_REDIRECT,
            "https://secure.example/p",
        ),
        (
            "http://moved.example/any?x=2",
            None,
            StatusCode::MOVED_PERMANENTLY,
            "https://new.example/landing",
        ),
    ] {
        let mut request = Request::get(uri);
        if let Some(host) = host_field {
            request = request.header("host", host);
        }
        let request = request.body(()).expect("a request");
        let (parts, body) = h2_body(h2_send(&client, request, None).await).await;
        assert_eq!(
            parts.status,
            status,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            parts.headers.get("location").and_then(|v| v.to_str().ok()),
            Some(location),
            "{uri}"
        );
    }
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Pooled connections the upstream closed
// ---------------------------------------------------------------------------------------------

/// How long the pooled-connection test leaves a connection idle: past the second after which
/// Portcullis keeps a bodiless request for sending again.
const IDLE_PAST_KEEP_ALIVE: Duration = Duration::from_millis(1100);

/// One exchange: the status and the body as text.
async fn status_and_text(
    client: &H2,
    request: Request<()>,
    body: Option<Vec<Bytes>>,
) -> (StatusCode, String) {
    let (parts, body) = h2_body(h2_send(client, request, body).await).await;
    (parts.status, String::from_utf8_lossy(&body).into_owned())
}

/// Portcullis serving `NAME.example` from `backend` alone (Service and Ingress named `name`).
async fn one_backend_site(name: &str, backend: Server) -> support::wire::Site {
    let manifests = [
        service_at(name, backend.addr, true),
        ingress(name, &format!("{name}.example"), name, &[]),
    ];
    site(
        &manifests,
        quiet_proxy(),
        Listening::default(),
        vec![backend],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_a_pooled_connection_the_upstream_closed_are_retried() {
    // Connection 0 answers once, then closes when the next request arrives, unanswered (the
    // upstream's keep-alive ending just as the request crosses it). Connection 1 answers once
    // and closes right after, while idle. Later connections answer, then close on a POST.
    let backend = spawn_raw(|conn, mut stream| async move {
        let mut buf = Vec::new();
        let mut served = 0;
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            if skip_body(&mut stream, &mut buf, head.content_length())
                .await
                .is_none()
            {
                return;
            }
            let close_now = match conn {
                0 => served == 1,
                _ => head.line.starts_with("POST") && served > 0,
            };
            if close_now || !answer(&mut stream, conn).await {
                return;
            }
            served += 1;
            if conn == 1 {
                return;
            }
        }
    })
    .await;
    let site = one_backend_site("pooled", backend).await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    let fetch = |request, body| status_and_text(&client, request, body);
    let uri = "http://pooled.example/";
    assert_eq!(
        fetch(get(uri), None).await,
        (StatusCode::OK, "conn 0".into())
    );
    // Connection 0 sits in the pool past a second, a keep-alive timeout some upstreams use;
    // the upstream closes it as the next request arrives: sent again, on a fresh connection.
    tokio::time::sleep(IDLE_PAST_KEEP_ALIVE).await;
    assert_eq!(
        fetch(get(uri), None).await,
        (StatusCode::OK, "conn 1".into())
    );
    // Connection 1 was closed by the upstream while it sat in the pool.
    assert_eq!(
        fetch(get(uri), None).await,
        (StatusCode::OK, "conn 2".into())
    );
    // Requests with a body go over connections of their own: the first is answered and its
    // connection (3) pooled.
    let post = || {
        Request::post(uri)
            .header("content-length", "5")
            .body(())
            .expect("a request")
    };
    let hello = || Some(vec![Bytes::from_static(b"hello")]);
    assert_eq!(
        fetch(post(), hello()).await,
        (StatusCode::OK, "conn 3".into())
    );
    // The upstream closes that pooled connection as the next POST arrives: its body has been
    // streamed into the dead connection and is gone, so it is not sent again.
    tokio::time::sleep(IDLE_PAST_KEEP_ALIVE).await;
    let (status, _) = fetch(post(), hello()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // A bodiless request of any method is sent again, as on the HTTP/1.x path: connection 2
    // closes on this one, which goes out again on a fresh connection.
    tokio::time::sleep(IDLE_PAST_KEEP_ALIVE).await;
    let empty_post = Request::post(uri).body(()).expect("a request");
    assert_eq!(
        fetch(empty_post, None).await,
        (StatusCode::OK, "conn 4".into())
    );
    drop(client);
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodiless_request_an_endpoint_drops_unanswered_goes_to_another() {
    // One endpoint reads each request and closes without answering (a pod going away under
    // it); the other answers. Requests without a body are sent again to the other endpoint;
    // one whose body went into the dropped connection is not.
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = dropped.clone();
    let dropper = spawn_raw(move |_, mut stream| {
        let seen = seen.clone();
        async move {
            let mut buf = Vec::new();
            if let Some(head) = read_head(&mut stream, &mut buf).await {
                let _ = skip_body(&mut stream, &mut buf, head.content_length()).await;
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
    .await;
    let answerer = spawn_raw(|conn, mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            if skip_body(&mut stream, &mut buf, head.content_length())
                .await
                .is_none()
                || !answer(&mut stream, conn).await
            {
                return;
            }
        }
    })
    .await;
    let service = format!(
        "{}---\n{}---\n{}",
        support::service_yaml(support::NAMESPACE, "pair", 80, None),
        support::endpoint_slice_yaml(
            support::NAMESPACE,
            "pair",
            "pair-0",
            None,
            dropper.addr,
            true
        ),
        support::endpoint_slice_yaml(
            support::NAMESPACE,
            "pair",
            "pair-1",
            None,
            answerer.addr,
            true
        ),
    );
    let manifests = [service, ingress("pair", "pair.example", "pair", &[])];
    let site = site(
        &manifests,
        quiet_proxy(),
        Listening::default(),
        vec![dropper, answerer],
    )
    .await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    for _ in 0..4 {
        let (status, text) = status_and_text(&client, get("http://pair.example/"), None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.starts_with("conn "), "{text}");
    }
    let dropped_gets = dropped.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        dropped_gets >= 1,
        "no request reached the dropping endpoint"
    );
    // With a body, the request is not sent again once the dropping endpoint has taken it.
    let mut refused = 0;
    for _ in 0..4 {
        let post = Request::post("http://pair.example/")
            .header("content-length", "5")
            .body(())
            .expect("a request");
        let (status, _) =
            status_and_text(&client, post, Some(vec![Bytes::from_static(b"hello")])).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_GATEWAY,
            "{status}"
        );
        refused += usize::from(status == StatusCode::BAD_GATEWAY);
    }
    let dropped_posts = dropped.load(std::sync::atomic::Ordering::SeqCst) - dropped_gets;
    assert_eq!(
        refused, dropped_posts,
        "every POST the dropping endpoint took failed"
    );
    drop(client);
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Cookies
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_fields_are_joined_for_an_http1_backend() {
    let echo = support::spawn_simple_echo("cookies", "cookies-0").await;
    let manifests = [
        service_at("cookies", echo.addr(), true),
        ingress("cookies", "cookies.example", "cookies", &[]),
    ];
    let site = site(&manifests, quiet_proxy(), Listening::default(), Vec::new()).await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    let mut request = get("http://cookies.example/");
    let headers: &mut HeaderMap = request.headers_mut();
    for value in [&b"a=1"[..], b"b=2", b"caf=\xc3\xa9"] {
        headers.append(
            "cookie",
            http::HeaderValue::from_bytes(value).expect("a field value"),
        );
    }
    let (parts, body) = h2_body(h2_send(&client, request, None).await).await;
    assert_eq!(parts.status, StatusCode::OK);
    let echo: support::Echoed = serde_json::from_slice(&body).expect("an echo reply");
    assert_eq!(
        echo.header("cookie"),
        ["a=1; b=2; caf=\u{e9}"],
        "one Cookie field, every cookie in order"
    );
    drop(client);
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Cancelled streams
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_streams_abandon_the_upstream_exchange() {
    // `/stream` sends a head and the start of a long body, `/hold` never answers; both report
    // when Portcullis closes their connection. Anything else is answered at once.
    let (events, mut seen) = mpsc::unbounded_channel::<(usize, &'static str)>();
    let backend = spawn_raw(move |conn, mut stream| {
        let events = events.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut buf).await {
                if head.line.starts_with("GET /stream ") {
                    let start = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
                    let _ = stream.write_all(start.as_bytes()).await;
                    let _ = stream.write_all(&[b'x'; 16 * 1024]).await;
                } else if head.line.starts_with("GET /hold ") {
                    let _ = events.send((conn, "held"));
                } else {
                    if !answer(&mut stream, conn).await {
                        return;
                    }
                    continue;
                }
                wait_closed(&mut stream).await;
                let _ = events.send((conn, "closed"));
                return;
            }
        }
    })
    .await;
    let manifests = [
        service_at("cancel", backend.addr, true),
        ingress("cancel", "cancel.example", "cancel", &[]),
    ];
    let site = site(
        &manifests,
        quiet_proxy(),
        Listening {
            admin: true,
            ..Listening::default()
        },
        vec![backend],
    )
    .await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;

    // Mid-response: the head and the first bytes arrive, then the client resets the stream.
    let mut ready = client.clone().ready().await.expect("ready");
    let (response, mut stream) = ready
        .send_request(get("http://cancel.example/stream"), true)
        .expect("send");
    let response = tokio::time::timeout(GUARD, response)
        .await
        .expect("a head in time")
        .expect("a head");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(GUARD, body.data())
        .await
        .expect("body bytes in time");
    assert!(first.is_some_and(|d| d.is_ok_and(|d| !d.is_empty())));
    stream.send_reset(h2::Reason::CANCEL);
    assert_eq!(
        next(&mut seen).await,
        (0, "closed"),
        "the upstream exchange is abandoned"
    );

    // Before the response: the request reached the backend, which has not answered.
    let mut ready = client.clone().ready().await.expect("ready");
    let (_response, mut stream) = ready
        .send_request(get("http://cancel.example/hold"), true)
        .expect("send");
    assert_eq!(next(&mut seen).await, (1, "held"));
    stream.send_reset(h2::Reason::CANCEL);
    assert_eq!(
        next(&mut seen).await,
        (1, "closed"),
        "the upstream exchange is abandoned"
    );

    // The same client connection goes on, on a fresh upstream connection.
    let (parts, body) = h2_body(h2_send(&client, get("http://cancel.example/"), None).await).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, &b"conn 2"[..]));

    // Both cancelled requests are counted with nginx's 499, the answered one with 200. A
    // request is counted once its response is over, a moment after the client has it: bounded
    // retries.
    let mut counted = (0, 0);
    for _ in 0..200 {
        counted = (
            requests_with_status(&site, "499").await,
            requests_with_status(&site, "200").await,
        );
        if counted.0 >= 2 && counted.1 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counted, (2, 1), "cancelled streams are counted as 499");
    drop(client);
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Connection-specific response fields
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_response_fields_stay_on_the_http1_hop() {
    let backend = spawn_raw(|_conn, mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            let response: &[u8] = if head.line.starts_with("GET /chunked ") {
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                  Transfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n\
                  X-Hop: secret\r\nX-Kept: yes\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\nX-Kept: yes\r\n\r\nhello"
            };
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    })
    .await;
    let site = one_backend_site("hops", backend).await;
    // The h2 client refuses connection-specific fields as a protocol error, so a response
    // arriving at all shows none got through; the checks below say which.
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    for path in ["/chunked", "/close"] {
        let uri = format!("http://hops.example{path}");
        let (parts, body) = h2_body(h2_send(&client, get(&uri), None).await).await;
        assert_eq!(parts.status, StatusCode::OK, "{path}");
        assert_eq!(&body[..], b"hello", "{path}");
        for name in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "proxy-connection",
            "x-hop",
        ] {
            assert!(
                !parts.headers.contains_key(name),
                "{path}: {name} is dropped"
            );
        }
        assert_eq!(
            parts.headers.get("x-kept").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
    }
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Response framings from HTTP/1.1 backends
// ---------------------------------------------------------------------------------------------

/// What the framing backend writes for a request line, in pieces with a pause between them.
fn framed_answer(line: &str, conn: usize) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["GET", "/split"] => vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            b"0123",
            b"4567",
            b"89ab",
        ],
        ["GET", "/chunked"] => vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki",
            b"\r\n5\r\npedia\r",
            b"\n0\r\nX-Trailer: t\r\n\r\n",
        ],
        ["GET", "/close"] => vec![b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the end"],
        ["GET", "/interim"] => vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        ["HEAD", "/length"] => vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"],
        ["GET", "/cut"] => vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."],
        _ => {
            return vec![
                format!("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn {conn}").into_bytes(),
            ]
        }
    };
    pieces.into_iter().map(<[u8]>::to_vec).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_of_an_http1_backend_reaches_an_http2_client() {
    let backend = spawn_raw(|conn, mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            for piece in framed_answer(&head.line, conn) {
                if stream.write_all(&piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if head.line.starts_with("GET /close ") || head.line.starts_with("GET /cut ") {
                return;
            }
        }
    })
    .await;
    let site = one_backend_site("framed", backend).await;
    let (client, _conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    let fetch = |request| async { h2_body(h2_send(&client, request, None).await).await };
    let uri = |path: &str| format!("http://framed.example{path}");

    // A body arriving in pieces after its head; the connection is used again after it.
    let (parts, body) = fetch(get(&uri("/split"))).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"0123456789ab");
    assert_eq!(
        parts.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"12"[..])
    );
    let (_, body) = fetch(get(&uri("/"))).await;
    assert_eq!(&body[..], b"conn 0", "the connection went back to the pool");
    // Chunked framing split anywhere, extension and trailer section included: the data only.
    let (parts, body) = fetch(get(&uri("/chunked"))).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"wikipedia");
    assert!(!parts.headers.contains_key("transfer-encoding"));
    let (_, body) = fetch(get(&uri("/"))).await;
    assert_eq!(
        &body[..],
        b"conn 0",
        "a chunked body leaves the connection reusable"
    );
    // Interim responses are not relayed; the final one is.
    let (parts, body) = fetch(get(&uri("/interim"))).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
    assert!(!parts.headers.contains_key("link"));
    // The answer to HEAD keeps its length and has no body.
    let head = Request::head(uri("/length")).body(()).expect("a request");
    let (parts, body) = fetch(head).await;
    assert_eq!(
        parts.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"1234"[..])
    );
    assert!(body.is_empty());
    // A body delimited by the connection's end.
    let (parts, body) = fetch(get(&uri("/close"))).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"until the end");
    // A body cut short upstream is not passed off as whole: the stream is reset.
    let response = h2_send(&client, get(&uri("/cut")), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut got = Vec::new();
    let mut broke = false;
    while let Some(frame) = tokio::time::timeout(GUARD, body.data())
        .await
        .expect("in time")
    {
        match frame {
            Ok(data) => got.extend_from_slice(&data),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the client learns the body broke off (got {got:?})");
    assert_eq!(&got[..], b"only ten..");
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Idle connections and handshakes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_after_the_idle_timeout() {
    // `/slow` pauses between two parts of its body for longer than the idle timeout: a stream
    // in progress keeps its connection open, however quiet.
    let backend = spawn_http1(|req: Request<hyper::body::Incoming>| async move {
        let slow = req.uri().path() == "/slow";
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for part in [&b"one "[..], b"two ", b"three"] {
                let _ = tx.send(Bytes::from_static(part)).await;
                if slow && part == b"one " {
                    tokio::time::sleep(Duration::from_millis(1600)).await;
                }
            }
        });
        Response::new(Paced(rx))
    })
    .await;
    let manifests = [
        service_at("idle", backend.addr, true),
        ingress("idle", "idle.example", "idle", &[]),
    ];
    let proxy = ProxyConfig {
        client_idle_timeout: Duration::from_secs(1),
        ..quiet_proxy()
    };
    let site = site(&manifests, proxy, Listening::default(), vec![backend]).await;
    let (client, conn) = h2_connect(site.http(), &h2::client::Builder::new()).await;
    let (parts, body) =
        h2_body(h2_send(&client, get("http://idle.example/slow"), None).await).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"one two three", "a long stream is not cut off");
    // Now idle: the server says GOAWAY and closes; the client's connection ends cleanly.
    let ended = tokio::time::timeout(GUARD, conn)
        .await
        .expect("the idle connection is closed within the guard")
        .expect("the connection task");
    assert!(ended.is_ok(), "a graceful close: {ended:?}");
    // A new connection is served as usual.
    let fresh = send_h2(site.http(), &TestRequest::get("idle.example", "/"))
        .await
        .expect("a fresh connection is served");
    assert_eq!(fresh.body, Bytes::from_static(b"one two three"));
    drop(client);
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_connecting_to_https_is_closed_after_the_handshake_timeout() {
    let proxy = ProxyConfig {
        tls_handshake_timeout: Duration::from_secs(1),
        ..quiet_proxy()
    };
    let https = Listening {
        https: true,
        ..Listening::default()
    };
    let site = site(
        &[ingress("tls", "tls.example", "none", &[])],
        proxy,
        https,
        Vec::new(),
    )
    .await;
    let https = site.running.https_addr.expect("an HTTPS listener");
    let mut tcp = TcpStream::connect(https).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(GUARD, tcp.read(&mut byte))
        .await
        .expect("the server closes the connection within the guard");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "nothing is sent to a client that sent nothing: {read:?}"
    );
    site.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Clients that grant no flow-control window
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_granting_no_window_holds_bounded_memory_and_releases_the_upstream() {
    const BODY: u64 = 64 << 20;
    const BOUND: u64 = 8 << 20;
    // A backend with small socket buffers that writes a large body as fast as it is taken,
    // and reports how much it wrote once its connection is closed.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
    socket
        .bind("127.0.0.1:0".parse().expect("loopback"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let (done, mut written) = mpsc::unbounded_channel::<u64>();
    let backend = spawn_raw_on(listener, move |conn, mut stream| {
        let done = done.clone();
        async move {
            let mut buf = Vec::new();
            let Some(head) = read_head(&mut stream, &mut buf).await else {
                return;
            };
            if !head.line.starts_with("GET /big ") {
                let _ = answer(&mut stream, conn).await;
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
            let chunk = vec![b'z'; 64 * 1024];
            let mut total = 0u64;
            if stream.write_all(head.as_bytes()).await.is_ok() {
                while total < BODY && stream.write_all(&chunk).await.is_ok() {
                    total += chunk.len() as u64;
                }
            }
            let _ = done.send(total);
        }
    })
    .await;
    let manifests = [
        service_at("stall", backend.addr, true),
        ingress("stall", "stall.example", "stall", &[]),
    ];
    let proxy = ProxyConfig {
        body_idle_timeout: Duration::from_secs(1),
        response_header_timeout: Duration::from_secs(1),
        ..quiet_proxy()
    };
    let site = site(&manifests, proxy, Listening::default(), vec![backend]).await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (client, _conn) = h2_connect(site.http(), &builder).await;
    let response = h2_send(&client, get("http://stall.example/big"), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The client reads nothing and grants no window. The upstream is cut off once nothing has
    // moved for the body idle timeout, having written only what the buffers on the way hold.
    let total = tokio::time::timeout(GUARD, written.recv())
        .await
        .expect("the upstream connection is released within the guard")
        .expect("the backend reports");
    assert!(
        total < BOUND,
        "Portcullis buffered {total} bytes for a client that reads nothing"
    );
    // Others are served as usual.
    let fresh = send_h2(site.http(), &TestRequest::get("stall.example", "/"))
        .await
        .expect("another client is served");
    assert_eq!(fresh.body, Bytes::from_static(b"conn 1"));
    drop((response, client));
    site.running.shutdown().await;
}
