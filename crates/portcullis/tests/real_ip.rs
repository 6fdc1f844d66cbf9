//! The real client address end to end: PROXY protocol v1 and v2 headers on the HTTP and HTTPS
//! listeners (connections without a valid one are closed), and forwarded headers from trusted
//! and untrusted peers; the address found is what allow lists check and what the backend is
//! told in `X-Real-IP` and `X-Forwarded-For`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{ForwardedHeaders, ProxyConfig};
use support::wire::{ingress, site, Listening, Site};
use support::{
    endpoint_slice_yaml, quiet_proxy, read_response, send, send_both, service_yaml,
    spawn_simple_echo, Echo, Echoed, TestRequest, TestResponse, NAMESPACE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any wait: a failure guard, not a measurement.
const GUARD: Duration = Duration::from_secs(10);

/// Portcullis in front of one echo pod: `open.example` for everyone, `allow.example` only for
/// 203.0.113.0/24 and 198.51.100.0/24.
async fn start(proxy: ProxyConfig, https: bool) -> (Site, Echo) {
    start_listening(
        proxy,
        Listening {
            https,
            admin: false,
        },
    )
    .await
}

async fn start_listening(proxy: ProxyConfig, listening: Listening) -> (Site, Echo) {
    let echo = spawn_simple_echo("site", "site-0").await;
    let manifests = vec![
        format!(
            "{}---\n{}",
            service_yaml(NAMESPACE, "site", 80, None),
            endpoint_slice_yaml(NAMESPACE, "site", "site-0", None, echo.addr(), true)
        ),
        ingress("open", "open.example", "site", &[]),
        ingress(
            "secure",
            "secure.example",
            "site",
            &[("force-ssl-redirect", "true")],
        ),
        ingress(
            "allow",
            "allow.example",
            "site",
            &[("allowlist-source-range", "203.0.113.0/24, 198.51.100.0/24")],
        ),
    ];
    (site(&manifests, proxy, listening, Vec::new()).await, echo)
}

fn with_proxy_protocol() -> ProxyConfig {
    ProxyConfig {
        proxy_protocol: Some(Duration::from_secs(5)),
        ..quiet_proxy()
    }
}

/// A version 2 header for TCP over IPv4 or IPv6 (`LOCAL` when `addrs` is `None`).
fn v2(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let mut body = Vec::new();
    let (command, family) = match addrs {
        None => (0x20, 0x00),
        Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
            (0x21, 0x11)
        }
        Some((SocketAddr::V6(s), SocketAddr::V6(d))) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
            (0x21, 0x21)
        }
        Some(_) => panic!("one family for both addresses"),
    };
    out.push(command);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// How a request travels after the preamble.
#[derive(Clone, Copy, Debug)]
enum Over {
    Http1,
    Http2,
    Tls(&'static [u8]),
}

/// Sends `preamble`, then a GET for `host` with `headers` the way `over` says, on one new
/// connection to `addr`.
async fn request(
    addr: SocketAddr,
    preamble: &[u8],
    over: Over,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<TestResponse, String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.write_all(preamble).await.map_err(|e| e.to_string())?;
        match over {
            Over::Http1 => send_on(tcp, false, host, headers).await,
            Over::Http2 => send_on(tcp, true, host, headers).await,
            Over::Tls(alpn) => {
                let config = support::pki::insecure_client_config(&[alpn]);
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| e.to_string())?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                send_on(tls, alpn == b"h2", host, headers).await
            }
        }
    };
    tokio::time::timeout(GUARD, exchange)
        .await
        .map_err(|_| "no response within the guard".to_string())?
}

async fn send_on<S>(
    stream: S,
    h2: bool,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<TestResponse, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Request::get(format!("http://{host}/"));
    if h2 {
        builder = builder.version(Version::HTTP_2);
    } else {
        builder = builder.header("host", host);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(req).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(req).await
    };
    read_response(response.map_err(|e| format!("GET {host}: {e}"))?).await
}

