//! The HTTP/1.x path byte for byte: raw clients and scripted raw backends around the proxy, for
//! what ordinary clients never send (pipelining, HTTP/1.0, chunked uploads, smuggling attempts)
//! and what ordinary backends rarely answer (close-delimited bodies, interim responses).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portcullis::Running;
use proxy::ProxyConfig;
use support::{
    endpoint_slices_yaml, ingress_yaml, quiet_proxy, service_yaml, start_with, write_manifest,
    IngressPath, IngressRule, NAMESPACE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CLASS: &str = "portcullis";
const PORT: u16 = 80;
const HOST: &str = "raw.example";
const STEP: Duration = Duration::from_secs(10);

/// What a scripted backend answers to one request (its raw bytes), and whether it then closes
/// the connection.
type Script = fn(&[u8]) -> (Vec<u8>, bool);

/// What a scripted backend observed, in the order it happened.
enum Event {
    /// Bytes as they arrived on a connection.
    Received(Vec<u8>),
    /// A whole request (head and body).
    Request(Vec<u8>),
    /// The proxy closed a connection; what it had sent after its last whole request.
    Closed(Vec<u8>),
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, bytes) = match self {
            Event::Received(b) => ("Received", b),
            Event::Request(b) => ("Request", b),
            Event::Closed(b) => ("Closed", b),
        };
        write!(f, "{what}({:?})", String::from_utf8_lossy(bytes))
    }
}

/// The events of a scripted backend.
struct Seen(mpsc::UnboundedReceiver<Event>);

impl Seen {
    async fn next(&mut self) -> Event {
        tokio::time::timeout(STEP, self.0.recv())
            .await
            .expect("the backend sees something in time")
            .expect("the backend is running")
    }

    /// The next whole request the backend received.
    async fn request(&mut self) -> String {
        loop {
            if let Event::Request(bytes) = self.next().await {
                return String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }

    /// Waits until the bytes arriving from now on contain `marker`.
    async fn received(&mut self, marker: &[u8]) {
        let mut arrived = Vec::new();
        while find(&arrived, marker).is_none() {
            if let Event::Received(bytes) = self.next().await {
                arrived.extend_from_slice(&bytes);
            }
        }
    }

    /// Waits for the proxy to close a connection to the backend; returns what arrived on the
    /// backend until then (every connection's bytes) and what the closed connection carried after
    /// its last whole request.
    async fn closed(&mut self) -> (Vec<Event>, Vec<u8>) {
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Event::Closed(unfinished) => return (before, unfinished),
                other => before.push(other),
            }
        }
    }
}

/// A backend that reads whole requests (Content-Length or chunked bodies), reports what it sees
/// and answers each request with the script's raw bytes.
async fn spawn_scripted(script: Script) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut report = |bytes: &[u8]| {
                    let _ = tx.send(Event::Received(bytes.to_vec()));
                };
                while let Some(request) =
                    read_message(&mut stream, &mut pending, false, false, &mut report).await
                {
                    let _ = tx.send(Event::Request(request.clone()));
                    let (reply, close) = script(&request);
                    if stream.write_all(&reply).await.is_err() || close {
                        return;
                    }
                }
                let _ = tx.send(Event::Closed(pending));
            });
        }
    });
    (addr, Seen(rx))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one message (head and body) from `stream`, `pending` holding bytes read earlier;
