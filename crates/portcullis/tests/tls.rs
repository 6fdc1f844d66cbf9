//! TLS termination end to end: SNI certificate choice, wildcard and default certificates, ALPN,
//! session resumption, certificate rotation under an open connection, HTTP→HTTPS redirects, and
//! real clients (`curl`, `openssl s_client`). Certificates are generated here by a test CA.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use support::pki::{client_config, Leaf, Pki};
use support::{deploy, write_manifest, ServiceSpec};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The subject of the certificate Portcullis generates at start-up for names nothing covers.
const DEFAULT_CERTIFICATE: &str = "Portcullis Default Certificate";

fn ingress_yaml(name: &str, annotations: &str, tls: &str, hosts: &[&str]) -> String {
    let rules: String = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: \"{h}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: portcullis\n{tls}  rules:\n{rules}"
    )
}

struct Site {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    pki: Pki,
    running: portcullis::Running,
    _backends: support::Deployed,
}

impl Site {
    fn https(&self) -> SocketAddr {
        self.running.https_addr.expect("https listener")
    }
}

/// a.example and *.w.example with certificates, plain.example without, off.example with TLS but
/// `ssl-redirect: "false"`, forced.example with `force-ssl-redirect` and no certificate.
async fn start_site(redirect_port: Option<u16>) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let backends = deploy(&path, "default", &[ServiceSpec::new("web", 80)]).await;
    let pki = Pki::new("Portcullis Test CA");
    write_manifest(
        &path,
        "a.yaml",
        &pki.leaf(&["a.example"], "a-v1").secret_yaml("a"),
    );
    write_manifest(
        &path,
        "w.yaml",
        &pki.leaf(&["*.w.example"], "w").secret_yaml("w"),
    );
    write_manifest(
        &path,
        "off.yaml",
        &pki.leaf(&["off.example"], "off").secret_yaml("off"),
    );
    write_manifest(
        &path,
        "ingress.yaml",
        &[
            ingress_yaml(
                "main",
                "",
                "  tls:\n  - secretName: a\n    hosts: [a.example]\n  - secretName: w\n    hosts: [\"*.w.example\"]\n",
                &["a.example", "*.w.example", "plain.example"],
            ),
            ingress_yaml(
                "off",
                "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
                "  tls:\n  - secretName: off\n    hosts: [off.example]\n",
                &["off.example"],
            ),
            ingress_yaml(
                "forced",
                "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"",
                "",
                &["forced.example"],
            ),
        ]
        .join("---\n"),
    );
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let running = portcullis::start(portcullis::Settings {
        manifests: vec![path.clone()],
        http_addr: loopback,
        https_addr: Some(loopback),
        admin_addr: None,
        translate: translate::Options::default(),
        proxy: proxy::ProxyConfig {
            access_log: proxy::AccessLog::Off,
            https_redirect_port: redirect_port,
            ..Default::default()
        },
    })
    .await
    .expect("start");
    Site {
        _dir: dir,
        dir: path,
        pki,
        running,
        _backends: backends,
    }
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config).connect(name, tcp).await
}

fn leaf_common_name(stream: &TlsStream<TcpStream>) -> String {
    let (_, conn) = stream.get_ref();
    let der = &conn.peer_certificates().expect("peer certificates")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    name
}

/// The subject common name of the certificate the server presents for `server_name`, read
/// without verifying it.
async fn served_common_name(addr: SocketAddr, server_name: &str) -> String {
    let mut anything = client_config(RootCertStore::empty(), &[b"http/1.1"]);
    anything
        .dangerous()
        .set_certificate_verifier(support::SkipVerify::new());
    let name = ServerName::try_from(server_name.to_string()).expect("a server name");
    let stream = handshake(addr, Arc::new(anything), name)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for {server_name}: {e}"));
    leaf_common_name(&stream)
}

async fn get_http1(
    stream: TlsStream<TcpStream>,
    host: &str,
) -> (
    StatusCode,
    Bytes,
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let (status, body) = request(&mut sender, host).await;
    (status, body, sender)
}

