//! Connection limits: a listener at its limit leaves new connections waiting in the accept
//! queue while the established ones keep being served, and takes the next one as soon as a
//! slot frees. Loopback only, bounded waits.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use support::{
    connect_http1, endpoint_slice_yaml, ingress_yaml, quiet_proxy, read_response, service_yaml,
    spawn_http1, start_with, write_manifest, IngressPath, IngressRule, TestRequest,
};

const CLASS: &str = "portcullis";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().expect("a folder");
    let backend =
        spawn_http1(|_req| async { Response::new(Full::new(Bytes::from_static(b"ok"))) }).await;
    write_manifest(
        dir.path(),
        "app.yaml",
        &format!(
            "{}---\n{}---\n{}",
            service_yaml("default", "app", 80, None),
            endpoint_slice_yaml("default", "app", "app-0", None, backend.addr, true),
            ingress_yaml(
                "default",
                "app",
                CLASS,
                None,
                &[IngressRule::new(
                    None,
                    vec![IngressPath::new("/", "Prefix", "app", 80)]
                )],
            )
        ),
    );
    let proxy = proxy::ProxyConfig {
        max_connections: 2,
        ..quiet_proxy()
    };
    let running = start_with(dir.path(), CLASS, proxy, false).await;
    let addr = running.http_addr;
    let get = || {
        TestRequest::get("any.example", "/")
            .to_hyper()
            .expect("a request")
    };

    let mut first = connect_http1(addr).await.expect("first connection");
    let mut second = connect_http1(addr).await.expect("second connection");
    for sender in [&mut first, &mut second] {
        let response = sender.send_request(get()).await.expect("served");
        let response = read_response(response).await.expect("a body");
        assert_eq!(response.status, StatusCode::OK);
    }

    // The third connection is made by the kernel but not taken while both slots are in use.
    let mut third = connect_http1(addr).await.expect("queued in the backlog");
    let waiting = tokio::spawn(async move { third.send_request(get()).await.map(|r| r.status()) });
    let early = tokio::time::timeout(Duration::from_millis(300), async {
        while !waiting.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(early.is_err(), "a connection over the limit is not served");

    // The established connections are not starved by the one waiting.
    for _ in 0..3 {
        first.ready().await.expect("ready");
        let response = first.send_request(get()).await.expect("still served");
        let response = read_response(response).await.expect("a body");
        assert_eq!(response.status, StatusCode::OK);
    }

    // A slot frees: the waiting connection is taken and served.
    drop(second);
    let status = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("served once a slot is free")
        .expect("join")
        .expect("a response");
    assert_eq!(status, StatusCode::OK);
    running.shutdown().await;
}
