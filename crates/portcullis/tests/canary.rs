//! Canary releases end to end over HTTP/1.1 and HTTP/2: a canary Ingress (`canary: "true"`)
//! attaches its Service to the route of another Ingress on the same host and path, and each
//! request goes to one or the other by `canary-by-header` (with `-value` or `-pattern`),
//! `canary-by-cookie` and `canary-weight`, in that order.

mod support;

use std::path::Path;

use support::{
    deploy, nginx_ingress, quiet_proxy, send_both, start_with_options, write_manifest, ServiceSpec,
    TestRequest, NAMESPACE,
};

/// Deploys the Services `stable` and `next` and, for each `(host, canary annotations)`, an
/// Ingress routing the host to `stable` and a canary Ingress routing it to `next`.
async fn serve(
    dir: &Path,
    hosts: &[(&str, &[(&str, &str)])],
) -> (support::Deployed, portcullis::Running) {
    let pods = deploy(
        dir,
        NAMESPACE,
        &[ServiceSpec::new("stable", 80), ServiceSpec::new("next", 80)],
    )
    .await;
    let mut ingresses = Vec::new();
    for (i, (host, ann)) in hosts.iter().enumerate() {
        ingresses.push(nginx_ingress(&format!("main-{i}"), host, "stable", 80, &[]));
        let mut canary = vec![("canary", "true")];
        canary.extend_from_slice(ann);
        ingresses.push(nginx_ingress(
            &format!("canary-{i}"),
            host,
            "next",
            80,
            &canary,
        ));
    }
    write_manifest(dir, "ingress.yaml", &ingresses.join("---\n"));
    let running = start_with_options(
        dir,
        translate::Options::nginx_compat(),
        quiet_proxy(),
        false,
    )
    .await;
    (pods, running)
}

/// Sends `request` over both protocols and asserts which Service answered each time.
async fn expect(running: &portcullis::Running, request: TestRequest, service: &str) {
    let what = format!("{} {:?}", request.target, request.headers);
    for (proto, response) in send_both(running.http_addr, &request).await {
        assert_eq!(response.status, 200, "{proto} {what}");
        let echo = response.echo().expect("an echo pod answered");
        assert_eq!(echo.service, service, "{proto} {what}");
    }
}

