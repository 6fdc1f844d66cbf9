//! Ingresses written for ingress-nginx, served by Portcullis with the same meaning, end to end
//! through the proxy: the course app's manifests (every case of `routes.json`, over HTTP/1.1 and
//! HTTP/2), redirects, CORS, body limits, timeouts, request and response headers, refusals.

mod support;

use std::path::Path;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use support::{
    annotate, deploy, ingress_yaml, nginx_ingress, quiet_proxy, send, send_both, send_h2,
    spawn_http1, start_with_options, write_manifest, IngressPath, IngressRule, ServiceSpec,
    TestRequest, TestResponse, NAMESPACE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT: &str = "client-cluster-ip-service";
const SERVER: &str = "server-cluster-ip-service";

/// `routes.json`: how ingress-nginx routes the course app's requests.
#[derive(Deserialize)]
struct Routes {
    variant_regex_rewrite: Variant,
}

#[derive(Deserialize)]
struct Variant {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    method: String,
    path: String,
    backend: String,
    upstream_path: String,
    #[serde(default)]
    body: Option<String>,
}

fn routes() -> Routes {
    serde_json::from_str(include_str!("data/multi-k8s/routes.json")).expect("routes.json parses")
}

async fn start(dir: &Path) -> portcullis::Running {
    start_with_options(
        dir,
        translate::Options::nginx_compat(),
        quiet_proxy(),
        false,
    )
    .await
}

async fn get(running: &portcullis::Running, host: &str, target: &str) -> TestResponse {
    send(running.http_addr, &TestRequest::get(host, target))
        .await
        .unwrap_or_else(|e| panic!("GET http://{host}{target}: {e}"))
}

fn header<'r>(response: &'r TestResponse, name: &str) -> Option<&'r str> {
    response.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_course_apps_final_manifest_routes_as_under_ingress_nginx() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(
        dir.path(),
        NAMESPACE,
        &[
            ServiceSpec::new(CLIENT, 3000),
            ServiceSpec::new(SERVER, 5000),
        ],
    )
    .await;
    // The repository's example: the course's final Ingress field for field.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/multi/ingress-service.yaml");
    let ingress = std::fs::read_to_string(&example).expect("examples/multi/ingress-service.yaml");
    write_manifest(dir.path(), "ingress-service.yaml", &ingress);
    let running = start(dir.path()).await;

    let cases = routes().variant_regex_rewrite.cases;
    assert_eq!(
        cases.len(),
        11,
        "routes.json holds the 11 cases of the regex variant"
    );
    for case in &cases {
        let method = Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut request = TestRequest::new(method, case.path.clone()).host("multi.example");
        if let Some(body) = &case.body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        let want_service = case.backend.split(':').next().unwrap_or_default();
        for (proto, response) in send_both(running.http_addr, &request).await {
            let echo = response.echo().unwrap_or_else(|| {
                panic!(
                    "{proto} {} {}: not an echo reply: {} {}",
                    case.method,
                    case.path,
                    response.status,
                    response.text()
                )
            });
            assert_eq!(
                echo.service, want_service,
                "{proto} {} {}",
                case.method, case.path
            );
            assert_eq!(
                echo.path, case.upstream_path,
                "{proto} {} {}",
                case.method, case.path
            );
            assert_eq!(echo.method, case.method, "{proto} {}", case.path);
            assert_eq!(
                echo.host, "multi.example",
                "{proto} {}: Host passes unchanged",
                case.path
            );
        }
    }
    running.shutdown().await;
}

/// The course's 2018 Ingress (`rewrite-target: /`, paths `/` and `/api/`, two TLS hosts,
/// `ssl-redirect`), written again here with the same fields.
const COURSE_2018: &str = r#"apiVersion: extensions/v1beta1
kind: Ingress
metadata:
  name: ingress-service
  annotations:
    kubernetes.io/ingress.class: nginx
    nginx.ingress.kubernetes.io/rewrite-target: /
    nginx.ingress.kubernetes.io/ssl-redirect: 'true'
spec:
  tls:
    - hosts:
        - k8s-multi.example
        - www.k8s-multi.example
      secretName: k8s-multi-example
  rules:
    - host: k8s-multi.example
      http:
        paths:
          - path: /
            backend:
              serviceName: client-cluster-ip-service
              servicePort: 3000
          - path: /api/
            backend:
              serviceName: server-cluster-ip-service
              servicePort: 5000
