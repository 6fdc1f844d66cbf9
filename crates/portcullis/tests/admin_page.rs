//! The admin page as an operator sees it: headless Chromium loads `/` on the admin port and the
//! page draws routes, endpoint health, certificates and diagnostics from `/status.json`, shows
//! hostile names as text, and follows a published change and an ejection without a reload. Also
//! `/status.json`'s request rates, the admin endpoints that were there before the page, and the
//! Grafana dashboard in `grafana/`, whose every metric must be one a running Portcullis exports.
//!
//! The browser test needs the Debian packages `chromium` and `chromium-driver`. Without them a
//! local run prints `skipped: …`; under CI (`CI` set) a missing browser fails the test.

mod support;
mod webdriver;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{header, StatusCode};
use portcullis::Running;
use proxy::health::HealthConfig;
use proxy::ProxyConfig;
use serde_json::{json, Value};
use support::pki::Pki;
use support::{
    change_and_wait, endpoint_slices_yaml, ingress_yaml, quiet_proxy, routed_endpoints, send,
    service_yaml, spawn_simple_echo, start_with, write_manifest, Echo, IngressPath, IngressRule,
    TestRequest, TestResponse, NAMESPACE,
};
use webdriver::Browser;

const CLASS: &str = "portcullis";
const PORT: u16 = 80;
/// An Ingress name that is markup: it must show as these characters, not as an image.
const HOSTILE_NAME: &str = "<img src=x onerror=window.pwned=1>";
/// A host that is a script: refused by translation, and quoted in the diagnostic.
const HOSTILE_HOST: &str = "<script>window.pwned=2</script>";

async fn get(addr: SocketAddr, target: &str) -> TestResponse {
    send(addr, &TestRequest::get(addr.to_string(), target))
        .await
        .unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

async fn get_host(running: &Running, host: &str, target: &str) -> TestResponse {
    send(running.http_addr, &TestRequest::get(host, target))
        .await
        .unwrap_or_else(|e| panic!("GET http://{host}{target}: {e}"))
}

async fn status_json(running: &Running) -> Value {
    let admin = running.admin_addr.expect("admin address");
    let response = get(admin, "/status.json").await;
    assert_eq!(response.status, StatusCode::OK);
    serde_json::from_slice(&response.body).expect("/status.json is JSON")
}

/// A `kubernetes.io/tls` Secret in the test namespace.
fn secret_yaml(name: &str, crt: &str, key: &str) -> String {
    let indent = |t: &str| {
        t.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(crt),
        indent(key)
    )
}

/// A certificate for `host` that expired in 2020.
fn expired_secret(pki: &Pki, name: &str, host: &str) -> String {
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &pki.issuer).expect("certificate");
    secret_yaml(name, &cert.pem(), &key.serialize_pem())
}

/// An Ingress with one `Prefix` `/` rule per host to `web`, and TLS for `tls_host` from `secret`.
fn tls_ingress(name: &str, host: &str, extra: Vec<IngressPath>, secret: &str) -> String {
    let mut paths = vec![IngressPath::new("/", "Prefix", "web", PORT)];
    paths.extend(extra);
    let mut text = ingress_yaml(
        NAMESPACE,
        name,
        CLASS,
        None,
        &[IngressRule::new(Some(host), paths)],
    );
    text.push_str(&format!(
        "  tls:\n    - hosts: [\"{host}\"]\n      secretName: {secret}\n"
    ));
    text
}

fn web_service(endpoints: &[SocketAddr]) -> String {
    let ready: Vec<(SocketAddr, bool)> = endpoints.iter().map(|a| (*a, true)).collect();
    format!(
        "{}---\n{}",
        service_yaml(NAMESPACE, "web", PORT, None),
        endpoint_slices_yaml(NAMESPACE, "web", None, &ready)
    )
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address")
}

