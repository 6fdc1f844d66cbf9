//! Lifecycle and resolution behaviour: graceful shutdown with requests in flight, and
//! ExternalName Services resolved by the proxy.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use support::{ingress_yaml, spawn_http1, start, write_manifest, IngressPath, IngressRule};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A backend that answers only when the test says so.
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let gates = std::sync::Arc::new(std::sync::Mutex::new((Some(arrived_tx), Some(release_rx))));
    let backend = spawn_http1(move |_req| {
        let gates = gates.clone();
        async move {
            let (arrived, release) = {
                let mut g = gates.lock().expect("gates");
                (g.0.take(), g.1.take())
            };
            if let Some(arrived) = arrived {
                let _ = arrived.send(());
            }
            if let Some(release) = release {
                let _ = release.await;
            }
            Response::new(Full::new(Bytes::from_static(b"finished")))
        }
    })
    .await;
    write_manifest(
        dir.path(),
        "slow.yaml",
        &format!(
            "{}---\n{}---\n{}",
            support::service_yaml("default", "slow", 80, None),
            support::endpoint_slice_yaml("default", "slow", "slow-0", None, backend.addr, true),
            ingress_yaml(
                "default",
                "slow",
                "portcullis",
                None,
                &[IngressRule::new(
                    None,
                    vec![IngressPath::new("/", "Prefix", "slow", 80)]
                )],
            )
        ),
    );
    let running = start(dir.path(), "portcullis").await;
    let addr = running.http_addr;
    let in_flight = tokio::spawn(async move {
        support::send(addr, &support::TestRequest::get("any.example", "/slow")).await
    });
    tokio::time::timeout(Duration::from_secs(10), arrived_rx)
        .await
        .expect("the request reaches the backend")
        .expect("backend alive");

    let shutdown = tokio::spawn(running.shutdown());
    // New connections are refused once the listener is closed; bounded polling.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Only a refusal counts: other errors (out of descriptors, with every probe
        // connection still open on the server side) say nothing about the listener.
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            Ok(probe) => drop(probe),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still accepting after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the in-flight request"
    );
    let _ = release_tx.send(());
    let response = in_flight
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, Bytes::from_static(b"finished"));
    assert_eq!(
        response
            .headers
            .get(http::header::CONNECTION)
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "a response finished while draining closes its keep-alive connection"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes once the request is done")
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_service_is_resolved_by_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = support::spawn_simple_echo("external", "external-0").await;
    let port = echo.addr().port();
    write_manifest(
        dir.path(),
        "external.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: external}}\nspec:\n  type: ExternalName\n  externalName: localhost\n  ports: [{{port: {port}}}]\n---\n{}",
            ingress_yaml(
                "default",
                "external",
                "portcullis",
                None,
                &[IngressRule::new(None, vec![IngressPath::new("/", "Prefix", "external", port)])],
            )
        ),
    );
    let running = start(dir.path(), "portcullis").await;
    let response = support::send(
        running.http_addr,
        &support::TestRequest::get("x.example", "/ext"),
    )
    .await
    .expect("response");
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.served_by(), "external");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_keeps_serving_while_readyz_turns_away_load_balancers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend =
        spawn_http1(|_req| async { Response::new(Full::new(Bytes::from_static(b"still here"))) })
            .await;
    write_manifest(
        dir.path(),
        "app.yaml",
        &format!(
            "{}---\n{}---\n{}",
            support::service_yaml("default", "app", 80, None),
            support::endpoint_slice_yaml("default", "app", "app-0", None, backend.addr, true),
            ingress_yaml(
                "default",
                "app",
                "portcullis",
                None,
                &[IngressRule::new(
                    None,
                    vec![IngressPath::new("/", "Prefix", "app", 80)]
                )],
            )
        ),
    );
    // A delay longer than the test: it ends when the test says so.
    let proxy = proxy::ProxyConfig {
        shutdown_delay: Duration::from_secs(600),
        ..support::quiet_proxy()
    };
    let running = support::start_with(dir.path(), "portcullis", proxy, true).await;
    let (addr, admin) = (running.http_addr, running.admin_addr.expect("admin"));
    let readyz = || async move {
        support::send(
            admin,
            &support::TestRequest::get(admin.to_string(), "/readyz"),
        )
        .await
        .expect("/readyz answers")
        .status
    };
    assert_eq!(readyz().await, StatusCode::OK);

    let (hurry_tx, hurry_rx) = oneshot::channel::<()>();
    let shutdown = tokio::spawn(running.shutdown_after(async {
        let _ = hurry_rx.await;
    }));
    let mut turned = false;
    for _ in 0..1000 {
        if readyz().await == StatusCode::SERVICE_UNAVAILABLE {
            turned = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(turned, "/readyz answers 503 once shutdown begins");
    for _ in 0..3 {
        let response = support::send(addr, &support::TestRequest::get("any.example", "/"))
            .await
            .expect("new connections are still served during the delay");
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body, Bytes::from_static(b"still here"));
    }
    assert!(!shutdown.is_finished(), "the delay is not over");

    let _ = hurry_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown completes once the delay is cut short")
        .expect("join");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the delay"
    );
}