"#;

fn tls_secret_yaml(name: &str, hosts: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_course_apps_2018_manifest_routes_as_ingress_nginx_from_0_22_on() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(
        dir.path(),
        NAMESPACE,
        &[
            ServiceSpec::new(CLIENT, 3000),
            ServiceSpec::new(SERVER, 5000),
        ],
    )
    .await;
    write_manifest(dir.path(), "ingress.yaml", COURSE_2018);
    write_manifest(
        dir.path(),
        "secret.yaml",
        &tls_secret_yaml(
            "k8s-multi-example",
            &["k8s-multi.example", "www.k8s-multi.example"],
        ),
    );
    let running = start_with_options(
        dir.path(),
        translate::Options::nginx_compat(),
        quiet_proxy(),
        true,
    )
    .await;

    // Plain HTTP to a TLS host is redirected, path and query kept.
    let redirected = get(&running, "k8s-multi.example", "/api/values?x=1").await;
    assert_eq!(redirected.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        header(&redirected, "location"),
        Some("https://k8s-multi.example/api/values?x=1")
    );

    // Over HTTPS: `/api/…` is rewritten to `/` (the whole URI is replaced, nginx's rewrite), the
    // catch-all `/` equals its target and is passed unchanged.
    let https = running.https_addr.expect("an HTTPS listener");
    for (target, service, upstream) in [
        ("/api/values/all", SERVER, "/"),
        ("/api/values/all?x=1", SERVER, "/?x=1"),
        ("/", CLIENT, "/"),
        ("/otherpage", CLIENT, "/otherpage"),
    ] {
        let response = https_get(https, "k8s-multi.example", target).await;
        let echo = response
            .echo()
            .unwrap_or_else(|| panic!("{target}: {} {}", response.status, response.text()));
        assert_eq!(
            (echo.service.as_str(), echo.path.as_str()),
            (service, upstream),
            "{target}"
        );
    }
    // Hosts the Ingress does not name get the default backend's 404.
    assert_eq!(
        get(&running, "other.example", "/").await.status,
        StatusCode::NOT_FOUND
    );
    running.shutdown().await;
}

