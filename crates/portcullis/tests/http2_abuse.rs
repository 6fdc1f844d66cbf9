//! HTTP/2 clients that misbehave on purpose: streams reset as fast as they are opened (rapid
//! reset), endless CONTINUATION frames, PING and SETTINGS floods. Each is cut off or slowed
//! down, and a well-behaved client on another connection is still served. Loopback only,
//! every loop bounded.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis::Running;
use support::{
    endpoint_slice_yaml, ingress_yaml, send_h2, service_yaml, spawn_http1, start, write_manifest,
    IngressPath, IngressRule, Server, TestRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLASS: &str = "portcullis";
/// Upper bound on any wait: a failure guard, not a measurement.
const GUARD: Duration = Duration::from_secs(30);

/// Portcullis routing `/slow` to a backend that never answers (counting the requests it gets)
/// and everything else to one that answers at once.
struct Setup {
    running: Running,
    slow_requests: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    _backends: (Server, Server),
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("a folder");
    let slow_requests = Arc::new(AtomicUsize::new(0));
    let counted = slow_requests.clone();
    let slow = spawn_http1(move |_req| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            std::future::pending::<()>().await;
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    let fast =
        spawn_http1(|_req| async { Response::new(Full::new(Bytes::from_static(b"ok"))) }).await;
    let mut text = String::new();
    for (name, addr) in [("slow", slow.addr), ("fast", fast.addr)] {
        text.push_str(&service_yaml("default", name, 80, None));
        text.push_str("---\n");
        text.push_str(&endpoint_slice_yaml(
            "default",
            name,
            &format!("{name}-0"),
            None,
            addr,
            true,
        ));
        text.push_str("---\n");
    }
    text.push_str(&ingress_yaml(
        "default",
        "abuse",
        CLASS,
        None,
        &[IngressRule::new(
            Some("abuse.example"),
            vec![
                IngressPath::new("/slow", "Prefix", "slow", 80),
                IngressPath::new("/", "Prefix", "fast", 80),
            ],
        )],
    ));
    write_manifest(dir.path(), "abuse.yaml", &text);
    let running = start(dir.path(), CLASS).await;
    Setup {
        running,
        slow_requests,
        _dir: dir,
        _backends: (slow, fast),
    }
}

async fn well_behaved_client_is_served(addr: SocketAddr) {
    let response = send_h2(addr, &TestRequest::get("abuse.example", "/"))
        .await
        .expect("a normal HTTP/2 client is served");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, Bytes::from_static(b"ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection() {
    const STREAMS: usize = 5_000;
    let setup = setup().await;
    let addr = setup.running.http_addr;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driven = tokio::spawn(connection);
    // One normal exchange first: the server's SETTINGS have arrived after it.
    let request = Request::get("http://abuse.example/")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = tokio::time::timeout(GUARD, response)
        .await
        .expect("an answer")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        client.current_max_send_streams(),
        128,
        "the server limits concurrent streams"
    );
    // Each request is cancelled once it has reached the backend: work started, then thrown
    // away — the costly kind of reset.
    let slow_requests = setup.slow_requests.clone();
    let mut sent = 0;
    let flood = async {
        for _ in 0..STREAMS {
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => break,
            };
            let request = Request::get("http://abuse.example/slow")
                .body(())
                .expect("request");
            let before = slow_requests.load(Ordering::SeqCst);
            let Ok((response, mut stream)) = client.send_request(request, true) else {
                break;
            };
            for _ in 0..10_000 {
                if slow_requests.load(Ordering::SeqCst) > before {
                    break;
                }
                tokio::task::yield_now().await;
            }
            stream.send_reset(h2::Reason::CANCEL);
            drop(response);
            sent += 1;
        }
    };
    tokio::time::timeout(GUARD, flood)
        .await
        .expect("the flood ends within the guard");
    assert!(
        sent < 300,
        "the server closes the connection soon after the client starts cancelling; {sent} cancels got through"
    );
    let ended = tokio::time::timeout(GUARD, driven)
        .await
        .expect("the connection ends");
    assert!(ended.is_ok(), "connection task");
    well_behaved_client_is_served(addr).await;
    setup.running.shutdown().await;
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

/// A raw connection: preface and empty SETTINGS sent.
async fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    tcp
}

/// Writes `frames` copies of `unit` in batches until done or the server stops taking them
/// (closed, or not reading: the write waits longer than `stall`). Returns how many were sent.
async fn flood(tcp: &mut TcpStream, unit: &[u8], frames: usize, stall: Duration) -> usize {
    const BATCH: usize = 256;
    let batch: Vec<u8> = unit.repeat(BATCH);
    let mut sent = 0;
    while sent < frames {
        match tokio::time::timeout(stall, tcp.write_all(&batch)).await {
            Ok(Ok(())) => sent += BATCH,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// Reads what the server sends until it closes; true when a GOAWAY frame was among it.
async fn read_until_closed(tcp: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("the server closes the connection");
    let mut at = 0;
    while at + 9 <= seen.len() {
        let len = (usize::from(seen[at]) << 16)
            | (usize::from(seen[at + 1]) << 8)
            | usize::from(seen[at + 2]);
        if seen[at + 3] == GOAWAY {
            return true;
        }
        at += 9 + len;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_are_cut_off() {
    const FRAMES: usize = 200_000;
    let setup = setup().await;
    let addr = setup.running.http_addr;
    // Many empty CONTINUATION frames, and a few large ones: a header block that never ends.
    for (payload, what) in [(vec![], "empty"), (vec![b'a'; 16_000], "large")] {
        let mut tcp = raw_h2(addr).await;
        // :method GET, :scheme http, :path / — and no END_HEADERS.
        tcp.write_all(&frame(HEADERS, 0, 1, &[0x82, 0x86, 0x84]))
            .await
            .expect("headers");
        let unit = frame(CONTINUATION, 0, 1, &payload);
        // Whether the writes fit in socket buffers before the server hangs up does not matter;
        // that it hangs up, saying why, does.
        let _sent = flood(&mut tcp, &unit, FRAMES, Duration::from_secs(5)).await;
        assert!(
            read_until_closed(&mut tcp).await,
            "{what} CONTINUATION frames: the server says GOAWAY"
        );
        well_behaved_client_is_served(addr).await;
    }
    setup.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_do_not_starve_others() {
    const FRAMES: usize = 100_000;
    let setup = setup().await;
    let addr = setup.running.http_addr;
    for (unit, what) in [
        (frame(PING, 0, 0, &[7; 8]), "PING"),
        (frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]), "SETTINGS"),
    ] {
        let mut tcp = raw_h2(addr).await;
        // The flooder never reads: its answers pile up until the server stops reading it.
        let _sent = flood(&mut tcp, &unit, FRAMES, Duration::from_millis(500)).await;
        well_behaved_client_is_served(addr).await;
        drop(tcp);
        let _ = what;
    }
    setup.running.shutdown().await;
}
