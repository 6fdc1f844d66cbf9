//! Both ends of the HTTP/1.x path as raw bytes: a client that writes exactly the bytes a test
//! gives it and reads responses as they arrive, and a backend that records every byte each
//! connection brings and answers by script; and an HTTPS backend that reports what each request
//! body held.
//!
//! Test binaries include it with `#[path = "support/raw.rs"] mod raw;`; each uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// How long one step of a test (a response, a close) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// The value of the first header field `name` in `head` (lines after the first).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Where a complete chunked body (trailer section included) ends in `body`, if it does.
pub fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = find(&body[at..], b"\r\n")?;
        let text = String::from_utf8_lossy(&body[at..at + line]).to_string();
        let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
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

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

/// What the scripted backend does with a request, decided from its head.
pub enum Answer {
    /// Reads the whole body, sends these bytes and waits for the next request.
    Reply(Vec<u8>),
    /// Reads the whole body, sends these bytes and closes the connection.
    ReplyAndClose(Vec<u8>),
    /// Sends these bytes as soon as the head has arrived, without reading the body; then
    /// closes its sending side and reads (dropping) what still arrives until the proxy closes.
    Early(Vec<u8>),
    /// Sends these bytes as soon as the head has arrived and closes at once, with the body
    /// unread (the kernel then resets the connection).
    EarlyAndClose(Vec<u8>),
}

/// Decides the answer to a request from its head (text up to and including the empty line).
pub type Script = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

#[derive(Default)]
struct Record {
    /// Every byte each connection brought, in accept order.
    received: Vec<Vec<u8>>,
    /// Whether each connection has been closed by the proxy (or the backend).
    closed: Vec<bool>,
    /// Every whole request (head and body) read, in arrival order.
    requests: Vec<Vec<u8>>,
}

/// A backend on a loopback port that records what it receives and answers by script.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    changed: watch::Receiver<u64>,
}

impl RawBackend {
    /// Starts a backend on `127.0.0.1` answering with `script`.
    pub async fn start(script: Script) -> RawBackend {
        Self::start_on("127.0.0.1:0", script).await
    }