/// A GET over TLS with SNI `host`, not verifying the certificate.
async fn https_get(addr: std::net::SocketAddr, host: &str, target: &str) -> TestResponse {
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::ServerName;
    let config = support::pki::insecure_client_config(&[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(host.to_string()).expect("name");
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let request = TestRequest::get(host, target).to_hyper().expect("request");
    let response = tokio::time::timeout(support::REQUEST_TIMEOUT, sender.send_request(request))
        .await
        .expect("a response in time")
        .expect("a response");
    support::read_response(response).await.expect("a body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_annotations_answer_without_the_backend() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("site", 80)]).await;
    let ingresses = [
        nginx_ingress(
            "moved",
            "moved.example",
            "site",
            80,
            &[("permanent-redirect", "https://new.example/landing?from=old")],
        ),
        nginx_ingress(
            "moved-308",
            "moved308.example",
            "site",
            80,
            &[
                ("permanent-redirect", "https://new.example/"),
                ("permanent-redirect-code", "308"),
            ],
        ),
        nginx_ingress(
            "temporal",
            "temporal.example",
            "site",
            80,
            &[("temporal-redirect", "https://maintenance.example/")],
        ),
        nginx_ingress(
            "root",
            "root.example",
            "site",
            80,
            &[("app-root", "/dashboard")],
        ),
        nginx_ingress(
            "www",
            "shop.example",
            "site",
            80,
            &[("from-to-www-redirect", "true")],
        ),
    ];
    write_manifest(dir.path(), "ingresses.yaml", &ingresses.join("---\n"));
    let running = start(dir.path()).await;

    for (host, target, status, location) in [
        (
            "moved.example",
            "/any/path?q=1",
            301,
            "https://new.example/landing?from=old",
        ),
        ("moved308.example", "/", 308, "https://new.example/"),
        (
            "temporal.example",
            "/x",
            302,
            "https://maintenance.example/",
        ),
        ("root.example", "/", 302, "http://root.example/dashboard"),
        (
            "www.shop.example",
            "/cart?item=3",
            308,
            "http://shop.example/cart?item=3",
        ),
    ] {
        let response = get(&running, host, target).await;
        assert_eq!(
            response.status.as_u16(),
            status,
            "{host}{target}: {}",
            response.text()
        );
        assert_eq!(
            header(&response, "location"),
            Some(location),
            "{host}{target}"
        );
        assert!(
            response.echo().is_none(),
            "{host}{target}: answered by Portcullis"
        );
    }
    // app-root redirects only `/`; other paths reach the backend.
    let deeper = get(&running, "root.example", "/dashboard").await;
    assert_eq!(
        deeper.echo().map(|e| e.path),
        Some("/dashboard".to_string())
    );
    // The host itself is served as usual next to its www twin.
    assert_eq!(get(&running, "shop.example", "/").await.served_by(), "site");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_responses_carry_the_headers() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("api", 80)]).await;
    let ingresses = [
        nginx_ingress(
            "listed",
            "listed.example",
            "api",
            80,
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://app.example, https://*.tenants.example",
                ),
                ("cors-allow-methods", "GET, POST"),
                ("cors-expose-headers", "X-Request-ID"),
                ("cors-max-age", "600"),
            ],
        ),
        nginx_ingress("any", "any.example", "api", 80, &[("enable-cors", "true")]),
    ];
    write_manifest(dir.path(), "ingresses.yaml", &ingresses.join("---\n"));
    let running = start(dir.path()).await;
    let addr = running.http_addr;

    let preflight = TestRequest::new(Method::OPTIONS, "/v1/items")
        .host("listed.example")
        .header("Origin", "https://acme.tenants.example")
        .header("Access-Control-Request-Method", "POST");
    for (proto, response) in send_both(addr, &preflight).await {
        assert_eq!(response.status, StatusCode::NO_CONTENT, "{proto}");
        assert!(response.body.is_empty(), "{proto}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://acme.tenants.example"),
            "{proto}"
        );
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("GET, POST"),
            "{proto}"
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true"),
            "{proto}"
        );
        assert_eq!(
            header(&response, "access-control-max-age"),
            Some("600"),
            "{proto}"
        );
        assert!(
            response.echo().is_none(),
            "{proto}: the backend never sees the preflight"
        );
    }

    // A simple request from an allowed origin is forwarded and gets the headers on its response.
    let simple =
        TestRequest::get("listed.example", "/v1/items").header("Origin", "https://app.example");
    let response = send(addr, &simple).await.expect("GET");
    assert_eq!(response.served_by(), "api");
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&response, "access-control-expose-headers"),
        Some("X-Request-ID")
    );

    // An origin not listed gets no CORS headers, and its OPTIONS goes to the backend.
    let other = TestRequest::new(Method::OPTIONS, "/v1/items")
        .host("listed.example")
        .header("Origin", "https://evil.example");
    let response = send(addr, &other).await.expect("OPTIONS");
    assert_eq!(response.served_by(), "api");
    assert!(header(&response, "access-control-allow-origin").is_none());
    let suffix = TestRequest::get("listed.example", "/")
        .header("Origin", "https://evil.example.app.example");
    assert!(header(
        &send(addr, &suffix).await.expect("GET"),
        "access-control-allow-origin"
    )
    .is_none());

    // `*` (the default) answers every request, with or without an Origin.
    let response = get(&running, "any.example", "/").await;
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_proxy_body_size_get_413_fixed_length_or_chunked() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("upload", 80)]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &nginx_ingress(
            "small",
            "small.example",
            "upload",
            80,
            &[("proxy-body-size", "1k")],
        ),
    );
    let running = start(dir.path()).await;
    let addr = running.http_addr;

    let fits = TestRequest::new(Method::POST, "/up")
        .host("small.example")
        .body(vec![b'a'; 1024]);
    assert_eq!(send(addr, &fits).await.expect("POST").served_by(), "upload");
    let over = TestRequest::new(Method::POST, "/up")
        .host("small.example")
        .body(vec![b'a'; 1025]);
    for (proto, response) in send_both(addr, &over).await {
        assert_eq!(
            response.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{proto}: {}",
            response.text()
        );
        assert_eq!(response.text(), "413 Payload Too Large\n", "{proto}");
    }

    // Chunked: the limit is found while the body streams, before the chunk that crosses it.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request =
        b"POST /up HTTP/1.1\r\nHost: small.example\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"190\r\n");
        request.extend_from_slice(&[b'c'; 400]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(support::REQUEST_TIMEOUT, stream.read_to_end(&mut reply))
        .await
        .expect("the proxy answers and closes")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(reply.contains("\r\nConnection: close\r\n"), "{reply}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_read_timeout_ends_a_slow_exchange_with_504() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    // A backend that never answers.
    let silent = spawn_http1(|_req| async {
        std::future::pending::<()>().await;
        http::Response::new(http_body_util::Full::new(Bytes::new()))
    })
    .await;
    write_manifest(
        dir.path(),
        "service.yaml",
        &format!(
            "{}---\n{}",
            support::service_yaml(NAMESPACE, "silent", 80, None),
            support::endpoint_slice_yaml(NAMESPACE, "silent", "silent-0", None, silent.addr, true)
        ),
    );
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &nginx_ingress(
            "slow",
            "slow.example",
            "silent",
            80,
            &[("proxy-read-timeout", "1")],
        ),
    );
    let running = start(dir.path()).await;
    // The proxy's own read timeout is 60 s; the route's 1 s answers well within the client's 10 s.
    let response = get(&running, "slow.example", "/").await;
    assert_eq!(
        response.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        response.text()
    );
    let response = send_h2(running.http_addr, &TestRequest::get("slow.example", "/"))
        .await
        .expect("a response");
    assert_eq!(response.status, StatusCode::GATEWAY_TIMEOUT);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_vhost_prefix_header_and_custom_response_headers() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("api", 80)]).await;
    let rewritten = annotate(
        &ingress_yaml(
            NAMESPACE,
            "rewritten",
            "nginx",
            None,
            &[IngressRule::new(
                Some("app.example"),
                vec![IngressPath::new(
                    "/api(/|$)(.*)",
                    "ImplementationSpecific",
                    "api",
                    80,
                )],
            )],
        ),
        &[
            ("use-regex", "true"),
            ("rewrite-target", "/$2"),
            ("x-forwarded-prefix", "/api"),
            ("upstream-vhost", "api.internal"),
            ("custom-headers", "security"),
        ],
    );
    let denied = nginx_ingress(
        "denied",
        "denied.example",
        "api",
        80,
        &[("custom-headers", "missing")],
    );
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: security\n  namespace: {NAMESPACE}\n\
         data:\n  X-Frame-Options: DENY\n  Content-Type: text/plain\n"
    );
    write_manifest(
        dir.path(),
        "ingresses.yaml",
        &[rewritten, denied, config_map].join("---\n"),
    );
    let options = translate::Options {
        allowed_response_headers: vec!["X-Frame-Options".into(), "Content-Type".into()],
        ..translate::Options::nginx_compat()
    };
    let running = start_with_options(dir.path(), options, quiet_proxy(), false).await;

    let request = TestRequest::get("app.example", "/api/items/7?full=1");
    for (proto, response) in send_both(running.http_addr, &request).await {
        let echo = response
            .echo()
            .unwrap_or_else(|| panic!("{proto}: {}", response.text()));
        assert_eq!(echo.path, "/items/7?full=1", "{proto}");
        assert_eq!(echo.host, "api.internal", "{proto}: upstream-vhost");
        assert_eq!(
            echo.first("X-Forwarded-Host"),
            Some("app.example"),
            "{proto}"
        );
        assert_eq!(echo.first("X-Forwarded-Prefix"), Some("/api"), "{proto}");
        assert_eq!(
            header(&response, "x-frame-options"),
            Some("DENY"),
            "{proto}"
        );
        // custom-headers replaces the upstream's own field of the same name.
        assert_eq!(
            response.headers.get_all("content-type").iter().count(),
            1,
            "{proto}"
        );
        assert_eq!(
            header(&response, "content-type"),
            Some("text/plain"),
            "{proto}"
        );
    }
    // A location whose custom-headers ConfigMap is missing is denied, not served without them.
    let response = get(&running, "denied.example", "/").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.echo().is_none());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_with_a_snippet_is_not_served_at_all() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("admin", 80)]).await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &nginx_ingress(
            "guarded",
            "admin.example",
            "admin",
            80,
            &[("configuration-snippet", "allow 10.0.0.0/8;\ndeny all;")],
        ),
    );
    let running = start(dir.path()).await;
    // Serving the route without the snippet would open what the snippet closes.
    assert_eq!(
        get(&running, "admin.example", "/").await.status,
        StatusCode::NOT_FOUND
    );
    running.shutdown().await;
    let (_, translation) = support::translate_folder(dir.path(), "nginx");
    assert!(translation.diagnostics.iter().any(|d| {
        d.severity == model::Severity::Error
            && d.field.as_deref()
                == Some("metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]")
            && d.message.contains("never executes or pastes")
    }));
}

