//! Tests on the wire: backends that speak HTTP/1.1 by hand, for what a well-behaved server
//! library will not do (close a keep-alive connection at a chosen moment, send
//! connection-specific fields, write a body into a peer that has stopped reading); Portcullis
//! started on a few manifests of class `nginx`; and an HTTP/2 client on the `h2` crate, which
//! sends exactly the frames a test asks for.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use portcullis::{Running, Settings};
use proxy::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{
    endpoint_slice_yaml, ingress_yaml, send, service_yaml, write_manifest, IngressPath,
    IngressRule, Server, TestRequest, NAMESPACE,
};

/// The ingress class the manifests below are written for (ingress-nginx's).
const CLASS: &str = "nginx";

/// Upper bound on any wait below: a failure guard, not a measurement.
const GUARD: Duration = Duration::from_secs(30);

/// Serves raw TCP on a fresh loopback port: every accepted connection goes to `handler` with
/// its number (0 for the first connection, 1 for the next, …).
pub async fn spawn_raw<F, Fut>(handler: F) -> Server
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for a test backend");
    spawn_raw_on(listener, handler).await
}

/// Like [`spawn_raw`], on a listener the test made (with its own socket options).
pub async fn spawn_raw_on<F, Fut>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener
        .local_addr()
        .expect("local address of a test backend");
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        let accepted = AtomicUsize::new(0);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let n = accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler(n, stream));
        }
    });
    Server { addr, task }
}

/// A request head as a raw backend read it.
#[derive(Clone, Debug)]
pub struct RawHead {
    /// The request line.
    pub line: String,
    /// The fields, names lower-cased, in order.
    pub fields: Vec<(String, String)>,
}

impl RawHead {
    /// The first value of the field `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The declared body length (0 without Content-Length).
    pub fn content_length(&self) -> usize {
        self.get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Reads one request head from `stream`, keeping what follows it in `buf`; `None` when the
/// peer closes (or breaks) the connection first.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawHead> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut lines = text.split("\r\n");
            let line = lines.next().unwrap_or_default().to_string();
            let fields = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Some(RawHead { line, fields });
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads and discards a body of `len` bytes, the start of which may already be in `buf`.
pub async fn skip_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Option<()> {
    let mut left = len;
    let have = left.min(buf.len());
    buf.drain(..have);
    left -= have;
    let mut chunk = [0u8; 4096];
    while left > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if n <= left => left -= n,
            Ok(n) => {
                buf.extend_from_slice(&chunk[left..n]);
                left = 0;
            }
        }
    }
    Some(())
}

/// Waits until the peer closes the connection (or it breaks), discarding what it sends.
pub async fn wait_closed(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

/// Writes a keep-alive response naming the connection that served it.
pub async fn answer(stream: &mut TcpStream, conn: usize) -> bool {
    let body = format!("conn {conn}");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.is_ok()
}

// ---------------------------------------------------------------------------------------------
// Portcullis on a few manifests
// ---------------------------------------------------------------------------------------------

/// Portcullis on a folder, and the backends it routes to (kept running as long as it).
pub struct Site {
    /// The running Portcullis.
    pub running: Running,
    _dir: tempfile::TempDir,
    _backends: Vec<Server>,
}

impl Site {
    /// Its HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.running.http_addr
    }
}

/// Where Portcullis listens besides HTTP.
#[derive(Clone, Copy, Default)]
pub struct Listening {
    /// An HTTPS listener.
    pub https: bool,
    /// The admin server.
    pub admin: bool,
}

/// Starts Portcullis on `manifests` (class `nginx`) routing to `backends`, HTTP (and what
/// `listening` asks for) on fresh loopback ports.
pub async fn site(
    manifests: &[String],
    proxy: ProxyConfig,
    listening: Listening,
    backends: Vec<Server>,
) -> Site {
    let Listening { https, admin } = listening;
    let dir = tempfile::tempdir().expect("a temporary manifest folder");
    write_manifest(dir.path(), "site.yaml", &manifests.join("---\n"));
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    let running = portcullis::start(Settings {
        manifests: vec![dir.path().to_path_buf()],
        http_addr: loopback,
        https_addr: https.then_some(loopback),
        admin_addr: admin.then_some(loopback),
        translate: translate::Options::nginx_compat(),
        proxy,
    })
    .await
    .expect("Portcullis starts");
    Site {
        running,
        _dir: dir,
        _backends: backends,
    }
}

