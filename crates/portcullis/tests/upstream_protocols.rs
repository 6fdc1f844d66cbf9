//! `backend-protocol` end to end: HTTPS upstreams with verification off (ingress-nginx's default)
//! and on, and gRPC — unary and bidirectional streaming, with `grpc-status` trailers — over h2c
//! and over TLS (ALPN h2) on the client side, to cleartext and TLS gRPC servers.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{
    endpoint_slice_yaml, ingress_yaml, quiet_proxy, send, send_h2, service_yaml,
    start_with_options, write_manifest, Echoed, IngressPath, IngressRule, TestRequest, NAMESPACE,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A certificate authority for the upstreams' certificates.
struct Pki {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Upstream Test CA");
        let key = rcgen::KeyPair::generate().expect("ca key");
        Pki {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    /// A server configuration for `name`, offering `alpn`.
    fn server(&self, name: &str, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn ca_pem(&self) -> String {
        self.issuer.pem()
    }
}

/// An HTTPS echo server: answers with the request's path and Host as JSON.
async fn spawn_https_echo(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: Request<Incoming>| async move {
                    let echo = Echoed {
                        path: req.uri().to_string(),
                        host: req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                        method: req.method().to_string(),
                        proto: "HTTP/1.1 over TLS".into(),
                        service: "tls-echo".into(),
                        ..Echoed::default()
                    };
                    let body = serde_json::to_vec(&echo).expect("json");
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn backend_yaml(service: &str, addr: SocketAddr) -> String {
    format!(
        "{}---\n{}",
        service_yaml(NAMESPACE, service, 443, None),
        endpoint_slice_yaml(
            NAMESPACE,
            service,
            &format!("{service}-0"),
            None,
            addr,
            true
        )
    )
}

fn annotated(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut lines = String::from("metadata:\n  annotations:\n");
    for (k, v) in annotations {
        lines.push_str(&format!(
            "    nginx.ingress.kubernetes.io/{k}: {}\n",
            serde_json::to_string(v).expect("string")
        ));
    }
    ingress_yaml(
        NAMESPACE,
        name,
        "nginx",
        None,
        &[IngressRule::new(
            Some(host),
            vec![IngressPath::new("/", "Prefix", service, 443)],
        )],
    )
    .replacen("metadata:\n", &lines, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_with_verification_off_and_on() {
    let pki = Pki::new();
    let upstream = spawn_https_echo(pki.server("app.internal", &[])).await;
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let ca = pki
        .ca_pem()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    let manifests = [
        backend_yaml("secure", upstream),
        annotated("unverified", "unverified.example", "secure", &[("backend-protocol", "HTTPS")]),
        annotated(
            "verified",
            "verified.example",
            "secure",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "upstream-ca"),
                ("proxy-ssl-name", "app.internal"),
                ("proxy-ssl-server-name", "on"),
            ],
        ),
        annotated(
            "wrong-name",
            "wrong.example",
            "secure",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "upstream-ca"),
                ("proxy-ssl-name", "other.internal"),
            ],
        ),
        annotated(
            "no-ca",
            "untrusted.example",
            "secure",
            &[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "on")],
        ),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: upstream-ca\n  namespace: {NAMESPACE}\n\
             type: Opaque\nstringData:\n  ca.crt: |\n{ca}"
        ),
    ];
    write_manifest(dir.path(), "all.yaml", &manifests.join("---\n"));
    let running = start_with_options(
        dir.path(),
        translate::Options::nginx_compat(),
        quiet_proxy(),
        false,
    )
    .await;
    let addr = running.http_addr;

    for host in ["unverified.example", "verified.example"] {
        let request = TestRequest::get(host, "/tls/path?q=1");
        for (proto, response) in [
            ("HTTP/1.1", send(addr, &request).await),
            ("HTTP/2", send_h2(addr, &request).await),
        ] {
            let response = response.expect("a response");
            let echo = response.echo().unwrap_or_else(|| {
                panic!("{proto} {host}: {} {}", response.status, response.text())
            });
            assert_eq!(echo.proto, "HTTP/1.1 over TLS", "{proto} {host}");
            assert_eq!(echo.path, "/tls/path?q=1", "{proto} {host}");
            assert_eq!(echo.host, host, "{proto} {host}");
        }
    }
    // A certificate for another name, or no trusted CA, fails verification: 502, not a bypass.
    for host in ["wrong.example", "untrusted.example"] {
        let request = TestRequest::get(host, "/");
        for (proto, response) in [
            ("HTTP/1.1", send(addr, &request).await),
            ("HTTP/2", send_h2(addr, &request).await),
        ] {
            let response = response.expect("a response");
            assert_eq!(
                response.status,
                StatusCode::BAD_GATEWAY,
                "{proto} {host}: {}",
                response.text()
            );
        }
    }
    running.shutdown().await;
}

/// A response (or request) body fed from a channel of frames.
struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// A length-prefixed gRPC message.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn trailers(status: &str, message: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(
        "grpc-status",
        HeaderValue::from_str(status).expect("status"),
    );
    map.insert(
        "grpc-message",
        HeaderValue::from_str(message).expect("message"),
    );
    map
}