fn get(host: &str) -> TestRequest {
    TestRequest::get(host, "/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_header_decides_by_always_never_value_or_pattern() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let (_pods, running) = serve(
        dir.path(),
        &[
            ("header.example", &[("canary-by-header", "X-Canary")]),
            (
                "value.example",
                &[
                    ("canary-by-header", "X-Canary"),
                    ("canary-by-header-value", "blue"),
                ],
            ),
            (
                "pattern.example",
                &[
                    ("canary-by-header", "X-Version"),
                    ("canary-by-header-pattern", "^v2(\\.[0-9]+)?$"),
                ],
            ),
        ],
    )
    .await;
    let h = "header.example";
    expect(&running, get(h).header("X-Canary", "always"), "next").await;
    expect(&running, get(h).header("X-Canary", "never"), "stable").await;
    expect(&running, get(h).header("X-Canary", "maybe"), "stable").await;
    expect(&running, get(h), "stable").await;
    let v = "value.example";
    expect(&running, get(v).header("X-Canary", "blue"), "next").await;
    expect(&running, get(v).header("X-Canary", "always"), "stable").await;
    expect(&running, get(v).header("X-Canary", "green"), "stable").await;
    let p = "pattern.example";
    expect(&running, get(p).header("X-Version", "v2"), "next").await;
    expect(&running, get(p).header("X-Version", "v2.7"), "next").await;
    expect(&running, get(p).header("X-Version", "v1"), "stable").await;
    expect(&running, get(p), "stable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_cookie_and_weight_decide_and_the_header_comes_first() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let (_pods, running) = serve(
        dir.path(),
        &[
            ("cookie.example", &[("canary-by-cookie", "canary")]),
            ("all.example", &[("canary-weight", "100")]),
            ("none.example", &[("canary-weight", "0")]),
            (
                "order.example",
                &[
                    ("canary-by-header", "X-Canary"),
                    ("canary-by-cookie", "canary"),
                    ("canary-weight", "100"),
                ],
            ),
        ],
    )
    .await;
    let c = "cookie.example";
    expect(&running, get(c).header("cookie", "canary=always"), "next").await;
    expect(
        &running,
        get(c).header("cookie", "a=1; canary=always"),
        "next",
    )
    .await;
    expect(&running, get(c).header("cookie", "canary=never"), "stable").await;
    expect(&running, get(c).header("cookie", "canary=later"), "stable").await;
    expect(&running, get(c), "stable").await;
    for _ in 0..5 {
        expect(&running, get("all.example"), "next").await;
        expect(&running, get("none.example"), "stable").await;
    }
    let o = "order.example";
    let both = |header: &str, cookie: &str| {
        get(o)
            .header("X-Canary", header)
            .header("cookie", format!("canary={cookie}"))
    };
    expect(&running, both("never", "always"), "stable").await;
    expect(&running, both("always", "never"), "next").await;
    expect(&running, both("other", "never"), "stable").await;
    expect(&running, both("other", "other"), "next").await;
    expect(&running, get(o).header("X-Canary", "never"), "stable").await;
    expect(&running, get(o), "next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_keeps_a_client_on_the_backend_it_was_sent_to() {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let pods = deploy(
        dir.path(),
        NAMESPACE,
        &[ServiceSpec::new("stable", 80), ServiceSpec::new("next", 80)],
    )
    .await;
    let main = nginx_ingress(
        "main",
        "sticky.example",
        "stable",
        80,
        &[("affinity", "cookie"), ("session-cookie-name", "main")],
    );
    let canary = nginx_ingress(
        "canary",
        "sticky.example",
        "next",
        80,
        &[
            ("canary", "true"),
            ("canary-weight", "100"),
            ("affinity", "cookie"),
            ("session-cookie-name", "beta"),
        ],
    );
    let mut ingresses = vec![main, canary];
    for (host, behavior) in [("held.example", "sticky"), ("legacy.example", "legacy")] {
        ingresses.push(nginx_ingress(host, host, "stable", 80, &[]));
        ingresses.push(nginx_ingress(
            &format!("{host}-canary"),
            host,
            "next",
            80,
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("affinity", "cookie"),
                ("session-cookie-name", "beta"),
                ("affinity-canary-behavior", behavior),
            ],
        ));
    }
    write_manifest(dir.path(), "ingress.yaml", &ingresses.join("---\n"));
    let running = start_with_options(
        dir.path(),
        translate::Options::nginx_compat(),
        quiet_proxy(),
        false,
    )
    .await;
    let h = "sticky.example";
    // Weight 100: a new client lands on the canary and gets the canary's affinity cookie.
    for (proto, response) in send_both(running.http_addr, &get(h)).await {
        let echo = response.echo().expect("an echo pod answered");
        assert_eq!(echo.service, "next", "{proto}");
        let set = response
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(set.starts_with("beta="), "{proto}: {set:?}");
    }
    // One holding the main backend's cookie stays there, whatever the weight.
    let held = get(h).header("cookie", format!("main={:x}", 1u64 << 40));
    expect(&running, held, "stable").await;
    // A client the header sent to the canary comes back without the header: with the canary's
    // affinity cookie it stays there (sticky), unless the canary asks for the legacy behaviour.
    for (host, stays) in [("held.example", "next"), ("legacy.example", "stable")] {
        let [(_, first), _] =
            send_both(running.http_addr, &get(host).header("X-Canary", "always")).await;
        let echo = first.echo().expect("an echo pod answered");
        assert_eq!(echo.service, "next", "{host}");
        let set = first
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let crumb = set.split(';').next().unwrap_or_default().to_string();
        assert!(crumb.starts_with("beta="), "{host}: {set:?}");
        expect(&running, get(host).header("cookie", crumb), stays).await;
    }
    drop(pods);
}