fn echoed(response: &TestResponse) -> Echoed {
    assert_eq!(response.status, 200, "{}", response.text());
    response.echo().expect("an echo reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_headers_name_the_client_on_http_and_https() {
    let (site, _echo) = start(with_proxy_protocol(), true).await;
    let http = site.http();
    let https = site.running.https_addr.expect("an HTTPS listener");
    let four: (SocketAddr, SocketAddr) = (
        "203.0.113.7:40000".parse().unwrap(),
        "192.0.2.1:8443".parse().unwrap(),
    );
    let six: (SocketAddr, SocketAddr) = (
        "[2001:db8::9]:40000".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
    );
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 8443\r\n".to_vec();
    // (listener, preamble, how, the client the backend is told of)
    let cases: Vec<(SocketAddr, Vec<u8>, Over, &str)> = vec![
        (http, v1.clone(), Over::Http1, "203.0.113.7"),
        (http, v1.clone(), Over::Http2, "203.0.113.7"),
        (http, v2(Some(four)), Over::Http1, "203.0.113.7"),
        (http, v2(Some(six)), Over::Http2, "2001:db8::9"),
        (
            http,
            b"PROXY UNKNOWN\r\n".to_vec(),
            Over::Http1,
            "127.0.0.1",
        ),
        (http, v2(None), Over::Http1, "127.0.0.1"),
        (https, v1.clone(), Over::Tls(b"http/1.1"), "203.0.113.7"),
        (https, v2(Some(four)), Over::Tls(b"h2"), "203.0.113.7"),
        (https, v2(Some(six)), Over::Tls(b"http/1.1"), "2001:db8::9"),
    ];
    for (addr, preamble, over, client) in cases {
        let what = format!("{over:?} {:?}", String::from_utf8_lossy(&preamble));
        let response = request(addr, &preamble, over, "open.example", &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let seen = echoed(&response);
        assert_eq!(seen.first("x-real-ip"), Some(client), "{what}");
        assert_eq!(seen.first("x-forwarded-for"), Some(client), "{what}");
        if client == "203.0.113.7" {
            // The port the client reached at the load balancer.
            assert_eq!(seen.first("x-forwarded-port"), Some("8443"), "{what}");
        }
    }
    // The allow list checks the announced address, not the load balancer's.
    let allowed = request(http, &v1, Over::Http1, "allow.example", &[]).await;
    assert_eq!(allowed.expect("an answer").status, 200);
    let other = b"PROXY TCP4 192.0.2.50 192.0.2.1 40000 80\r\n";
    let refused = request(http, other, Over::Http2, "allow.example", &[]).await;
    assert_eq!(refused.expect("an answer").status, 403);
    let local = request(https, &v2(None), Over::Tls(b"h2"), "allow.example", &[]).await;
    assert_eq!(local.expect("an answer").status, 403);
}

/// Whether Portcullis closes a connection that sent `bytes` without answering anything.
async fn closed_without_answer(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    match tokio::time::timeout(GUARD, tcp.read_to_end(&mut got)).await {
        Ok(Ok(_)) => got.is_empty(),
        // A reset is a close too.
        Ok(Err(_)) => got.is_empty(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_header_are_closed() {
    let proxy = ProxyConfig {
        proxy_protocol: Some(Duration::from_millis(300)),
        ..quiet_proxy()
    };
    let listening = Listening {
        https: true,
        admin: true,
    };
    let (site, _echo) = start_listening(proxy, listening).await;
    let http = site.http();
    let https = site.running.https_addr.expect("an HTTPS listener");
    let plain = b"GET / HTTP/1.1\r\nHost: open.example\r\n\r\n";
    for (addr, bytes) in [
        (http, &plain[..]),
        (
            http,
            b"PROXY TCP4 203.0.113.7 nonsense\r\nGET / HTTP/1.1\r\n\r\n",
        ),
        (http, b"PROXY TCP4 300.0.113.7 192.0.2.1 1 80\r\n"),
        (
            http,
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x05\x01\x02\x03\x04\x05",
        ),
        (https, b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03"),
        (https, b"PROXY TCP4 203.0.113.7\r\n"),
        // Nothing at all: closed when the header timeout is over.
        (http, b""),
        (https, b"PROXY TCP4 203.0.113.7 19"),
    ] {
        assert!(
            closed_without_answer(addr, bytes).await,
            "{addr} {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A valid header still gets an answer afterwards.
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n";
    let response = request(http, v1, Over::Http1, "open.example", &[]).await;
    assert_eq!(response.expect("an answer").status, 200);
    // Each refused connection is counted once.
    let admin = site.running.admin_addr.expect("an admin server");
    let metrics = send(admin, &TestRequest::get("localhost", "/metrics"))
        .await
        .expect("metrics")
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_proxy_protocol_refused_total"))
        .unwrap_or_else(|| panic!("a refused-connection count in {metrics}"));
    assert!(line.ends_with(" 8"), "{line}");
}

/// Trusting forwarded headers from `trusted`.
fn forwarded(trusted: &[&str]) -> ProxyConfig {
    ProxyConfig {
        forwarded_headers: Some(ForwardedHeaders {
            trusted: trusted
                .iter()
                .map(|c| c.parse().expect("a network"))
                .collect(),
            header: "x-forwarded-for".into(),
        }),
        ..quiet_proxy()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_trusted_peers_name_the_client() {
    let (site, _echo) = start(forwarded(&["127.0.0.0/8", "10.0.0.0/8"]), false).await;
    let request = TestRequest::get("open.example", "/")
        .header("X-Forwarded-For", "192.0.2.200, 198.51.100.9, 10.1.2.3")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "public.example, inner.example")
        .header("X-Forwarded-Port", "443");
    for (proto, response) in send_both(site.http(), &request).await {
        let seen = echoed(&response);
        assert_eq!(seen.first("x-real-ip"), Some("198.51.100.9"), "{proto}");
        assert_eq!(
            seen.first("x-forwarded-for"),
            Some("192.0.2.200, 198.51.100.9, 10.1.2.3, 127.0.0.1"),
            "{proto}"
        );
        assert_eq!(seen.first("x-forwarded-proto"), Some("https"), "{proto}");
        assert_eq!(
            seen.first("x-forwarded-host"),
            Some("public.example"),
            "{proto}"
        );
        assert_eq!(seen.first("x-forwarded-port"), Some("443"), "{proto}");
    }
    // Without forwarded fields the connection's values are sent as always.
    for (proto, response) in send_both(site.http(), &TestRequest::get("open.example", "/")).await {
        let seen = echoed(&response);
        assert_eq!(seen.first("x-real-ip"), Some("127.0.0.1"), "{proto}");
        assert_eq!(seen.first("x-forwarded-for"), Some("127.0.0.1"), "{proto}");
        assert_eq!(seen.first("x-forwarded-proto"), Some("http"), "{proto}");
        assert_eq!(
            seen.first("x-forwarded-host"),
            Some("open.example"),
            "{proto}"
        );
    }
    // A trusted proxy that terminated TLS is not sent to HTTPS again; one that did not is.
    let offloaded = TestRequest::get("secure.example", "/").header("X-Forwarded-Proto", "https");
    let cleartext = TestRequest::get("secure.example", "/").header("X-Forwarded-Proto", "http");
    for (proto, response) in send_both(site.http(), &offloaded).await {
        assert_eq!(response.status, 200, "{proto}");
    }
    for (proto, response) in send_both(site.http(), &cleartext).await {
        assert_eq!(response.status, 308, "{proto}");
    }
    // The allow list checks the address found.
    let inside = TestRequest::get("allow.example", "/").header("X-Forwarded-For", "198.51.100.9");
    let outside = TestRequest::get("allow.example", "/").header("X-Forwarded-For", "192.0.2.9");
    for (proto, response) in send_both(site.http(), &inside).await {
        assert_eq!(response.status, 200, "{proto}");
    }
    for (proto, response) in send_both(site.http(), &outside).await {
        assert_eq!(response.status, 403, "{proto}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_untrusted_peers_are_not_believed() {
    let (site, _echo) = start(forwarded(&["10.0.0.0/8"]), false).await;
    let request = TestRequest::get("allow.example", "/")
        .header("X-Forwarded-For", "198.51.100.9")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "public.example");
    for (proto, response) in send_both(site.http(), &request).await {
        assert_eq!(
            response.status, 403,
            "{proto}: the peer's own address is checked"
        );
    }
    let offloaded = TestRequest::get("secure.example", "/").header("X-Forwarded-Proto", "https");
    for (proto, response) in send_both(site.http(), &offloaded).await {
        assert_eq!(
            response.status, 308,
            "{proto}: an untrusted peer's scheme is not believed"
        );
    }
    let request = TestRequest::get("open.example", "/")
        .header("X-Forwarded-For", "198.51.100.9")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "public.example");
    for (proto, response) in send_both(site.http(), &request).await {
        let seen = echoed(&response);
        assert_eq!(seen.first("x-real-ip"), Some("127.0.0.1"), "{proto}");
        assert_eq!(
            seen.first("x-forwarded-for"),
            Some("198.51.100.9, 127.0.0.1"),
            "{proto}"
        );
        assert_eq!(seen.first("x-forwarded-proto"), Some("http"), "{proto}");
        assert_eq!(
            seen.first("x-forwarded-host"),
            Some("open.example"),
            "{proto}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_and_forwarded_headers_together() {
    // The PROXY protocol names the peer; a trusted peer's forwarded header names the client.
    let proxy = ProxyConfig {
        proxy_protocol: Some(Duration::from_secs(5)),
        ..forwarded(&["10.0.0.0/8"])
    };
    let (site, _echo) = start(proxy, false).await;
    let trusted = b"PROXY TCP4 10.0.0.5 192.0.2.1 40000 80\r\n";
    let untrusted = b"PROXY TCP4 192.0.2.77 192.0.2.1 40000 80\r\n";
    let xff = [("x-forwarded-for", "203.0.113.8")];
    let response = request(site.http(), trusted, Over::Http1, "open.example", &xff).await;
    let seen = echoed(&response.expect("an answer"));
    assert_eq!(seen.first("x-real-ip"), Some("203.0.113.8"));
    assert_eq!(seen.first("x-forwarded-for"), Some("203.0.113.8, 10.0.0.5"));
    let response = request(site.http(), untrusted, Over::Http2, "open.example", &xff).await;
    let seen = echoed(&response.expect("an answer"));
    assert_eq!(seen.first("x-real-ip"), Some("192.0.2.77"));
    assert_eq!(
        seen.first("x-forwarded-for"),
        Some("203.0.113.8, 192.0.2.77")
    );
}
