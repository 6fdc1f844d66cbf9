//! What operators watch: `/metrics` in the names ingress-nginx dashboards use, and endpoint
//! health (passive ejection) as `/metrics` and `/config` report it. Real sockets, bounded
//! loops, no sleeps.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use portcullis::Running;
use proxy::health::HealthConfig;
use proxy::ProxyConfig;
use support::{
    connect_http1, deploy, endpoint_slices_yaml, ingress_yaml, quiet_proxy, send, send_h2,
    service_yaml, spawn_simple_echo, start_with, write_manifest, IngressPath, IngressRule,
    ServiceSpec, TestRequest, TestResponse, NAMESPACE,
};

const CLASS: &str = "portcullis";
const PORT: u16 = 80;

async fn get(addr: SocketAddr, host: &str, target: &str) -> TestResponse {
    send(addr, &TestRequest::get(host, target))
        .await
        .unwrap_or_else(|e| panic!("GET http://{host}{target}: {e}"))
}

async fn scrape(running: &Running) -> String {
    let admin = running.admin_addr.expect("admin address");
    let response = get(admin, &admin.to_string(), "/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    let kind = response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = response.text();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    text
}

async fn config(running: &Running) -> serde_json::Value {
    let admin = running.admin_addr.expect("admin address");
    let response = get(admin, &admin.to_string(), "/config").await;
    serde_json::from_slice(&response.body).expect("/config is JSON")
}

/// The metrics once `requests` requests are counted. A request is counted once its response is
/// written, so a client can see its answer a moment before the count moves; bounded retries.
async fn scrape_after(running: &Running, requests: u64) -> String {
    const SCRAPES: usize = 200;
    let mut metrics = String::new();
    for _ in 0..SCRAPES {
        metrics = scrape(running).await;
        let counted = sample(&metrics, "nginx_ingress_controller_requests", &[]).unwrap_or(0.0);
        if counted as u64 >= requests {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{requests} requests are never all counted: {metrics}");
}

/// The sum of the samples of `name` whose labels include every `label="value"` in `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, set) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let wanted = labels
            .iter()
            .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if wanted {
            *found.get_or_insert(0.0) += value.parse::<f64>().expect("a number");
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_status_and_method() {
    let dir = tempfile::tempdir().expect("a folder");
    let _pods = deploy(
        dir.path(),
        NAMESPACE,
        &[ServiceSpec::new("web", PORT), ServiceSpec::new("api", PORT)],
    )
    .await;
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            "shop",
            CLASS,
            None,
            &[IngressRule::new(
                Some("shop.example"),
                vec![
                    IngressPath::new("/", "Prefix", "web", PORT),
                    IngressPath::new("/api", "Prefix", "api", PORT),
                ],
            )],
        ),
    );
    let running = start_with(dir.path(), CLASS, quiet_proxy(), true).await;
    for _ in 0..5 {
        assert_eq!(
            get(running.http_addr, "shop.example", "/").await.status,
            200
        );
    }
    for _ in 0..2 {
        let r = get(running.http_addr, "shop.example", "/api/items").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let over_h2 = send_h2(
        running.http_addr,
        &TestRequest::get("shop.example", "/api/items"),
    )
    .await
    .expect("HTTP/2 request");
    assert_eq!(over_h2.status, StatusCode::OK, "{}", over_h2.text());
    let unknown = get(running.http_addr, "nobody.example", "/").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let metrics = scrape_after(&running, 9).await;
    let requests = |service: &str, status: &str| {
        sample(
            &metrics,
            "nginx_ingress_controller_requests",
            &[
                ("namespace", NAMESPACE),
                ("ingress", "shop"),
                ("service", service),
                ("host", "shop.example"),
                ("method", "GET"),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("web", "200"), Some(5.0), "{metrics}");
    assert_eq!(
        requests("api", "200"),
        Some(3.0),
        "HTTP/1.1 and HTTP/2 are both counted: {metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "nginx_ingress_controller_requests",
            &[("status", "404"), ("ingress", "")]
        ),
        Some(1.0),
        "an unrouted request is counted without a route: {metrics}"
    );
    let durations = |service: &str| {
        sample(
            &metrics,
            "nginx_ingress_controller_request_duration_seconds_count",
            &[("service", service)],
        )
    };
    assert_eq!(durations("web"), Some(5.0), "{metrics}");
    assert_eq!(durations("api"), Some(3.0), "{metrics}");
    let fastest = sample(
        &metrics,
        "nginx_ingress_controller_response_duration_seconds_bucket",
        &[("service", "web"), ("le", "+Inf")],
    );
    assert_eq!(fastest, Some(5.0), "every response is in +Inf: {metrics}");
    let bytes = sample(
        &metrics,
        "nginx_ingress_controller_response_size_sum",
        &[("service", "web")],
    )
    .expect("response sizes");
    assert!(
        bytes > 5.0 * 50.0,
        "responses have heads and bodies: {bytes}"
    );
    assert!(
        sample(&metrics, "nginx_ingress_controller_success", &[]).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "nginx_ingress_controller_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );
    assert!(
        sample(&metrics, "portcullis_connections", &[("listener", "http")]).is_some(),
        "{metrics}"
    );

    // A connection kept open after its request is counted as open.
    let mut held = connect_http1::<http_body_util::Full<bytes::Bytes>>(running.http_addr)
        .await
        .expect("connect");
    let request = TestRequest::get("shop.example", "/")
        .to_hyper()
        .expect("request");
    let answer = held.send_request(request).await.expect("response");
    assert_eq!(answer.status(), StatusCode::OK);
    let metrics = scrape_after(&running, 10).await;
    let open = sample(
        &metrics,
        "portcullis_connections",
        &[("listener", "http"), ("protocol", "http1")],
    );
    assert!(open.is_some_and(|n| n >= 1.0), "{metrics}");
    drop(held);
    running.shutdown().await;
}

/// A port nothing listens on: bound, then released.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_and_reported() {
    const REQUESTS: usize = 30;
    let dir = tempfile::tempdir().expect("a folder");
    let live = spawn_simple_echo("svc", "svc-0").await;
    let dead = closed_port().await;
    let mut text = service_yaml(NAMESPACE, "svc", PORT, None);
    text.push_str("---\n");
    text.push_str(&endpoint_slices_yaml(
        NAMESPACE,
        "svc",
        None,
        &[(live.addr(), true), (dead, true)],
    ));
    write_manifest(dir.path(), "service.yaml", &text);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            "eject",
            CLASS,
            None,
            &[IngressRule::new(
                Some("eject.example"),
                vec![IngressPath::new("/", "Prefix", "svc", PORT)],
            )],
        ),
    );
    // Ejections that outlast the test, so what it sees after one cannot depend on timing.
    let proxy = ProxyConfig {
        health: HealthConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(600),
            max_ejection: Duration::from_secs(600),
        },
        ..quiet_proxy()
    };
    let running = start_with(dir.path(), CLASS, proxy, true).await;
    for i in 0..REQUESTS {
        let response = get(running.http_addr, "eject.example", "/").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "request {i}: a refused connection is retried on the live endpoint: {}",
            response.text()
        );
    }
    let metrics = scrape_after(&running, REQUESTS as u64).await;
    let dead_text = dead.to_string();
    let live_text = live.addr().to_string();
    let healthy = |m: &str, endpoint: &str| {
        sample(m, "portcullis_endpoint_healthy", &[("endpoint", endpoint)])
    };
    assert_eq!(healthy(&metrics, &dead_text), Some(0.0), "{metrics}");
    assert_eq!(healthy(&metrics, &live_text), Some(1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "portcullis_endpoint_ejections_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    let refused =
        sample(&metrics, "portcullis_upstream_connect_errors_total", &[]).expect("connect errors");
    assert_eq!(refused, 3.0, "no attempt after the ejection: {metrics}");
    let retried = sample(&metrics, "portcullis_upstream_retries_total", &[]).expect("retries");
    assert_eq!(retried, 3.0, "each refusal was retried once: {metrics}");

    let config = config(&running).await;
    let reported = config["endpoint_health"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        reported.iter().any(|e| e["address"] == dead_text.as_str()
            && e["usable"] == false
            && e["ejections"] == 1),
        "{:#}",
        config["endpoint_health"]
    );
    assert!(
        reported.iter().all(|e| e["address"] != live_text.as_str()),
        "a healthy endpoint has no entry: {:#}",
        config["endpoint_health"]
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_ejected_all_of_them_are_tried_again() {
    let dir = tempfile::tempdir().expect("a folder");
    let dead = closed_port().await;
    let mut text = service_yaml(NAMESPACE, "svc", PORT, None);
    text.push_str("---\n");
    text.push_str(&endpoint_slices_yaml(
        NAMESPACE,
        "svc",
        None,
        &[(dead, true)],
    ));
    write_manifest(dir.path(), "service.yaml", &text);
    write_manifest(
        dir.path(),
        "ingress.yaml",
        &ingress_yaml(
            NAMESPACE,
            "panic",
            CLASS,
            None,
            &[IngressRule::new(
                Some("panic.example"),
                vec![IngressPath::new("/", "Prefix", "svc", PORT)],
            )],
        ),
    );
    let proxy = ProxyConfig {
        health: HealthConfig {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(600),
            max_ejection: Duration::from_secs(600),
        },
        ..quiet_proxy()
    };
    let running = start_with(dir.path(), CLASS, proxy, true).await;
    for _ in 0..4 {
        let response = get(running.http_addr, "panic.example", "/").await;
        assert_eq!(
            response.status,
            StatusCode::BAD_GATEWAY,
            "{}",
            response.text()
        );
    }
    let metrics = scrape_after(&running, 4).await;
    let refused =
        sample(&metrics, "portcullis_upstream_connect_errors_total", &[]).expect("connect errors");
    assert!(
        refused >= 4.0,
        "with no usable endpoint left each request still tries one: {metrics}"
    );
    running.shutdown().await;
}