#[test]
fn check_reports_the_annotations_in_use_and_route_explains_the_rewrite() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/multi");
    for entry in std::fs::read_dir(&example).expect("examples/multi") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        std::fs::copy(&path, dir.path().join(name)).expect("copy");
    }
    let extra = annotate(
        &ingress_yaml(
            NAMESPACE,
            "extra",
            "nginx",
            None,
            &[IngressRule::new(
                Some("extra.example"),
                vec![IngressPath::new("/", "Prefix", SERVER, 5000)],
            )],
        ),
        &[
            ("rewrite-target", "/"),
            ("configuration-snippet", "return 200;"),
            ("mirror-target", "http://mirror.example"),
            ("made-up", "1"),
        ],
    );
    write_manifest(dir.path(), "extra.yaml", &extra);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .output()
            .expect("portcullis runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let (code, out) = run(&["check", "--nginx-compat", dir_arg]);
    assert_eq!(code, Some(1), "the refused snippet is an error:\n{out}");
    // Columns are aligned to the longest name; compare words.
    let words: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "rewrite-target 2 Ingress(es) partly:",
        "use-regex 1 Ingress(es) partly:",
        "configuration-snippet 1 Ingress(es) refused:",
        "mirror-target 1 Ingress(es) not yet",
        "made-up 1 Ingress(es) unknown:",
        "5 annotation(s): 0 supported, 2 partly, 1 refused, 1 not yet, 1 unknown",
    ] {
        assert!(
            words.iter().any(|w| w.starts_with(line)),
            "missing {line:?} in:\n{out}"
        );
    }
    let (code, out) = run(&[
        "route",
        "--nginx-compat",
        dir_arg,
        "http://multi.example/API/values/all?x=1",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("route: Ingress default/ingress-service spec.rules[0].http.paths[1]"),
        "{out}"
    );
    assert!(
        out.contains("forward: GET /values/all?x=1 to 127.0.0.1:5000 (backend default/server-cluster-ip-service:5000) over HTTP/1.1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_admit_and_refuse_clients_by_address() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let _pods = deploy(dir.path(), NAMESPACE, &[ServiceSpec::new("site", 80)]).await;
    // (host, annotations, status a loopback client gets)
    type Case = (&'static str, &'static [(&'static str, &'static str)], u16);
    let cases: [Case; 7] = [
        ("open.example", &[], 200),
        (
            "inside.example",
            &[("allowlist-source-range", "10.0.0.0/8, 127.0.0.0/8")],
            200,
        ),
        (
            "outside.example",
            &[("allowlist-source-range", "10.0.0.0/8,2001:db8::/32")],
            403,
        ),
        (
            "old-name.example",
            &[("whitelist-source-range", "192.0.2.0/24")],
            403,
        ),
        (
            "denied.example",
            &[("denylist-source-range", "127.0.0.1")],
            403,
        ),
        (
            "deny-wins.example",
            &[
                ("allowlist-source-range", "127.0.0.0/8"),
                ("denylist-source-range", "127.0.0.0/24"),
            ],
            403,
        ),
        (
            "broken.example",
            &[("allowlist-source-range", "127.0.0.0/8,not-a-network")],
            503,
        ),
    ];
    let ingresses: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (host, ann, _))| nginx_ingress(&format!("src-{i}"), host, "site", 80, ann))
        .collect();
    write_manifest(dir.path(), "ingress.yaml", &ingresses.join("---\n"));
    let running = start(dir.path()).await;
    let mut failures = Vec::new();
    for (host, _, status) in cases {
        for (proto, response) in send_both(running.http_addr, &TestRequest::get(host, "/")).await {
            if response.status.as_u16() != status {
                failures.push(format!(
                    "{proto} {host}: expected {status}, got {}",
                    response.status
                ));
            }
            if status == 403 && response.text() != "403 Forbidden\n" {
                failures.push(format!("{proto} {host}: body {:?}", response.text()));
            }
        }
    }
    running.shutdown().await;
    assert!(failures.is_empty(), "{failures:#?}");
}
