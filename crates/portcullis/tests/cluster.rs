//! Cluster mode end to end: Portcullis watching the in-process API server and serving through
//! the proxy — readiness gated on the initial lists, changes of each kind reaching the table,
//! endpoint changes that skip the debounce, and an API server that goes away and comes back.

mod cluster_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cluster_support::{
    cluster_settings, readyz, start, until_served, until_status, wait_table, CONTROLLER, WAIT,
};
use http::StatusCode;
use serde_json::json;
use source::cluster::ClusterConfig;
use support::{send, spawn_simple_echo, TestRequest};
use testkube::objects::{base64, endpoint_slice, ingress, ingress_class, secret, service};
use testkube::ApiServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An app Service `name` in `default`, its endpoints at `addr`, and an Ingress routing `host`.
fn deploy(api: &ApiServer, name: &str, host: &str, addr: SocketAddr) {
    api.apply(service("default", name, addr.port()));
    api.apply(endpoint_slice(
        "default",
        &format!("{name}-1"),
        name,
        &[addr],
    ));
    api.apply(ingress(
        "default",
        name,
        "portcullis",
        Some(host),
        "/",
        name,
        addr.port(),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_until_every_initial_list_has_synced() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let web = spawn_simple_echo("web", "web-0").await;
    api.apply(ingress_class("portcullis", CONTROLLER));
    deploy(&api, "web", "web.example", web.addr());
    api.reject_token("gated");
    let running = start(cluster_settings(&api, dir.path(), "gated")).await;

    // The lists are refused: not ready, and says what it waits for.
    let (status, text) = readyz(&running).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(
        text.contains("waiting for: Ingress, IngressClass, Service, EndpointSlice, Secret"),
        "{text}"
    );
    // A request sent now waits in the listen queue: had it been served, an empty table would
    // have answered 404.
    let mut early = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .expect("connect");
    early
        .write_all(b"GET / HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n")
        .await
        .expect("send a request");
    assert_eq!(running.published.generation(), 0);

    api.accept_token("gated");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, early.read_to_end(&mut answer))
        .await
        .expect("the early request is answered once synced")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"service\": \"web\""), "{answer}");
    let (status, text) = readyz(&running).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("synced: Ingress, IngressClass, Service, EndpointSlice, Secret (type=kubernetes.io/tls)"), "{text}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_service_and_endpoint_changes_reach_the_proxy() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (web, api_echo, other) = (
        spawn_simple_echo("web", "web-0").await,
        spawn_simple_echo("api", "api-0").await,
        spawn_simple_echo("other", "other-0").await,
    );
    api.apply(ingress_class("portcullis", CONTROLLER));
    deploy(&api, "web", "web.example", web.addr());
    let running = start(cluster_settings(&api, dir.path(), "changes")).await;
    until_served(&running, "web.example", "/", "web").await;

    // Ingress added, then changed to another Service, then deleted.
    deploy(&api, "api", "api.example", api_echo.addr());
    until_served(&running, "api.example", "/x", "api").await;
    api.apply(service("default", "other", other.addr().port()));
    api.apply(endpoint_slice(
        "default",
        "other-1",
        "other",
        &[other.addr()],
    ));
    api.apply(ingress(
        "default",
        "api",
        "portcullis",
        Some("api.example"),
        "/",
        "other",
        other.addr().port(),
    ));
    until_served(&running, "api.example", "/x", "other").await;
    api.delete("networking.k8s.io/v1", "Ingress", "default", "api");
    until_status(&running, "api.example", "/x", StatusCode::NOT_FOUND).await;

    // A Service whose port no longer matches the Ingress: no route to the old port.
    api.apply(service("default", "web", 1));
    until_status(
        &running,
        "web.example",
        "/",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    api.apply(service("default", "web", web.addr().port()));
    until_served(&running, "web.example", "/", "web").await;

    // Endpoints moved to another pod.
    api.apply(endpoint_slice("default", "web-1", "web", &[other.addr()]));
    until_served(&running, "web.example", "/", "other").await;
    api.delete("discovery.k8s.io/v1", "EndpointSlice", "default", "web-1");
    until_status(
        &running,
        "web.example",
        "/",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    api.apply(endpoint_slice("default", "web-1", "web", &[web.addr()]));
    until_served(&running, "web.example", "/", "web").await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_class_and_tls_secret_changes_reach_the_table() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let web = spawn_simple_echo("web", "web-0").await;
    api.apply(ingress_class("portcullis", CONTROLLER));
    deploy(&api, "web", "web.example", web.addr());
    let running = start(cluster_settings(&api, dir.path(), "classes")).await;
    until_served(&running, "web.example", "/", "web").await;

    // An IngressClass that stops naming our controller takes its Ingresses out.
    let mut custom = ingress(
        "default",
        "custom",
        "custom",
        Some("custom.example"),
        "/",
        "web",
        web.addr().port(),
    );
    api.apply(ingress_class("custom", CONTROLLER));
    api.apply(custom.clone());
    until_served(&running, "custom.example", "/", "web").await;
    api.apply(ingress_class("custom", "example.com/other"));
    until_status(&running, "custom.example", "/", StatusCode::NOT_FOUND).await;

    // A TLS Secret named in spec.tls reaches the certificate table, and leaves it.
    let cert =
        rcgen::generate_simple_self_signed(vec!["custom.example".to_string()]).expect("cert");
    api.apply(secret(
        "default",
        "custom-tls",
        "kubernetes.io/tls",
        &[
            ("tls.crt", &base64(cert.cert.pem().as_bytes())),
            (
                "tls.key",
                &base64(cert.signing_key.serialize_pem().as_bytes()),
            ),
        ],
    ));
    api.apply(ingress_class("custom", CONTROLLER));
    custom["spec"]["tls"] = json!([{ "hosts": ["custom.example"], "secretName": "custom-tls" }]);
    api.apply(custom);
    wait_table(&running, |t| {
        t.tls.for_server_name("custom.example").is_some()
    })
    .await;
    api.delete("v1", "Secret", "default", "custom-tls");
    wait_table(&running, |t| {
        t.tls.for_server_name("custom.example").is_none()
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_reaches_the_proxy_without_waiting_for_the_debounce() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (
        spawn_simple_echo("old", "old-0").await,
        spawn_simple_echo("new", "new-0").await,
    );
    api.apply(ingress_class("portcullis", CONTROLLER));
    deploy(&api, "web", "web.example", old.addr());
    // A debounce no test waits out: only changes that skip it can arrive.
    let config = ClusterConfig {
        debounce: Duration::from_secs(3600),
        max_delay: Duration::from_secs(3600),
        ..cluster_support::source_config()
    };
    let running = start(portcullis::cluster::ClusterSettings {
        source: config,
        ..cluster_settings(&api, dir.path(), "endpoints")
    })
    .await;
    until_served(&running, "web.example", "/", "old").await;
    api.apply(endpoint_slice("default", "web-1", "web", &[new.addr()]));
    until_served(&running, "web.example", "/", "new").await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_goes_on_while_the_api_server_is_away_and_catches_up_after() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (web, late) = (
        spawn_simple_echo("web", "web-0").await,
        spawn_simple_echo("late", "late-0").await,
    );
    api.apply(ingress_class("portcullis", CONTROLLER));
    deploy(&api, "web", "web.example", web.addr());
    let running = start(cluster_settings(&api, dir.path(), "outage")).await;
    until_served(&running, "web.example", "/", "web").await;

    api.stop().await;
    // Requests go on being served from the last table while the watches retry.
    for _ in 0..5 {
        let r = send(running.http_addr, &TestRequest::get("web.example", "/"))
            .await
            .expect("served");
        assert_eq!(r.served_by(), "web");
    }
    let (status, _) = readyz(&running).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "still ready: the last table is in service"
    );
    // What changed while it was away (with its history compacted) is caught up on return.
    deploy(&api, "late", "late.example", late.addr());
    api.delete("networking.k8s.io/v1", "Ingress", "default", "web");
    api.compact();
    api.restart().await;
    until_served(&running, "late.example", "/", "late").await;
    until_status(&running, "web.example", "/", StatusCode::NOT_FOUND).await;
    running.shutdown().await;
}

/// Runs the `portcullis` binary with `args`; returns its exit code and output.
async fn portcullis(args: Vec<String>) -> (Option<i32>, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
    })
    .await
    .expect("join")
    .expect("run portcullis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_route_read_a_cluster() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    api.apply(ingress_class("portcullis", CONTROLLER));
    deploy(
        &api,
        "web",
        "web.example",
        "10.0.0.1:8080".parse().expect("addr"),
    );
    let kubeconfig = api.kubeconfig(dir.path(), "cli").display().to_string();

    let (code, out) = portcullis(vec![
        "check".into(),
        "--kubeconfig".into(),
        kubeconfig.clone(),
    ])
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 Ingress(es) of our class"), "{out}");
    let (code, out) = portcullis(vec![
        "route".into(),
        "--kubeconfig".into(),
        kubeconfig.clone(),
        "http://web.example/x".into(),
    ])
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("default/web"), "{out}");

    // Manifests and a cluster are alternatives; neither is an error too.
    let (code, out) = portcullis(vec![
        "run".into(),
        "--manifests".into(),
        dir.path().display().to_string(),
        "--kubeconfig".into(),
        kubeconfig,
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(out.contains("alternatives"), "{out}");
    let (code, out) = portcullis(vec!["run".into()]).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("--kubeconfig"), "{out}");
}