    /// Starts a backend on `addr` (port 0 for a fresh one) answering with `script`.
    pub async fn start_on(addr: &str, script: Script) -> RawBackend {
        let listener = TcpListener::bind(addr).await.expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let record = Arc::new(Mutex::new(Record::default()));
        let (tx, changed) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let shared = record.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut r = shared.lock().expect("the record");
                    r.received.push(Vec::new());
                    r.closed.push(false);
                    r.received.len() - 1
                };
                tx.send_modify(|n| *n += 1);
                let conn = Conn {
                    stream,
                    pending: Vec::new(),
                    index,
                    record: shared.clone(),
                    tx: tx.clone(),
                };
                tokio::spawn(conn.serve(script.clone()));
            }
        });
        RawBackend {
            addr,
            record,
            changed,
        }
    }

    /// How many connections the proxy has opened so far.
    pub fn connections(&self) -> usize {
        self.record.lock().expect("the record").received.len()
    }

    /// Every byte received so far, connection by connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.record.lock().expect("the record").received.clone()
    }

    /// Every whole request received so far, as text.
    pub fn requests(&self) -> Vec<String> {
        let r = self.record.lock().expect("the record");
        r.requests
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Waits until `done` holds for what was recorded; panics after [`STEP`].
    async fn wait(&self, what: &str, done: impl Fn(&Record) -> bool) {
        let mut changed = self.changed.clone();
        let waiting = async {
            loop {
                if done(&self.record.lock().expect("the record")) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(STEP, waiting)
            .await
            .unwrap_or_else(|_| panic!("the backend never saw {what}"));
    }

    /// Waits until `n` whole requests have arrived.
    pub async fn wait_requests(&self, n: usize) {
        self.wait(&format!("{n} requests"), |r| r.requests.len() >= n)
            .await;
    }

    /// Waits until the proxy has opened `n` connections.
    pub async fn wait_connections(&self, n: usize) {
        self.wait(&format!("{n} connections"), |r| r.received.len() >= n)
            .await;
    }

    /// Waits until every connection opened so far has been closed.
    pub async fn wait_all_closed(&self) {
        self.wait("every connection closed", |r| r.closed.iter().all(|c| *c))
            .await;
    }
}

/// One connection of the backend.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    index: usize,
    record: Arc<Mutex<Record>>,
    tx: Arc<watch::Sender<u64>>,
}

impl Conn {
    async fn serve(mut self, script: Script) {
        while let Some(head_len) = self
            .read_until(|p| find(p, b"\r\n\r\n").map(|i| i + 4))
            .await
        {
            let head = String::from_utf8_lossy(&self.pending[..head_len]).into_owned();
            let answer = script(&head);
            match answer {
                Answer::Early(bytes) => {
                    self.early(&bytes).await;
                    break;
                }
                Answer::EarlyAndClose(bytes) => {
                    let _ = self.stream.write_all(&bytes).await;
                    break;
                }
                _ => {}
            }
            let Some(total) = self.read_body(&head, head_len).await else {
                break;
            };
            let request: Vec<u8> = self.pending.drain(..total).collect();
            self.record
                .lock()
                .expect("the record")
                .requests
                .push(request);
            self.tx.send_modify(|n| *n += 1);
            let (bytes, close) = match answer {
                Answer::Reply(bytes) => (bytes, false),
                Answer::ReplyAndClose(bytes) => (bytes, true),
                Answer::Early(_) | Answer::EarlyAndClose(_) => unreachable!(),
            };
            if self.stream.write_all(&bytes).await.is_err() || close {
                break;
            }
        }
        self.record.lock().expect("the record").closed[self.index] = true;
        self.tx.send_modify(|n| *n += 1);
    }

    /// Answers before reading the body, then drops what arrives until the proxy closes.
    async fn early(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).await.is_ok() {
            let _ = self.stream.shutdown().await;
            while self.read_more().await {}
        }
    }

    /// Where the body that `head` announces ends (head included), once it has arrived.
    async fn read_body(&mut self, head: &str, head_len: usize) -> Option<usize> {
        let chunked = header(head, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
        if chunked {
            return self
                .read_until(|p| chunked_end(&p[head_len..]).map(|n| head_len + n))
                .await;
        }
        let length: usize = header(head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
        self.read_until(|p| (p.len() >= head_len + length).then_some(head_len + length))
            .await
    }

    /// Reads until `ready` finds what it looks for in the pending bytes.
    async fn read_until(&mut self, ready: impl Fn(&[u8]) -> Option<usize>) -> Option<usize> {
        loop {
            if let Some(n) = ready(&self.pending) {
                return Some(n);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Reads once, recording the bytes; false at the end of the stream.
    async fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                self.record.lock().expect("the record").received[self.index]
                    .extend_from_slice(&chunk[..n]);
                self.tx.send_modify(|c| *c += 1);
                true
            }
        }
    }
}

/// A scripted backend answering every request alike.
pub fn always(answer: fn() -> Answer) -> Script {
    Arc::new(move |_| answer())
}

/// `200 OK` with `body` and a Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A response as it arrived.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The head, as text.
    pub head: String,
    /// The body bytes as framed on the wire (chunk framing included).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes raw bytes and reads whole responses.
pub struct RawClient {
    /// The connection.
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl RawClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr)
                .await
                .expect("connect to the proxy"),
            pending: Vec::new(),
        }
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the proxy");
    }

    /// The next response (`None`: the proxy closed first); a response to HEAD when
    /// `head_request`.
    pub async fn response_to(&mut self, head_request: bool) -> Option<Response> {
        tokio::time::timeout(STEP, self.read_response(head_request))
            .await
            .expect("a response in time")
    }

    /// The next response to a request other than HEAD.
    pub async fn response(&mut self) -> Option<Response> {
        self.response_to(false).await
    }

    async fn read_response(&mut self, head_request: bool) -> Option<Response> {
        let head_len = self
            .read_until(|p| find(p, b"\r\n\r\n").map(|i| i + 4))
            .await?;
        let head = String::from_utf8_lossy(&self.pending[..head_len]).into_owned();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let bodiless = head_request || status < 200 || status == 204 || status == 304;
        let chunked = header(&head, "transfer-encoding").is_some();
        let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        let end = if bodiless {
            Some(head_len)
        } else if chunked {
            self.read_until(|p| chunked_end(&p[head_len..]).map(|n| head_len + n))
                .await
        } else if let Some(n) = length {
            self.read_until(|p| (p.len() >= head_len + n).then_some(head_len + n))
                .await
        } else {
            while self.read_more().await {}
            Some(self.pending.len())
        };
        // A body cut short is returned as far as it came.
        let end = end.unwrap_or(self.pending.len());
        let message: Vec<u8> = self.pending.drain(..end).collect();
        Some(Response {
            status,
            head,
            body: message[head_len..].to_vec(),
        })
    }

    async fn read_until(&mut self, ready: impl Fn(&[u8]) -> Option<usize>) -> Option<usize> {
        loop {
            if let Some(n) = ready(&self.pending) {
                return Some(n);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    async fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Sends `head` (which announces `len` body bytes), then body bytes until the proxy stops
    /// taking them or `len` are sent; meanwhile reads the response head (and what body bytes
    /// came with it), which must arrive while the upload goes on.
    pub async fn upload(&mut self, head: &[u8], len: usize) -> Response {
        self.send(head).await;
        let (mut reader, mut writer) = self.stream.split();
        let writing = async {
            let piece = vec![b'u'; 16 * 1024];
            let mut sent = 0;
            while sent < len {
                let n = piece.len().min(len - sent);
                if writer.write_all(&piece[..n]).await.is_err() {
                    break;
                }
                sent += n;
            }
        };
        let mut head = Vec::new();
        let reading = async {
            let mut chunk = [0u8; 4096];
            while find(&head, b"\r\n\r\n").is_none() {
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
        };
        // The response must come even while the body is still being written.
        tokio::time::timeout(STEP, async {
            tokio::select! {
                () = reading => {}
                () = async { writing.await; std::future::pending::<()>().await } => {}
            }
        })
        .await
        .expect("the early answer arrives while the upload goes on");
        let text = String::from_utf8_lossy(&head).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Response {
            status,
            head: format!("{head}\r\n\r\n"),
            body: body.as_bytes().to_vec(),
        }
    }

    /// Whether the proxy closes the connection (end of stream or a reset, after any bytes
    /// already sent) within [`STEP`]; the bytes that came before the close are returned.
    pub async fn closes(&mut self) -> Option<Vec<u8>> {
        let reading = async { while self.read_more().await {} };
        tokio::time::timeout(STEP, reading).await.ok()?;
        Some(std::mem::take(&mut self.pending))
    }
}

/// A client that sends a head slowly.
/// Opens a connection to `addr`, sends `start` and then one byte every 200 ms until the proxy
/// answers (50 bytes at most); returns the bytes dribbled and what the proxy sent before closing.
pub async fn dribble(addr: SocketAddr, start: &[u8]) -> (usize, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(start).await.expect("write");
    let mut sent = 0;
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    for _ in 0..50 {
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    (sent, String::from_utf8_lossy(&received).into_owned())
}

// ---------------------------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------------------------

/// The access log lines written while this test binary runs, and a signal for each write.
pub struct AccessLines {
    text: Mutex<Vec<u8>>,
    written: Notify,
}

/// Captures the access log of every proxy in this test binary (installed once).
pub fn access_log() -> &'static AccessLines {
    static LOG: OnceLock<&'static AccessLines> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static AccessLines = Box::leak(Box::new(AccessLines {
            text: Mutex::new(Vec::new()),
            written: Notify::new(),
        }));
        struct Lines(&'static AccessLines);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .text
                    .lock()
                    .expect("the access log")
                    .extend_from_slice(bytes);
                self.0.written.notify_waiters();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
            .with_ansi(false)
            .with_writer(move || Lines(log))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    })
}

/// Waits until the access log has a line containing `needle`.
pub async fn logged(needle: &str) -> String {
    let log = access_log();
    let waiting = async {
        loop {
            let written = log.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let text =
                String::from_utf8_lossy(&log.text.lock().expect("the access log")).into_owned();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            written.await;
        }
    };
    tokio::time::timeout(STEP, waiting)
        .await
        .unwrap_or_else(|_| panic!("no access log line with {needle:?}"))
}

// ---------------------------------------------------------------------------------------------
// A TLS backend
// ---------------------------------------------------------------------------------------------

/// An HTTPS backend that reads each request body whole and answers with its length and the
/// names of its trailer fields.
pub async fn spawn_tls_counter(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?;
                        let trailers: Vec<String> = body
                            .trailers()
                            .map(|t| t.keys().map(|k| k.to_string()).collect())
                            .unwrap_or_default();
                        let text = format!("{} {}", body.to_bytes().len(), trailers.join(","));
                        let full = http_body_util::Full::new(bytes::Bytes::from(text));
                        Ok::<_, hyper::Error>(http::Response::new(full))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}