/// A gRPC echo server over HTTP/2 (cleartext, or TLS with ALPN h2): every request message comes
/// back as it arrives (prefixed with the request path's last segment), then `grpc-status: 0`.
async fn spawn_grpc(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let grpc = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        == Some("application/grpc")
                        && req.headers().get("te").and_then(|v| v.to_str().ok())
                            == Some("trailers");
                    let method = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let (tx, rx) = mpsc::channel(8);
                    let mut body = req.into_body();
                    tokio::spawn(async move {
                        if !grpc {
                            let _ = tx.send(Frame::trailers(trailers("3", "not gRPC"))).await;
                            return;
                        }
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                                let text = String::from_utf8_lossy(&data[5.min(data.len())..])
                                    .into_owned();
                                let reply = grpc_message(format!("{method}:{text}").as_bytes());
                                if tx.send(Frame::data(reply)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        let _ = tx.send(Frame::trailers(trailers("0", "done"))).await;
                    });
                    let mut response = Response::new(ChannelBody(rx));
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    Ok::<_, Infallible>(response)
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(config) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// An HTTP/2 connection to Portcullis: cleartext (prior knowledge) or TLS with ALPN h2.
async fn h2_client(
    addr: SocketAddr,
    tls_name: Option<&str>,
) -> hyper::client::conn::http2::SendRequest<ChannelBody> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match tls_name {
        None => {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .expect("h2c handshake");
            tokio::spawn(conn);
            sender
        }
        Some(name) => {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            config
                .dangerous()
                .set_certificate_verifier(support::SkipVerify::new());
            config.alpn_protocols = vec![b"h2".to_vec()];
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from(name.to_string()).expect("name"), tcp)
                .await
                .expect("TLS handshake");
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            sender
        }
    }
}

/// One gRPC call: sends `messages`, each after the reply to the one before has arrived (so the
/// call only completes if both directions stream through the proxy), then half-closes.
async fn grpc_call(
    sender: &mut hyper::client::conn::http2::SendRequest<ChannelBody>,
    scheme: &str,
    host: &str,
    method: &str,
    messages: &[&str],
) -> (Vec<String>, HeaderMap) {
    let (tx, rx) = mpsc::channel(8);
    let request = Request::post(format!("{scheme}://{host}/echo.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(ChannelBody(rx))
        .expect("request");
    let call = async {
        let mut tx = Some(tx);
        let first = grpc_message(messages[0].as_bytes());
        tx.as_ref()
            .expect("open")
            .send(Frame::data(first))
            .await
            .expect("send");
        let response = sender.send_request(request).await.expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/grpc"[..])
        );
        let mut body = response.into_body();
        let mut replies = Vec::new();
        loop {
            let frame = body
                .frame()
                .await
                .expect("the call ends with trailers")
                .expect("a frame");
            match frame.into_data() {
                Ok(data) => {
                    replies.push(String::from_utf8_lossy(&data[5..]).into_owned());
                    match messages.get(replies.len()) {
                        Some(next) => {
                            let sending = tx.as_ref().expect("open");
                            sending
                                .send(Frame::data(grpc_message(next.as_bytes())))
                                .await
                                .expect("send");
                        }
                        // Half-close: the server then ends the call with its trailers.
                        None => tx = None,
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return (replies, trailers);
                    }
                }
            }
        }
    };
    tokio::time::timeout(support::REQUEST_TIMEOUT, call)
        .await
        .expect("the call completes in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_calls_over_h2c_and_tls() {
    let pki = Pki::new();
    let plain = spawn_grpc(None).await;
    let secure = spawn_grpc(Some(pki.server("grpc.internal", &[b"h2"]))).await;
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let manifests = [
        backend_yaml("grpc-plain", plain),
        backend_yaml("grpc-tls", secure),
        annotated(
            "plain",
            "grpc.example",
            "grpc-plain",
            &[("backend-protocol", "GRPC")],
        ),
        annotated(
            "tls",
            "grpcs.example",
            "grpc-tls",
            &[("backend-protocol", "GRPCS")],
        ),
    ];
    write_manifest(dir.path(), "all.yaml", &manifests.join("---\n"));
    let running = start_with_options(
        dir.path(),
        translate::Options::nginx_compat(),
        quiet_proxy(),
        true,
    )
    .await;
    let https = running.https_addr.expect("HTTPS listener");

    for (client, addr, scheme, host) in [
        ("h2c", running.http_addr, "http", "grpc.example"),
        ("h2c", running.http_addr, "http", "grpcs.example"),
        ("TLS", https, "https", "grpc.example"),
        ("TLS", https, "https", "grpcs.example"),
    ] {
        let tls_name = (client == "TLS").then_some(host);
        let mut sender = h2_client(addr, tls_name).await;
        let (replies, trailers) = grpc_call(&mut sender, scheme, host, "Unary", &["ping"]).await;
        assert_eq!(replies, ["Unary:ping"], "{client} {host}");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "{client} {host}"
        );
        let (replies, trailers) =
            grpc_call(&mut sender, scheme, host, "Chat", &["one", "two", "three"]).await;
        assert_eq!(
            replies,
            ["Chat:one", "Chat:two", "Chat:three"],
            "{client} {host}"
        );
        assert_eq!(
            trailers.get("grpc-message").map(|v| v.as_bytes()),
            Some(&b"done"[..]),
            "{client} {host}"
        );
    }

    // An HTTP/1.1 client cannot reach an HTTP/2-only backend: a clear 502.
    let response = send(
        running.http_addr,
        &TestRequest::get("grpc.example", "/echo.Echo/Unary"),
    )
    .await
    .expect("a response");
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    running.shutdown().await;
}
