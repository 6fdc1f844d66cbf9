//! Which endpoint serves a request, end to end over HTTP/1.1 and HTTP/2: session affinity by
//! cookie (both modes), `upstream-hash-by`, and `load-balance: ewma`, against a Service with
//! several echo pods.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use support::{
    deploy, nginx_ingress, quiet_proxy, send_both, start_with_options, write_manifest, ServiceSpec,
    TestRequest, NAMESPACE,
};

const PODS: usize = 4;

async fn start(dir: &Path) -> portcullis::Running {
    start_with_options(
        dir,
        translate::Options::nginx_compat(),
        quiet_proxy(),
        false,
    )
    .await
}

/// Deploys `web` with four pods and one Ingress per `(host, annotations)`.
async fn serve(
    dir: &Path,
    hosts: &[(&str, &[(&str, &str)])],
) -> (support::Deployed, portcullis::Running) {
    let mut spec = ServiceSpec::new("web", 80);
    spec.replicas = PODS;
    let pods = deploy(dir, NAMESPACE, &[spec]).await;
    let ingresses: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, (host, ann))| nginx_ingress(&format!("bal-{i}"), host, "web", 80, ann))
        .collect();
    write_manifest(dir, "ingress.yaml", &ingresses.join("---\n"));
    (pods, start(dir).await)
}

/// The pod that answered.
fn pod_of(response: &support::TestResponse) -> String {
    response
        .echo()
        .map_or_else(|| format!("(status {})", response.status), |e| e.pod)
}

/// The `name=value` part of a `Set-Cookie` field.
fn crumb(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_cookie_keeps_a_client_on_one_pod() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let balanced: &[(&str, &str)] = &[("affinity", "cookie")];
    let persistent: &[(&str, &str)] = &[
        ("affinity", "cookie"),
        ("affinity-mode", "persistent"),
        ("session-cookie-name", "route"),
        ("session-cookie-max-age", "3600"),
        ("session-cookie-samesite", "Lax"),
    ];
    let (_pods, running) = serve(
        dir.path(),
        &[
            ("balanced.example", balanced),
            ("persistent.example", persistent),
        ],
    )
    .await;
    for (host, name) in [
        ("balanced.example", "INGRESSCOOKIE"),
        ("persistent.example", "route"),
    ] {
        for (proto, first) in send_both(running.http_addr, &TestRequest::get(host, "/")).await {
            assert_eq!(first.status, 200, "{proto} {host}");
            let set = first
                .headers
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{proto} {host}: no Set-Cookie"))
                .to_string();
            assert!(
                set.starts_with(&format!("{name}=")),
                "{proto} {host}: {set}"
            );
            assert!(
                set.contains("; Path=/;") && set.contains("; HttpOnly"),
                "{proto} {host}: {set}"
            );
            if host == "persistent.example" {
                assert!(
                    set.contains("Max-Age=3600") && set.ends_with("SameSite=Lax"),
                    "{set}"
                );
            }
            let pod = pod_of(&first);
            let again =
                TestRequest::get(host, "/").header("cookie", format!("a=1; {}", crumb(&set)));
            for _ in 0..6 {
                for (proto2, r) in send_both(running.http_addr, &again).await {
                    assert_eq!(
                        pod_of(&r),
                        pod,
                        "{proto} cookie sent over {proto2} to {host}"
                    );
                    assert!(
                        r.headers.get("set-cookie").is_none(),
                        "{proto2} {host}: cookie set again"
                    );
                }
            }
        }
        // A cookie naming no endpoint gets a new one.
        let stale =
            TestRequest::get(host, "/").header("cookie", format!("{name}=00000000000000ff"));
        let r = support::send(running.http_addr, &stale)
            .await
            .expect("a response");
        if host == "persistent.example" {
            assert!(
                r.headers.get("set-cookie").is_some(),
                "{host}: stale cookie kept"
            );
        }
    }
    // Clients without a cookie are still spread over the pods.
    let mut pods = BTreeSet::new();
    for _ in 0..(PODS * 3) {
        let r = support::send(
            running.http_addr,
            &TestRequest::get("persistent.example", "/"),
        )
        .await
        .expect("a response");
        pods.insert(pod_of(&r));
    }
    assert_eq!(pods.len(), PODS, "new sessions went to {pods:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hash_by_sends_one_key_to_one_pod() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let hashed: &[(&str, &str)] = &[("upstream-hash-by", "$http_x_user")];
    let ewma: &[(&str, &str)] = &[("load-balance", "ewma")];
    let (_pods, running) = serve(
        dir.path(),
        &[("hashed.example", hashed), ("ewma.example", ewma)],
    )
    .await;
    let mut used = HashSet::new();
    for user in [
        "ann", "bob", "cy", "di", "ed", "flo", "gus", "hal", "ivy", "jo",
    ] {
        let req = TestRequest::get("hashed.example", "/").header("x-user", user);
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            for (_, r) in send_both(running.http_addr, &req).await {
                assert_eq!(r.status, 200);
                seen.insert(pod_of(&r));
            }
        }
        assert_eq!(seen.len(), 1, "user {user} was served by {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() >= 2, "ten users all hashed onto {used:?}");
    // EWMA serves from the Service's pods, and tries each one it has not measured.
    let mut pods = BTreeSet::new();
    for _ in 0..(PODS * 4) {
        for (proto, r) in send_both(running.http_addr, &TestRequest::get("ewma.example", "/")).await
        {
            assert_eq!(r.status, 200, "{proto}");
            pods.insert(pod_of(&r));
        }
    }
    assert!(pods.len() >= 2, "EWMA used only {pods:?}");
    assert!(pods.iter().all(|p| p.starts_with("web-")), "{pods:?}");
    running.shutdown().await;
}
