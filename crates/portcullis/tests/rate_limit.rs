//! Per-client limits end to end over HTTP/1.1 and HTTP/2: `limit-rpm` / `limit-rps` with their
//! burst refuse what goes beyond at once, `limit-whitelist` exempts clients, `limit-connections`
//! counts requests in flight until each ends (answered or cancelled), and the state stays
//! bounded as client addresses change. Rates are per minute and low, so nothing depends on how
//! fast the test runs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use proxy::{ForwardedHeaders, ProxyConfig};
use support::wire::{h2_connect, ingress, service_at, site, Listening, Site};
use support::{
    quiet_proxy, send, send_h2, spawn_http1, spawn_simple_echo, Echo, Server, TestRequest,
};
use tokio::sync::{mpsc, watch};

/// Upper bound on any wait: a failure guard, not a measurement.
const GUARD: Duration = Duration::from_secs(10);

/// Trusting loopback's forwarded headers, so a test can speak for several clients.
fn trusting_loopback() -> ProxyConfig {
    ProxyConfig {
        forwarded_headers: Some(ForwardedHeaders {
            trusted: vec!["127.0.0.0/8".parse().expect("a network")],
            header: "x-forwarded-for".into(),
        }),
        ..quiet_proxy()
    }
}

/// Portcullis in front of an echo pod, one Ingress per `(name, annotations)` on host
/// `<name>.example`.
async fn start(proxy: ProxyConfig, ingresses: &[(&str, &[(&str, &str)])]) -> (Site, Echo) {
    let echo = spawn_simple_echo("site", "site-0").await;
    let mut manifests = vec![service_at("site", echo.addr(), true)];
    for (name, annotations) in ingresses {
        manifests.push(ingress(
            name,
            &format!("{name}.example"),
            "site",
            annotations,
        ));
    }
    (
        site(&manifests, proxy, Listening::default(), Vec::new()).await,
        echo,
    )
}

fn get(host: &str, client: Option<&str>) -> TestRequest {
    let request = TestRequest::get(host, "/");
    match client {
        Some(ip) => request.header("X-Forwarded-For", ip),
        None => request,
    }
}

async fn status_h1(addr: SocketAddr, request: &TestRequest) -> u16 {
    send(addr, request)
        .await
        .expect("an answer")
        .status
        .as_u16()
}