/// SIGTERM with HTTP/1.1 and HTTP/2 requests in flight and a WebSocket open: every in-flight
/// request completes, the WebSocket keeps working through the grace period and is closed when it
/// runs out, and shutdown then finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_finishes_requests_and_gives_websockets_the_grace_period() {
    const IN_FLIGHT: usize = 8;
    const GRACE: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    // Requests wait at the backend until released; each says when it arrived.
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let backend = spawn_http1(move |_req| {
        let (arrived, gate) = (arrived_tx.clone(), gate.clone());
        async move {
            let released = gate.notified();
            let _ = arrived.send(());
            released.await;
            Response::new(Full::new(Bytes::from_static(b"finished")))
        }
    })
    .await;
    let ws = support::tunnel::spawn_upgrade_echo().await;
    write_manifest(
        dir.path(),
        "app.yaml",
        &format!(
            "{}---\n{}---\n{}---\n{}---\n{}",
            support::service_yaml("default", "slow", 80, None),
            support::endpoint_slice_yaml("default", "slow", "slow-0", None, backend.addr, true),
            support::service_yaml("default", "ws", 80, None),
            support::endpoint_slice_yaml("default", "ws", "ws-0", None, ws.addr, true),
            ingress_yaml(
                "default",
                "app",
                "portcullis",
                None,
                &[IngressRule::new(
                    None,
                    vec![
                        IngressPath::new("/", "Prefix", "slow", 80),
                        IngressPath::new("/chat", "Prefix", "ws", 80),
                    ]
                )],
            )
        ),
    );
    let proxy = proxy::ProxyConfig {
        shutdown_grace: GRACE,
        ..support::quiet_proxy()
    };
    let running = support::start_with(dir.path(), "portcullis", proxy, false).await;
    let addr = running.http_addr;
    let mut tunnel = support::tunnel::open_websocket(addr, "any.example", "/chat")
        .await
        .expect("a WebSocket");
    assert_eq!(tunnel.echo(b"before").await.as_deref(), Ok(&b"before"[..]));

    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            tokio::spawn(async move {
                let request = support::TestRequest::get("any.example", "/slow");
                let response = if i % 2 == 0 {
                    support::send(addr, &request).await
                } else {
                    support::send_h2(addr, &request).await
                };
                (i % 2, response)
            })
        })
        .collect();
    for _ in 0..IN_FLIGHT {
        tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
            .await
            .expect("every request reaches the backend")
            .expect("backend alive");
    }

    let began = tokio::time::Instant::now();
    let shutdown = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tunnel.echo(b"while draining").await.as_deref(),
        Ok(&b"while draining"[..]),
        "the WebSocket works during the grace period"
    );
    release.notify_waiters();
    for request in requests {
        let (h2, response) = request.await.expect("join");
        let proto = if h2 == 1 { "HTTP/2" } else { "HTTP/1.1" };
        let response = response.unwrap_or_else(|e| panic!("{proto} request in flight: {e}"));
        assert_eq!(response.status, StatusCode::OK, "{proto}");
        assert_eq!(response.body, Bytes::from_static(b"finished"), "{proto}");
    }
    assert_eq!(
        tunnel.echo(b"after the requests").await.as_deref(),
        Ok(&b"after the requests"[..]),
        "the WebSocket outlives the requests while the grace period lasts"
    );
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the open WebSocket"
    );
    let closed = tokio::time::timeout(GRACE + Duration::from_secs(10), async {
        let mut buf = [0u8; 16];
        tokio::io::AsyncReadExt::read(&mut tunnel.io, &mut buf).await
    })
    .await
    .expect("the WebSocket is closed when the grace period runs out");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(
        began.elapsed() >= GRACE - Duration::from_millis(100),
        "the WebSocket got the grace period ({:?})",
        began.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes when the grace period is over")
        .expect("join");
}