/// The manifests of the scenario: `web` with one live endpoint, `shop.example` (TLS, a valid
/// certificate, `/` and `/api`), `old.example` (TLS, an expired certificate), and an Ingress whose
/// name is markup with a second rule whose host is a script.
async fn write_scenario(dir: &Path) -> Echo {
    let live = spawn_simple_echo("web", "web-0").await;
    write_manifest(dir, "service-web.yaml", &web_service(&[live.addr()]));
    let pki = Pki::new("admin page test CA");
    let shop = pki.leaf(&["shop.example"], "shop.example");
    write_manifest(
        dir,
        "secrets.yaml",
        &format!(
            "{}---\n{}",
            secret_yaml("shop-tls", &shop.crt, &shop.key),
            expired_secret(&pki, "old-tls", "old.example")
        ),
    );
    write_manifest(
        dir,
        "shop.yaml",
        &tls_ingress(
            "shop",
            "shop.example",
            vec![IngressPath::new("/api", "Exact", "web", PORT)],
            "shop-tls",
        ),
    );
    write_manifest(
        dir,
        "old.yaml",
        &tls_ingress("old", "old.example", Vec::new(), "old-tls"),
    );
    write_manifest(
        dir,
        "hostile.yaml",
        &ingress_yaml(
            NAMESPACE,
            HOSTILE_NAME,
            CLASS,
            None,
            &[
                IngressRule::new(
                    Some("evil.example"),
                    vec![IngressPath::new("/x", "Prefix", "web", PORT)],
                ),
                IngressRule::new(
                    Some(HOSTILE_HOST),
                    vec![IngressPath::new("/", "Prefix", "web", PORT)],
                ),
            ],
        ),
    );
    live
}