async fn status_h2(addr: SocketAddr, request: &TestRequest) -> u16 {
    send_h2(addr, request)
        .await
        .expect("an answer")
        .status
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_rate_and_its_burst_are_refused() {
    // One a minute with a burst of one: two at once, then none for a while.
    let limit: &[(&str, &str)] = &[("limit-rpm", "1"), ("limit-burst-multiplier", "1")];
    let per_second: &[(&str, &str)] = &[("limit-rps", "1"), ("limit-burst-multiplier", "1")];
    let both: &[(&str, &str)] = &[
        ("limit-rps", "100"),
        ("limit-rpm", "1"),
        ("limit-burst-multiplier", "1"),
    ];
    let (site, _echo) = start(
        trusting_loopback(),
        &[
            ("one", limit),
            ("two", limit),
            ("rps", per_second),
            ("both", both),
            ("open", &[]),
        ],
    )
    .await;
    let addr = site.http();
    let one = get("one.example", None);
    let seen: Vec<u16> = [
        status_h1(addr, &one).await,
        status_h1(addr, &one).await,
        status_h1(addr, &one).await,
        status_h2(addr, &one).await,
    ]
    .into();
    assert_eq!(
        seen,
        [200, 200, 503, 503],
        "HTTP/1.1 then HTTP/2 on one Ingress"
    );
    let two = get("two.example", None);
    let seen: Vec<u16> = [
        status_h2(addr, &two).await,
        status_h2(addr, &two).await,
        status_h2(addr, &two).await,
    ]
    .into();
    assert_eq!(
        seen,
        [200, 200, 503],
        "HTTP/2, another Ingress counts apart"
    );
    // Another client has its own count; an Ingress without limits has none.
    let other = get("one.example", Some("198.51.100.2"));
    assert_eq!(status_h1(addr, &other).await, 200);
    assert_eq!(status_h2(addr, &other).await, 200);
    assert_eq!(status_h1(addr, &other).await, 503);
    for _ in 0..5 {
        assert_eq!(status_h1(addr, &get("open.example", None)).await, 200);
    }
    // Per second: however slow the machine, five requests in a row cannot all fit in the
    // burst of one plus what refills meanwhile unless they took seconds each.
    let rps = get("rps.example", None);
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        statuses.push(status_h1(addr, &rps).await);
    }
    if started.elapsed() < Duration::from_secs(2) {
        assert!(statuses.contains(&503), "{statuses:?}");
    }
    assert_eq!(&statuses[..2], [200, 200]);
    // Both rates apply: the per-minute one refuses what the per-second one allows.
    let both = get("both.example", None);
    assert_eq!(status_h1(addr, &both).await, 200);
    assert_eq!(status_h2(addr, &both).await, 200);
    assert_eq!(status_h1(addr, &both).await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_clients_pass_and_the_status_is_configurable() {
    let proxy = ProxyConfig {
        limit_req_status: StatusCode::TOO_MANY_REQUESTS,
        ..trusting_loopback()
    };
    let strict: &[(&str, &str)] = &[("limit-rpm", "1"), ("limit-burst-multiplier", "0")];
    let exempt: &[(&str, &str)] = &[
        ("limit-rpm", "1"),
        ("limit-burst-multiplier", "0"),
        ("limit-whitelist", "127.0.0.1, 198.51.100.0/24"),
    ];
    let (site, _echo) = start(proxy, &[("strict", strict), ("exempt", exempt)]).await;
    let addr = site.http();
    for client in [None, Some("198.51.100.7")] {
        let request = get("exempt.example", client);
        for _ in 0..3 {
            assert_eq!(status_h1(addr, &request).await, 200, "{client:?}");
            assert_eq!(status_h2(addr, &request).await, 200, "{client:?}");
        }
    }
    // Not in the list: limited.
    let outsider = get("exempt.example", Some("192.0.2.1"));
    assert_eq!(status_h1(addr, &outsider).await, 200);
    assert_eq!(status_h2(addr, &outsider).await, 429);
    let strict = get("strict.example", None);
    assert_eq!(status_h2(addr, &strict).await, 200);
    let refused = send(addr, &strict).await.expect("an answer");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.text(), "429 Too Many Requests\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_state_stays_bounded_as_addresses_change() {
    let proxy = ProxyConfig {
        limit_clients: 4,
        ..trusting_loopback()
    };
    let strict: &[(&str, &str)] = &[("limit-rpm", "1"), ("limit-burst-multiplier", "0")];
    let (site, _echo) = start(proxy, &[("strict", strict)]).await;
    let addr = site.http();
    let first = get("strict.example", Some("198.51.100.1"));
    assert_eq!(status_h1(addr, &first).await, 200);
    assert_eq!(
        status_h1(addr, &first).await,
        503,
        "remembered while tracked"
    );
    for n in 10..20 {
        let client = format!("198.51.100.{n}");
        let request = get("strict.example", Some(&client));
        assert_eq!(status_h2(addr, &request).await, 200, "{client}");
    }
    // Ten newer clients later, the first was forgotten to keep the state at four clients.
    assert_eq!(status_h1(addr, &first).await, 200);
    let last = get("strict.example", Some("198.51.100.19"));
    assert_eq!(
        status_h1(addr, &last).await,
        503,
        "the latest is still tracked"
    );
}

/// A backend that answers `/` at once and holds `/hold…` requests: `/hold` until `release`
/// turns true, `/hold-forever` for good. Each held request is reported on arrival.
async fn holding_backend() -> (Server, watch::Sender<bool>, mpsc::UnboundedReceiver<()>) {
    let (release, gate) = watch::channel(false);
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let server = spawn_http1(move |req: http::Request<hyper::body::Incoming>| {
        let mut gate = gate.clone();
        let arrived = arrived.clone();
        async move {
            let path = req.uri().path().to_string();
            if path.starts_with("/hold") {
                let _ = arrived.send(());
                if path == "/hold-forever" {
                    std::future::pending::<()>().await;
                }
                let _ = gate.wait_for(|open| *open).await;
            }
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    })
    .await;
    (server, release, arrivals)
}

/// Waits for the next held request to reach the backend.
async fn arrived(arrivals: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(GUARD, arrivals.recv())
        .await
        .expect("the held request reaches the backend");
}

/// Waits until requests to `host` are admitted again (the held one's place released).
async fn admitted_again(addr: SocketAddr, host: &str) {
    let waiting = async {
        while status_h1(addr, &get(host, None)).await != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(GUARD, waiting)
        .await
        .expect("admitted again once the held request ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_connections_counts_requests_in_flight() {
    let (backend, release, mut arrivals) = holding_backend().await;
    let manifests = vec![
        service_at("held", backend.addr, true),
        ingress(
            "conn",
            "conn.example",
            "held",
            &[("limit-connections", "1")],
        ),
        ingress(
            "slow",
            "slow.example",
            "held",
            &[("limit-connections", "1"), ("proxy-read-timeout", "1")],
        ),
    ];
    let proxy = ProxyConfig {
        limit_conn_status: StatusCode::TOO_MANY_REQUESTS,
        ..quiet_proxy()
    };
    let site = site(&manifests, proxy, Listening::default(), vec![backend]).await;
    let addr = site.http();

    // HTTP/1.1: one request held; the next is refused on either protocol until it ends.
    let held =
        tokio::spawn(async move { send(addr, &TestRequest::get("conn.example", "/hold")).await });
    arrived(&mut arrivals).await;
    assert_eq!(status_h1(addr, &get("conn.example", None)).await, 429);
    assert_eq!(status_h2(addr, &get("conn.example", None)).await, 429);
    release.send_replace(true);
    let done = held.await.expect("the held request's task");
    assert_eq!(done.expect("an answer").status, 200);
    admitted_again(addr, "conn.example").await;

    // HTTP/2: a held stream counts until the client resets it.
    let (client, _conn) = h2_connect(addr, &h2::client::Builder::new()).await;
    let mut ready = client.ready().await.expect("the connection takes a stream");
    let request = http::Request::get("http://conn.example/hold-forever")
        .body(())
        .expect("a request");
    let (response, stream) = ready.send_request(request, true).expect("sent");
    arrived(&mut arrivals).await;
    assert_eq!(status_h1(addr, &get("conn.example", None)).await, 429);
    drop((response, stream));
    admitted_again(addr, "conn.example").await;

    // A request that fails (the upstream does not answer in time) releases its place too.
    let failing = tokio::spawn(async move {
        send(addr, &TestRequest::get("slow.example", "/hold-forever")).await
    });
    arrived(&mut arrivals).await;
    assert_eq!(status_h2(addr, &get("slow.example", None)).await, 429);
    let failed = failing.await.expect("the failing request's task");
    assert_eq!(failed.expect("an answer").status, 504);
    admitted_again(addr, "slow.example").await;
}