/// A Service named `name` with one endpoint at `addr`.
pub fn service_at(name: &str, addr: SocketAddr, ready: bool) -> String {
    format!(
        "{}---\n{}",
        service_yaml(NAMESPACE, name, 80, None),
        endpoint_slice_yaml(NAMESPACE, name, &format!("{name}-0"), None, addr, ready)
    )
}

/// An Ingress of class `nginx` sending every path of `host` to `service`, with annotations.
pub fn ingress(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let yaml = ingress_yaml(
        NAMESPACE,
        name,
        CLASS,
        None,
        &[IngressRule::new(
            Some(host),
            vec![IngressPath::new("/", "Prefix", service, 80)],
        )],
    );
    if annotations.is_empty() {
        return yaml;
    }
    super::annotate(&yaml, annotations)
}

/// A free loopback address nothing listens on.
pub async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address")
}

/// The next event a backend reports.
pub async fn next<T>(events: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(GUARD, events.recv())
        .await
        .expect("the backend reports within the guard")
        .expect("the backend is running")
}

/// The count of requests with `status` in the admin server's metrics.
pub async fn requests_with_status(site: &Site, status: &str) -> u64 {
    let admin = site.running.admin_addr.expect("an admin server");
    let metrics = send(admin, &TestRequest::get(admin.to_string(), "/metrics"))
        .await
        .expect("metrics")
        .text();
    let wanted = format!("status=\"{status}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("nginx_ingress_controller_requests{") && l.contains(&wanted))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------------------------------------
// An HTTP/2 client (the h2 crate)
// ---------------------------------------------------------------------------------------------

/// An HTTP/2 client connection.
pub type H2 = h2::client::SendRequest<Bytes>;

/// An h2c connection with prior knowledge; the task driving it ends when the connection does.
pub async fn h2_connect(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> (H2, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = builder.handshake(tcp).await.expect("h2 handshake");
    (client, tokio::spawn(connection))
}

/// Sends a request (with `body` as DATA frames respecting flow control, or none) and returns
/// the response head and its body stream.
pub async fn h2_send(
    client: &H2,
    request: Request<()>,
    body: Option<Vec<Bytes>>,
) -> Response<h2::RecvStream> {
    let exchange = async {
        let mut ready = client
            .clone()
            .ready()
            .await
            .expect("the connection takes a stream");
        let (response, mut stream) = ready
            .send_request(request, body.is_none())
            .expect("send the request head");
        if let Some(chunks) = body {
            if chunks.is_empty() {
                stream
                    .send_data(Bytes::new(), true)
                    .expect("end the stream");
            }
            let last = chunks.len().saturating_sub(1);
            for (i, mut chunk) in chunks.into_iter().enumerate() {
                while !chunk.is_empty() {
                    stream.reserve_capacity(chunk.len());
                    let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                        .await
                        .expect("the stream stays open")
                        .expect("capacity");
                    let part = chunk.split_to(granted.min(chunk.len()));
                    stream
                        .send_data(part, i == last && chunk.is_empty())
                        .expect("send body data");
                }
            }
        }
        response.await.expect("a response")
    };
    tokio::time::timeout(GUARD, exchange)
        .await
        .expect("a response within the guard")
}

/// Reads a response body to the end, granting flow-control window as it goes.
pub async fn h2_body(response: Response<h2::RecvStream>) -> (http::response::Parts, Bytes) {
    let (parts, mut body) = response.into_parts();
    let read = async {
        let mut all = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.expect("body data");
            let _ = body.flow_control().release_capacity(data.len());
            all.extend_from_slice(&data);
        }
        Bytes::from(all)
    };
    let bytes = tokio::time::timeout(GUARD, read)
        .await
        .expect("the body within the guard");
    (parts, bytes)
}

/// A GET for `uri` without a body.
pub fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).expect("a request")
}

/// A response body made of what arrives on a channel, ending when the sender is dropped.
pub struct Paced(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|part| part.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}