/// Ejections that outlast the test after a single failure, so what the page shows after one
/// cannot depend on timing.
fn ejecting_proxy() -> ProxyConfig {
    ProxyConfig {
        health: HealthConfig {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(600),
            max_ejection: Duration::from_secs(600),
        },
        ..quiet_proxy()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_shows_the_table_and_follows_changes() {
    let test = "admin_page_shows_the_table_and_follows_changes";
    let tools = [webdriver::CHROMIUM, webdriver::CHROMEDRIVER];
    if !support::tools::files_ready(test, &tools, webdriver::INSTALL) {
        return;
    }
    let dir = tempfile::tempdir().expect("a folder");
    let live = write_scenario(dir.path()).await;
    let running = start_with(dir.path(), CLASS, ejecting_proxy(), true).await;
    let admin = running.admin_addr.expect("admin address");
    let browser = Browser::start().await;
    let session = browser.session.clone();
    let scenario = tokio::spawn(async move {
        let mut running = running;
        session.navigate(&format!("http://{admin}/")).await;
        shows_the_table(&session, live.addr()).await;
        shows_hostile_names_as_text(&session).await;
        follows_a_change_and_an_ejection(&session, &mut running, dir.path(), live.addr()).await;
        running.shutdown().await;
    })
    .await;
    if let Err(err) = scenario {
        browser.print_log_tail();
        browser.close().await;
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("browser scenario did not finish: {err}");
    }
    browser.close().await;
}

async fn shows_the_table(session: &webdriver::Session, live: SocketAddr) {
    let routes = session
        .wait_for_text("#routes tbody", |t| {
            t.contains("shop.example") && t.contains("/api") && t.contains("evil.example")
        })
        .await;
    assert!(routes.contains("Exact"), "{routes}");
    assert!(routes.contains("default/web:80"), "{routes}");
    let endpoint = format!("#backends [data-endpoint=\"{live}\"]");
    let text = session
        .wait_for_text(&endpoint, |t| t.contains("usable"))
        .await;
    assert!(text.contains(&live.to_string()), "{text}");
    let certificates = session
        .wait_for_text("#certificates tbody", |t| {
            t.contains("shop.example") && t.contains("old.example")
        })
        .await;
    assert!(certificates.contains("default/shop-tls"), "{certificates}");
    let expiring = session.text_of("#certificates tr.expiring").await;
    let expiring = expiring.expect("the expired certificate is highlighted");
    assert!(
        expiring.contains("old.example") && expiring.contains("expired"),
        "{expiring}"
    );
    let highlighted = session
        .execute("return document.querySelectorAll('#certificates tr.expiring').length")
        .await;
    assert_eq!(
        highlighted,
        json!(1),
        "only the expired one: {certificates}"
    );
    let diagnostics = session
        .text_of("#diagnostics tbody")
        .await
        .expect("diagnostics");
    assert!(
        diagnostics.contains("error") && diagnostics.contains("certificate has expired"),
        "{diagnostics}"
    );
}

async fn shows_hostile_names_as_text(session: &webdriver::Session) {
    let routes = session.text_of("#routes tbody").await.expect("routes");
    assert!(
        routes.contains(HOSTILE_NAME),
        "the Ingress name is shown as written: {routes}"
    );
    let diagnostics = session
        .wait_for_text("#diagnostics tbody", |t| t.contains(HOSTILE_HOST))
        .await;
    assert!(diagnostics.contains("spec.rules[1].host"), "{diagnostics}");
    let found = session
        .execute(
            "return { pwned: typeof window.pwned, \
                      injected: document.querySelectorAll('main img, main script').length }",
        )
        .await;
    assert_eq!(
        found,
        json!({ "pwned": "undefined", "injected": 0 }),
        "markup from a manifest never becomes elements or runs"
    );
}

async fn follows_a_change_and_an_ejection(
    session: &webdriver::Session,
    running: &mut Running,
    dir: &Path,
    live: SocketAddr,
) {
    // Survives as long as the page is not loaded again.
    session.execute("window.sameDocument = true").await;
    let generation: u64 = session
        .execute("return Number(document.body.dataset.generation)")
        .await
        .as_u64()
        .expect("the page shows the generation");
    let dead = closed_port().await;
    change_and_wait(
        running,
        dir,
        "service-web.yaml",
        &web_service(&[live, dead]),
        |table| routed_endpoints(table, "shop.example", "/").contains(&dead),
    )
    .await;
    let endpoint = format!("#backends [data-endpoint=\"{dead}\"]");
    session
        .wait_for_text(&endpoint, |t| t.contains("usable"))
        .await;
    let now: u64 = session
        .execute("return Number(document.body.dataset.generation)")
        .await
        .as_u64()
        .expect("generation");
    assert!(
        now > generation,
        "the page shows the new table ({generation} → {now})"
    );
    // (A host without TLS: the others redirect plain HTTP.) Round robin over two endpoints: within four requests one goes to the closed port, fails
    // once (and is retried on the live one) and ejects it.
    for _ in 0..4 {
        let r = get_host(running, "evil.example", "/x").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let ejected = session
        .wait_for_text(&endpoint, |t| t.contains("ejected"))
        .await;
    assert!(ejected.contains(&dead.to_string()), "{ejected}");
    let still = session
        .text_of(&format!("#backends [data-endpoint=\"{live}\"]"))
        .await
        .expect("the live endpoint");
    assert!(still.contains("usable"), "{still}");
    assert_eq!(
        session.execute("return window.sameDocument === true").await,
        json!(true),
        "the page updated itself without a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_rates_and_the_other_endpoints_are_unchanged() {
    let dir = tempfile::tempdir().expect("a folder");
    let _live = write_scenario(dir.path()).await;
    let running = start_with(dir.path(), CLASS, quiet_proxy(), true).await;
    let admin = running.admin_addr.expect("admin address");

    let page = get(admin, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    let header_of = |r: &TestResponse, name: header::HeaderName| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header_of(&page, header::CONTENT_TYPE).starts_with("text/html"));
    let policy = header_of(&page, header::CONTENT_SECURITY_POLICY);
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(page.text().contains("<title>Portcullis</title>"));
    assert_eq!(get(admin, "/healthz").await.text(), "ok\n");
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(ready.text().starts_with("ready\n"), "{}", ready.text());
    let config: Value = serde_json::from_slice(&get(admin, "/config").await.body).expect("JSON");
    assert!(
        config["routes"].as_array().is_some_and(|r| !r.is_empty()),
        "{config}"
    );
    assert!(get(admin, "/metrics").await.text().ends_with("# EOF\n"));
    assert_eq!(get(admin, "/nothing").await.status, StatusCode::NOT_FOUND);

    let first = status_json(&running).await;
    let shop = first["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["host"] == "shop.example"))
        .unwrap_or_else(|| panic!("shop.example is listed: {first:#}"));
    let paths: Vec<&str> = shop["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["path"].as_str())
        .collect();
    assert_eq!(paths, ["/api", "/"], "longest path first: {shop:#}");
    let certs = first["certificates"].as_array().expect("certificates");
    let old = certs
        .iter()
        .find(|c| c["source"] == "default/old-tls")
        .unwrap_or_else(|| panic!("{certs:?}"));
    assert!(old["days_left"].as_i64().is_some_and(|d| d < 0) && old["expiring"] == true);

    // The first status took a sample; requests made now show in the rates of a later one.
    for _ in 0..10 {
        assert_eq!(get_host(&running, "evil.example", "/x").await.status, 200);
    }
    assert_eq!(get_host(&running, "nobody.example", "/").await.status, 404);
    let web = wait_for_rate(&running).await;
    assert_eq!(web["rate"]["errors"], json!(0.0), "{web:#}");
    running.shutdown().await;
}

/// The `default/web:80` backend once the status shows requests per second for it.
async fn wait_for_rate(running: &Running) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_json(running).await;
        let web = status["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == "default/web:80"))
            .cloned()
            .unwrap_or_else(|| panic!("default/web:80 is listed: {status:#}"));
        if web["rate"]["requests"].as_f64().is_some_and(|r| r > 0.0) {
            assert!(status["rate_window_seconds"]
                .as_f64()
                .is_some_and(|w| w >= 5.0));
            let total = status["rate"]["requests"].as_f64().unwrap_or_default();
            assert!(total >= web["rate"]["requests"].as_f64().unwrap_or_default());
            return web;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request rate within 30 s: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The metric families a scrape declares, each with the names its samples carry: `_total` for
/// counters; `_bucket`, `_sum`, `_count` for histograms; the family's name otherwise.
fn exported_families(metrics: &str) -> BTreeMap<String, Vec<String>> {
    let mut families = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        let names = match kind {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            _ => vec![name.to_string()],
        };
        families.insert(name.to_string(), names);
    }
    families
}

/// The metric names in a PromQL expression: identifiers outside string literals that start like
/// Portcullis's metrics (functions, keywords, labels and `$variables` do not).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_string = false;
    let mut previous = ' ';
    for c in expr.chars().chain(std::iter::once(' ')) {
        if in_string {
            in_string = !(c == '"' && previous != '\\');
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' {
            word.push(c);
        } else {
            let is_metric =
                word.starts_with("nginx_ingress_controller_") || word.starts_with("portcullis_");
            if is_metric {
                out.push(std::mem::take(&mut word));
            }
            word.clear();
        }
        previous = c;
    }
    out
}

/// Every query in the dashboard: panel targets (rows included) and template variables.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.extend(target["expr"].as_str().map(str::to_string));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.extend(variable["definition"].as_str().map(str::to_string));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_uses_only_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana/portcullis.json");
    let text = std::fs::read_to_string(&path).expect("grafana/portcullis.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert!(
        !text.contains("\"uid\": \"prometheus\""),
        "panels use the ${{DS_PROMETHEUS}} input"
    );

    let dir = tempfile::tempdir().expect("a folder");
    let _live = write_scenario(dir.path()).await;
    let running = start_with(dir.path(), CLASS, quiet_proxy(), true).await;
    assert_eq!(get_host(&running, "evil.example", "/x").await.status, 200);
    let admin = running.admin_addr.expect("admin address");
    let families = exported_families(&get(admin, "/metrics").await.text());
    let exported: BTreeSet<&str> = families.values().flatten().map(String::as_str).collect();
    running.shutdown().await;
    assert!(
        exported.contains("nginx_ingress_controller_requests")
            && exported.contains("nginx_ingress_controller_request_duration_seconds_bucket")
            && exported.contains("portcullis_endpoint_ejections_total"),
        "{exported:?}"
    );

    let queries = queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metrics_in(query);
        assert!(
            !names.is_empty(),
            "a query over no Portcullis metric: {query}"
        );
        for name in names {
            assert!(
                exported.contains(name.as_str()),
                "the dashboard queries {name}, which Portcullis does not export: {query}"
            );
            used.insert(name);
        }
    }
    // Every family has a panel: a new metric comes with one.
    for (family, names) in &families {
        assert!(
            names.iter().any(|n| used.contains(n)),
            "no panel shows {family} ({names:?})"
        );
    }
}

#[test]
fn metric_names_are_found_outside_strings_and_variables() {
    let expr = "histogram_quantile(0.95, sum by (le) (rate(\
                nginx_ingress_controller_request_duration_seconds_bucket\
                {namespace=~\"$namespace\", ingress=\"portcullis_x\"}[$__rate_interval]))) \
                / portcullis_connections";
    assert_eq!(
        metrics_in(expr),
        [
            "nginx_ingress_controller_request_duration_seconds_bucket",
            "portcullis_connections"
        ]
    );
    let scrape = "# TYPE a counter\n# TYPE b histogram\n# TYPE c gauge\n# TYPE d unknown\n";
    let names: Vec<String> = exported_families(scrape).into_values().flatten().collect();
    assert_eq!(names, ["a_total", "b_bucket", "b_sum", "b_count", "c", "d"]);
}