async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> (StatusCode, Bytes) {
    let req = Request::get("/hello?x=1")
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_exact_wildcard_and_default_certificates() {
    let site = start_site(None).await;
    let verified = Arc::new(client_config(site.pki.roots(), &[b"http/1.1"]));

    let a = handshake(
        site.https(),
        verified.clone(),
        ServerName::try_from("a.example").unwrap(),
    )
    .await
    .expect("a.example verifies against the test CA");
    assert_eq!(leaf_common_name(&a), "a-v1");
    let (status, body, _) = get_http1(a, "a.example").await;
    assert_eq!(status, StatusCode::OK);
    let echo: support::Echoed = serde_json::from_slice(&body).expect("echo json");
    assert_eq!(echo.first("X-Forwarded-Proto"), Some("https"));
    assert_eq!(echo.path, "/hello?x=1");

    let w = handshake(
        site.https(),
        verified.clone(),
        ServerName::try_from("x.w.example").unwrap(),
    )
    .await
    .expect("wildcard certificate verifies");
    assert_eq!(leaf_common_name(&w), "w");

    // Two labels under the wildcard: not covered, so the generated default certificate is served
    // (and verification against the test CA fails).
    assert_eq!(
        served_common_name(site.https(), "x.y.w.example").await,
        DEFAULT_CERTIFICATE
    );
    assert!(handshake(
        site.https(),
        verified,
        ServerName::try_from("x.y.w.example").unwrap()
    )
    .await
    .is_err());

    // No SNI at all (connecting by IP sends none): the default certificate.
    let mut anything = client_config(RootCertStore::empty(), &[b"http/1.1"]);
    anything
        .dangerous()
        .set_certificate_verifier(support::SkipVerify::new());
    let ip = ServerName::IpAddress(site.https().ip().into());
    let s = handshake(site.https(), Arc::new(anything), ip)
        .await
        .expect("handshake without SNI");
    assert_eq!(leaf_common_name(&s), DEFAULT_CERTIFICATE);
    // The Host header, not SNI, picks the route.
    let (status, _, _) = get_http1(s, "plain.example").await;
    assert_eq!(status, StatusCode::OK);
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_http2() {
    let site = start_site(None).await;
    let config = Arc::new(client_config(site.pki.roots(), &[b"h2", b"http/1.1"]));
    let stream = handshake(
        site.https(),
        config,
        ServerName::try_from("a.example").unwrap(),
    )
    .await
    .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://a.example/h2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let echo: support::Echoed = serde_json::from_slice(&body).expect("echo");
    assert_eq!(
        echo.host, "a.example",
        "the backend sees Host from :authority"
    );
    assert_eq!(echo.proto, "HTTP/1.1", "upstream is HTTP/1.1");
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume() {
    let site = start_site(None).await;
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[versions])
                .expect("versions")
                .with_root_certificates(site.pki.roots())
                .with_no_client_auth(),
        );
        let name = ServerName::try_from("a.example").unwrap();
        let first = handshake(site.https(), config.clone(), name.clone())
            .await
            .expect("first");
        // TLS 1.3 tickets arrive after the handshake: complete one request so the client has them.
        let (status, _, sender) = get_http1(first, "a.example").await;
        assert_eq!(status, StatusCode::OK);
        drop(sender);
        let second = handshake(site.https(), config, name).await.expect("second");
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{versions:?}"
        );
    }
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_prefers_aes_128_unless_the_client_leads_with_chacha20() {
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::CipherSuite;
    let site = start_site(None).await;
    let cases = [
        // The ring client's own order puts AES-256 first; the server still picks AES-128.
        (
            rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec(),
            &rustls::version::TLS13,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            &rustls::version::TLS13,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            vec![cs::TLS13_AES_256_GCM_SHA384],
            &rustls::version::TLS13,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec(),
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            &rustls::version::TLS12,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (suites, version, expected) in cases {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..rustls::crypto::ring::default_provider()
        };
        let config = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .expect("versions")
                .with_root_certificates(site.pki.roots())
                .with_no_client_auth(),
        );
        let name = ServerName::try_from("a.example").unwrap();
        let stream = handshake(site.https(), config, name)
            .await
            .expect("handshake");
        let chosen = stream.get_ref().1.negotiated_cipher_suite().expect("suite");
        assert_eq!(chosen.suite(), expected, "{version:?}");
        let (status, _, _) = get_http1(stream, "a.example").await;
        assert_eq!(status, StatusCode::OK);
    }
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_served_on_new_handshakes_without_dropping_old_connections() {
    let mut site = start_site(None).await;
    let config = Arc::new(client_config(site.pki.roots(), &[b"http/1.1"]));
    let name = ServerName::try_from("a.example").unwrap();
    let old = handshake(site.https(), config.clone(), name.clone())
        .await
        .expect("handshake");
    assert_eq!(leaf_common_name(&old), "a-v1");
    let (status, _, mut old_sender) = get_http1(old, "a.example").await;
    assert_eq!(status, StatusCode::OK);

    let renewed = site.pki.leaf(&["a.example"], "a-v2").secret_yaml("a");
    write_manifest(&site.dir, "a.yaml", &renewed);
    tokio::time::timeout(Duration::from_secs(10), site.running.generations.changed())
        .await
        .expect("the change is published within the bound")
        .expect("watcher alive");

    // A new client (no session to resume) performs a full handshake.
    drop(config);
    let config = Arc::new(client_config(site.pki.roots(), &[b"http/1.1"]));
    let fresh = handshake(site.https(), config, name)
        .await
        .expect("handshake");
    assert_eq!(leaf_common_name(&fresh), "a-v2");
    // The connection made before the rotation still works.
    let (status, _) = request(&mut old_sender, "a.example").await;
    assert_eq!(status, StatusCode::OK);
    site.running.shutdown().await;
}

async fn plain_get(addr: SocketAddr, host: &str, target: &str) -> support::TestResponse {
    support::send(addr, &support::TestRequest::get(host, target))
        .await
        .expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https_for_tls_hosts() {
    let site = start_site(None).await;
    let http = site.running.http_addr;
    let r = plain_get(http, "a.example:8080", "/a//b?x=1&y=2").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers["location"], "https://a.example/a//b?x=1&y=2");
    assert!(r.headers.contains_key("server"));
    let r = plain_get(http, "x.w.example", "/").await;
    assert_eq!(r.headers["location"], "https://x.w.example/");
    assert_eq!(
        plain_get(http, "plain.example", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        plain_get(http, "off.example", "/").await.status,
        StatusCode::OK,
        "ssl-redirect: \"false\""
    );
    let r = plain_get(http, "forced.example", "/p?q").await;
    assert_eq!(
        r.status,
        StatusCode::PERMANENT_REDIRECT,
        "force-ssl-redirect"
    );
    assert_eq!(r.headers["location"], "https://forced.example/p?q");
    site.running.shutdown().await;

    let site = start_site(Some(8443)).await;
    let r = plain_get(site.running.http_addr, "a.example", "/x").await;
    assert_eq!(r.headers["location"], "https://a.example:8443/x");
    site.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_secret_falls_back_without_affecting_other_hosts() {
    let site = start_site(None).await;
    write_manifest(
        &site.dir,
        "w.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: w}\ntype: kubernetes.io/tls\nstringData: {tls.crt: not-pem, tls.key: nope}\n",
    );
    let mut generations = site.running.generations.clone();
    tokio::time::timeout(Duration::from_secs(10), generations.changed())
        .await
        .expect("published")
        .expect("watcher alive");
    assert_eq!(
        served_common_name(site.https(), "x.w.example").await,
        DEFAULT_CERTIFICATE,
        "the broken Secret's host gets the default certificate"
    );
    let config = Arc::new(client_config(site.pki.roots(), &[b"http/1.1"]));
    let a = handshake(
        site.https(),
        config,
        ServerName::try_from("a.example").unwrap(),
    )
    .await
    .expect("other hosts keep their certificates");
    let (status, _, _) = get_http1(a, "a.example").await;
    assert_eq!(status, StatusCode::OK);
    site.running.shutdown().await;
}

fn write_ca(site: &Site) -> std::path::PathBuf {
    let path = site.dir.join(".ca.pem");
    std::fs::write(&path, site.pki.issuer.pem()).expect("write ca");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_openssl_clients() {
    let install = "apt-get install curl openssl";
    if !support::tools::programs_ready("curl_and_openssl_clients", &["curl", "openssl"], install) {
        return;
    }
    let site = start_site(None).await;
    let ca = write_ca(&site);
    let port = site.https().port();
    let resolve = format!("a.example:{port}:127.0.0.1");
    let url = format!("https://a.example:{port}/curl");
    let out = tokio::task::spawn_blocking({
        let (ca, resolve, url) = (ca.clone(), resolve.clone(), url.clone());
        move || {
            std::process::Command::new("curl")
                .args(["-sS", "--http2", "--cacert"])
                .arg(&ca)
                .args([
                    "--resolve",
                    &resolve,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_version}",
                    &url,
                ])
                .output()
                .expect("run curl")
        }
    })
    .await
    .expect("join");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 2",
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let connect = format!("127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "x.w.example",
                "-alpn",
                "h2",
                "-CAfile",
            ])
            .arg(&ca)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CN=w") || text.contains("CN = w"), "{text}");
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    site.running.shutdown().await;
}

/// RSA keys (the most common kind in Secrets) are generated with the openssl CLI, since the test
/// CA's library only makes ECDSA and Ed25519 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_certificate_is_served() {
    let install = "apt-get install openssl";
    if !support::tools::programs_ready("rsa_certificate_is_served", &["openssl"], install) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join(".rsa.key");
    let crt = dir.path().join(".rsa.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rsa",
            "-addext",
            "subjectAltName=DNS:rsa.example",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl req");
    assert!(status.success());
    let leaf = Leaf {
        crt: std::fs::read_to_string(&crt).expect("crt"),
        key: std::fs::read_to_string(&key).expect("key"),
    };
    let path = dir.path();
    let backends = deploy(path, "default", &[ServiceSpec::new("web", 80)]).await;
    write_manifest(path, "rsa.yaml", &leaf.secret_yaml("rsa"));
    write_manifest(
        path,
        "ingress.yaml",
        &ingress_yaml(
            "rsa",
            "",
            "  tls:\n  - secretName: rsa\n    hosts: [rsa.example]\n",
            &["rsa.example"],
        ),
    );
    let (_, translation) = support::translate_folder(path, "portcullis");
    assert!(!translation.has_errors(), "{:?}", translation.diagnostics);
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let running = portcullis::start(portcullis::Settings {
        manifests: vec![path.to_path_buf()],
        http_addr: loopback,
        https_addr: Some(loopback),
        admin_addr: None,
        translate: translate::Options::default(),
        proxy: support::quiet_proxy(),
    })
    .await
    .expect("start");
    let mut roots = RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(leaf.crt.as_bytes()).expect("der");
    roots.add(der).expect("root");
    // A self-signed leaf as its own trust anchor is rejected by webpki; check the presented name.
    let mut anything = client_config(roots, &[b"http/1.1"]);
    anything
        .dangerous()
        .set_certificate_verifier(support::SkipVerify::new());
    let stream = handshake(
        running.https_addr.expect("https"),
        Arc::new(anything),
        ServerName::try_from("rsa.example").unwrap(),
    )
    .await
    .expect("handshake with an RSA certificate");
    assert_eq!(leaf_common_name(&stream), "rsa");
    let (status, _, _) = get_http1(stream, "rsa.example").await;
    assert_eq!(status, StatusCode::OK);
    running.shutdown().await;
    drop(backends);
}