/// `arrived` sees each read's bytes. `close_delimited`: a body without length runs to the end
/// of the stream.
async fn read_message(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    close_delimited: bool,
    head_request: bool,
    mut arrived: impl FnMut(&[u8]),
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(pending, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        arrived(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_string();
    let status_line = head.lines().next().unwrap_or("");
    let interim = status_line.starts_with("HTTP/1.1 1") && !status_line.starts_with("HTTP/1.1 101");
    let chunked =
        header_value(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
    let no_body =
        interim || head.starts_with("HEAD ") || head_request || status_line.contains(" 304 ");
    let total = loop {
        if no_body {
            break head_end;
        }
        if chunked {
            if let Some(end) = chunked_end(&pending[head_end..]) {
                break head_end + end;
            }
        } else if let Some(n) = length {
            if pending.len() >= head_end + n {
                break head_end + n;
            }
        } else if !close_delimited || head.starts_with("GET ") || head.starts_with("POST ") {
            break head_end;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            if close_delimited && length.is_none() && !chunked {
                break pending.len();
            }
            return None;
        }
        arrived(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
    };
    Some(pending.drain(..total).collect())
}

/// Where a complete chunked body (with its trailer section) ends in `body`, if it does.
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = find(&body[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[at..at + line]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at += line + 2;
        if size == 0 {
            if body[at..].starts_with(b"\r\n") {
                return Some(at + 2);
            }
            return find(&body[at..], b"\r\n\r\n").map(|i| at + i + 4);
        }
        at += size + 2;
        if at > body.len() {
            return None;
        }
    }
}

/// The data of a chunked body (its chunk framing and trailers left out).
fn chunk_data(body: &str) -> String {
    let mut data = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        data.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    data
}

/// A client connection that reads whole responses.
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Client {
    async fn connect(running: &Running) -> Client {
        Client {
            stream: TcpStream::connect(running.http_addr)
                .await
                .expect("connect"),
            pending: Vec::new(),
        }
    }

    /// Sends `GET target` for the test host.
    async fn get(&mut self, target: &str) {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        self.write(request.as_bytes()).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next response (head and body as text), or `None` when the proxy closed.
    async fn response(&mut self) -> Option<String> {
        self.read_response(false).await
    }

    /// The response to a HEAD request.
    async fn head_response(&mut self) -> Option<String> {
        self.read_response(true).await
    }

    async fn read_response(&mut self, head_request: bool) -> Option<String> {
        let read = read_message(
            &mut self.stream,
            &mut self.pending,
            true,
            head_request,
            |_: &[u8]| {},
        );
        let message = tokio::time::timeout(STEP, read)
            .await
            .expect("a response in time")?;
        Some(String::from_utf8_lossy(&message).into_owned())
    }

    /// Everything the proxy sends from here until it closes the connection.
    async fn until_closed(&mut self) -> String {
        let mut received = std::mem::take(&mut self.pending);
        let read = self.stream.read_to_end(&mut received);
        tokio::time::timeout(STEP, read)
            .await
            .expect("the proxy closes the connection in time")
            .expect("reading until the proxy closes");
        String::from_utf8_lossy(&received).into_owned()
    }

    /// Whether the proxy closed the connection (after any buffered bytes).
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(STEP, self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// A scripted backend behind a running proxy: the manifest folder (kept for the test's
/// lifetime), the proxy, and the requests the backend received.
async fn rig(script: Script) -> (tempfile::TempDir, Running, Seen) {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let (backend, seen) = spawn_scripted(script).await;
    let running = serve(dir.path(), backend).await;
    (dir, running, seen)
}

async fn serve(dir: &Path, backend: SocketAddr) -> Running {
    serve_with(dir, backend, quiet_proxy()).await
}

async fn serve_with(dir: &Path, backend: SocketAddr, config: ProxyConfig) -> Running {
    let mut text = service_yaml(NAMESPACE, "raw", PORT, None);
    text.push_str("---\n");
    text.push_str(&endpoint_slices_yaml(
        NAMESPACE,
        "raw",
        None,
        &[(backend, true)],
    ));
    write_manifest(dir, "service.yaml", &text);
    let ingress = ingress_yaml(
        NAMESPACE,
        "raw",
        CLASS,
        None,
        &[IngressRule::new(
            Some(HOST),
            vec![IngressPath::new("/", "Prefix", "raw", PORT)],
        )],
    );
    write_manifest(dir, "ingress.yaml", &ingress);
    start_with(dir, CLASS, config, false).await
}

fn ok_with(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: raw\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers with the request line as the body.
fn echo_line(request: &[u8]) -> (Vec<u8>, bool) {
    let text = String::from_utf8_lossy(request);
    (ok_with(text.lines().next().unwrap_or("")), false)
}

fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_dir, running, _seen) = rig(echo_line).await;
    let mut client = Client::connect(&running).await;
    client
        .write(
            format!("GET /one HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET /two HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET /three HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    for path in ["/one", "/two", "/three"] {
        let response = client.response().await.expect("a response");
        assert_eq!(status_of(&response), "200", "{response}");
        assert!(
            response.ends_with(&format!("GET {path} HTTP/1.1")),
            "{response}"
        );
        assert!(response.contains("X-Backend: raw"), "{response}");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn http10_clients_get_keep_alive_only_when_asked() {
    let (_dir, running, _seen) = rig(echo_line).await;

    let mut client = Client::connect(&running).await;
    client
        .write(format!("GET /a HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "200", "{response}");
    assert!(response.contains("Connection: close"), "{response}");
    assert!(
        client.closed().await,
        "an HTTP/1.0 connection without keep-alive closes"
    );

    let mut client = Client::connect(&running).await;
    for _ in 0..2 {
        client
            .write(
                format!("GET /b HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        let response = client.response().await.expect("a response");
        assert_eq!(status_of(&response), "200", "{response}");
        assert!(response.contains("Connection: keep-alive"), "{response}");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn chunked_upload_reaches_the_backend_chunked() {
    let (_dir, running, mut seen) = rig(|_| (ok_with("stored"), false)).await;
    let mut client = Client::connect(&running).await;
    client
        .write(format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").as_bytes())
        .await;
    // The first chunk reaches the backend before the client has sent the rest of the body.
    seen.received(b"\r\n\r\n5\r\nhello\r\n").await;
    client.write(b"6;ext=1\r\n world\r\n0\r\n\r\n").await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "200", "{response}");
    let request = seen.request().await;
    assert!(
        request.contains("Transfer-Encoding: chunked\r\n"),
        "{request}"
    );
    // Re-framed on the way: the chunk extension is gone, the data is the same.
    let (_, body) = request.split_once("\r\n\r\n").expect("a whole head");
    assert!(!body.contains("ext"), "{request}");
    assert_eq!(chunk_data(body), "hello world", "{request}");
    assert!(body.ends_with("\r\n0\r\n\r\n"), "{request}");
    running.shutdown().await;
}

#[tokio::test]
async fn expect_continue_is_answered_by_the_proxy() {
    let (_dir, running, mut seen) = rig(|_| (ok_with("stored"), false)).await;
    let mut client = Client::connect(&running).await;
    client
        .write(format!("PUT /up HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n").as_bytes())
        .await;
    let interim = client.response().await.expect("100 Continue");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    client.write(b"data").await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "200", "{response}");
    let request = seen.request().await;
    assert!(
        !request.to_ascii_lowercase().contains("expect:"),
        "{request}"
    );
    assert!(request.ends_with("\r\n\r\ndata"), "{request}");
    running.shutdown().await;
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_reaching_a_backend() {
    let (_dir, running, mut seen) = rig(echo_line).await;
    let attacks = [
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example\r\n\r\n"),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nBad Header: x\r\n\r\n"),
    ];
    for attack in &attacks {
        let mut client = Client::connect(&running).await;
        client.write(attack.as_bytes()).await;
        let response = client.response().await.expect("an error response");
        assert_eq!(status_of(&response), "400", "{attack:?} → {response}");
        assert!(response.contains("Connection: close"), "{response}");
        assert!(client.closed().await, "{attack:?}: the connection closes");
    }
    // A bad chunk size fails the request after the head was forwarded.
    let mut client = Client::connect(&running).await;
    client
        .write(
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .as_bytes(),
        )
        .await;
    let response = client.response().await.expect("an error response");
    assert_eq!(status_of(&response), "400", "{response}");
    assert!(client.closed().await);
    // Only the last request reached the backend: its head, before the body broke. The proxy then
    // closes that upstream connection; until it has, nothing else arrived on any connection.
    let (before, unfinished) = seen.closed().await;
    let received: Vec<u8> = before
        .iter()
        .flat_map(|event| match event {
            Event::Received(bytes) => bytes.clone(),
            other => panic!("the backend saw {other:?}"),
        })
        .collect();
    assert_eq!(
        received, unfinished,
        "everything arrived on that connection"
    );
    let unfinished = String::from_utf8_lossy(&unfinished);
    assert!(
        unfinished.starts_with("POST / HTTP/1.1\r\n")
            && unfinished.contains("Transfer-Encoding: chunked\r\n")
            && unfinished.ends_with("\r\n\r\n"),
        "{unfinished:?}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn oversized_heads_are_431() {
    let (_dir, running, _seen) = rig(echo_line).await;
    let mut client = Client::connect(&running).await;
    let big = "a".repeat(40 * 1024);
    client
        .write(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let response = client.response().await.expect("an error response");
    assert_eq!(status_of(&response), "431", "{response}");
    let mut client = Client::connect(&running).await;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    client
        .write(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{many}\r\n").as_bytes())
        .await;
    let response = client.response().await.expect("an error response");
    assert_eq!(status_of(&response), "431", "{response}");
    running.shutdown().await;
}

/// Answers with a body delimited by closing the connection.
fn close_delimited(_: &[u8]) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
        true,
    )
}

#[tokio::test]
async fn close_delimited_bodies_are_rechunked_for_http11_clients() {
    let (_dir, running, _seen) = rig(close_delimited).await;
    let mut client = Client::connect(&running).await;
    for _ in 0..2 {
        client.get("/").await;
        let response = client.response().await.expect("a response");
        assert!(
            response.contains("Transfer-Encoding: chunked\r\n"),
            "{response}"
        );
        assert!(
            response.ends_with("\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n"),
            "{response}"
        );
    }
    let mut client = Client::connect(&running).await;
    client
        .write(
            format!("GET / HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .await;
    let response = client.response().await.expect("a response");
    assert!(response.contains("Connection: close"), "{response}");
    assert!(response.ends_with("\r\n\r\nuntil the end"), "{response}");
    running.shutdown().await;
}

fn chunked_reply(_: &[u8]) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        false,
    )
}

#[tokio::test]
async fn chunked_bodies_pass_through_or_are_decoded_for_http10() {
    let (_dir, running, _seen) = rig(chunked_reply).await;
    let mut client = Client::connect(&running).await;
    client.get("/").await;
    let response = client.response().await.expect("a response");
    assert!(
        response.contains("Transfer-Encoding: chunked\r\n"),
        "{response}"
    );
    let (_, body) = response.split_once("\r\n\r\n").expect("a whole head");
    assert_eq!(chunk_data(body), "abcdefg", "{response}");
    assert!(
        body.ends_with("\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "{response}"
    );

    let mut client = Client::connect(&running).await;
    client
        .write(format!("GET / HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let response = client.response().await.expect("a response");
    assert!(!response.contains("Transfer-Encoding"), "{response}");
    assert!(response.ends_with("\r\n\r\nabcdefg"), "{response}");
    running.shutdown().await;
}

fn head_or_not_modified(request: &[u8]) -> (Vec<u8>, bool) {
    if request.starts_with(b"HEAD ") {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec(),
            false,
        )
    } else if find(request, b"If-None-Match").is_some() {
        (
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec(),
            false,
        )
    } else {
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            false,
        )
    }
}

#[tokio::test]
async fn bodiless_and_interim_responses_keep_the_connection_in_step() {
    let (_dir, running, _seen) = rig(head_or_not_modified).await;
    let mut client = Client::connect(&running).await;
    client
        .write(format!("HEAD / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await;
    let response = client.head_response().await.expect("a response");
    assert_eq!(status_of(&response), "200", "{response}");
    assert!(response.contains("Content-Length: 1234\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\n"), "{response}");

    client
        .write(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nIf-None-Match: \"x\"\r\n\r\n").as_bytes())
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "304", "{response}");

    client.get("/").await;
    let interim = client.response().await.expect("103");
    assert_eq!(status_of(&interim), "103", "{interim}");
    assert!(interim.contains("Link: </s.css>; rel=preload"), "{interim}");
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "200", "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    running.shutdown().await;
}

/// Answers one request per connection and closes without saying so, like a backend whose
/// keep-alive timeout is shorter than the proxy's.
fn one_per_connection(request: &[u8]) -> (Vec<u8>, bool) {
    (echo_line(request).0, true)
}

#[tokio::test]
async fn closed_pooled_connections_are_replaced_transparently() {
    let (_dir, running, _seen) = rig(one_per_connection).await;
    let mut client = Client::connect(&running).await;
    for i in 0..5 {
        client.get(&format!("/{i}")).await;
        let response = client.response().await.expect("a response");
        assert_eq!(status_of(&response), "200", "request {i}: {response}");
        assert!(
            response.ends_with(&format!("GET /{i} HTTP/1.1")),
            "{response}"
        );
    }
    running.shutdown().await;
}

fn broken_framing(_: &[u8]) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        true,
    )
}

#[tokio::test]
async fn invalid_upstream_responses_are_502() {
    let (_dir, running, _seen) = rig(broken_framing).await;
    let mut client = Client::connect(&running).await;
    client.get("/").await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "502", "{response}");
    // The client connection survives an upstream's mistake.
    client.get("/").await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "502", "{response}");
    running.shutdown().await;
}

#[tokio::test]
async fn absolute_form_targets_route_by_their_authority() {
    let (_dir, running, mut seen) = rig(echo_line).await;
    let mut client = Client::connect(&running).await;
    client
        .write(
            format!("GET http://{HOST}/abs?q=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "200", "{response}");
    let request = seen.request().await;
    assert!(
        request.starts_with("GET /abs?q=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains(&format!("Host: {HOST}\r\n")), "{request}");
    assert!(!request.contains("ignored.example"), "{request}");
    running.shutdown().await;
}

/// A proxy whose body relays give up after a short stall.
async fn impatient_rig(script: Script) -> (tempfile::TempDir, Running, Seen) {
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    let (backend, seen) = spawn_scripted(script).await;
    let config = ProxyConfig {
        body_idle_timeout: Duration::from_millis(300),
        ..quiet_proxy()
    };
    let running = serve_with(dir.path(), backend, config).await;
    (dir, running, seen)
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_the_connection_closes() {
    let (_dir, running, _seen) = impatient_rig(echo_line).await;
    let mut client = Client::connect(&running).await;
    client
        .write(
            format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nabc")
                .as_bytes(),
        )
        .await;
    let response = client.response().await.expect("a response");
    assert_eq!(status_of(&response), "408", "{response}");
    assert_eq!(
        header_value(&response, "content-length"),
        Some("20"),
        "{response}"
    );
    assert_eq!(
        header_value(&response, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        response.ends_with("\r\n\r\n408 Request Timeout\n"),
        "{response}"
    );
    assert!(client.closed().await);
    running.shutdown().await;
}

/// Sends a head promising 100 bytes, then 10 of them, and keeps the connection open.
fn stalls_mid_body(_request: &[u8]) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
        false,
    )
}

#[tokio::test]
async fn a_stalled_response_body_closes_the_client_connection() {
    let (_dir, running, _seen) = impatient_rig(stalls_mid_body).await;
    let mut client = Client::connect(&running).await;
    client.get("/slow").await;
    // The head and the first bytes arrive; then the proxy gives up and closes (well within the
    // read's own time limit) instead of holding the connection for as long as the backend does.
    let received = client.until_closed().await;
    let (head, body) = received
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head: {received:?}"));
    assert_eq!(status_of(head), "200", "{received:?}");
    assert_eq!(header_value(head, "content-length"), Some("100"), "{head}");
    assert_eq!(
        body, "0123456789",
        "the bytes the backend sent before stalling, and nothing after them"
    );
    running.shutdown().await;
}
