//! Upstream connections of the HTTP/2 path: hyper client connections per worker, keyed by
//! endpoint and TLS configuration — HTTP/1.1 connections kept idle for reuse, HTTP/2
//! connections (gRPC and other HTTP/2 backends) shared by concurrent streams.
//!
//! An HTTP/1.1 connection goes back to the pool when its response body has been read to the end,
//! so a pooled connection is always idle. A request that could not be written on a pooled
//! connection (the upstream closed it meanwhile), or a bodiless one on a connection idle for a
//! while that the upstream closed under it before answering, is sent again once on a fresh
//! connection.
//!
//! Each HTTP/1.1 connection is watched while it carries an exchange: one that relays no body
//! frame either way for longer than the exchange's stall limit (a silent upstream, or a client
//! that stopped taking the response, e.g. an HTTP/2 client that grants no flow-control window)
//! is closed, so the upstream is released.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::forward::Finish;
use crate::quickack::{Acking, Frames, Responses};
use table::fasthash::BuildFast;
use table::UpstreamTls;

/// Where an upstream is: an endpoint address, or a DNS name (ExternalName Services), resolved on
/// each new connection so DNS changes are followed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Pod endpoint.
    Addr(SocketAddr),
    /// A name and port.
    Name(Arc<str>, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => a.fmt(f),
            Target::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A new TCP connection to `target` (no Nagle delay), within `timeout`.
pub(crate) async fn connect_tcp(
    target: &Target,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let connecting = async {
        match target {
            Target::Addr(addr) => TcpStream::connect(addr).await,
            Target::Name(host, port) => TcpStream::connect((&**host, *port)).await,
        }
    };
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The DNS name of the Service behind a backend named `namespace/service:port`
/// (`service.namespace.svc`), the name an upstream certificate is checked against by default.
pub(crate) fn service_dns_name(backend: &str) -> String {
    let (ns, rest) = backend.split_once('/').unwrap_or(("default", backend));
    let service = rest.split_once(':').map_or(rest, |(s, _)| s);
    format!("{service}.{ns}.svc")
}

/// A new connection to `target`, through TLS when `tls` is given, within `timeout`. Boxed:
/// connecting is rare next to reusing a pooled connection, and its state (a TLS handshake)
/// would otherwise take room in the future of every request that might connect.
pub(crate) fn open<'a>(
    target: &'a Target,
    tls: Option<&'a UpstreamTls>,
    backend: &'a str,
    timeout: Duration,
) -> Pin<Box<impl std::future::Future<Output = Result<Stream, UpstreamError>> + Send + 'a>> {
    Box::pin(async move {
        let tcp = connect_tcp(target, timeout).await?;
        Ok(match tls {
            None => Stream::Tcp(tcp),
            Some(tls) => Stream::Tls(Box::new(tls_handshake(tcp, tls, backend, timeout).await?)),
        })
    })
}

/// The TLS handshake with an upstream over `tcp`, within `timeout`.
pub(crate) async fn tls_handshake(
    tcp: TcpStream,
    tls: &UpstreamTls,
    backend: &str,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let name = tls
        .name
        .clone()
        .unwrap_or_else(|| service_dns_name(backend));
    let name =
        ServerName::try_from(name).map_err(|_| UpstreamError::Protocol("invalid TLS name"))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Tls)
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No TCP connection could be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection attempt took longer than the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// Reading from or writing to the connection failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The upstream closed the connection before answering.
    #[error("connection closed before a response")]
    Closed,
    /// The upstream's response was not valid HTTP/1.x.
    #[error("invalid response: {0}")]
    Protocol(&'static str),
    /// The TLS handshake with the upstream failed.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
}

/// How a request reaches its upstream.
#[derive(Clone, Copy)]
pub(crate) struct Route<'a> {
    /// HTTP/2 (gRPC and other HTTP/2 backends) rather than HTTP/1.1.
    pub(crate) h2: bool,
    /// TLS towards the upstream, when the route asks for it.
    pub(crate) tls: Option<&'a UpstreamTls>,
    /// The backend's name (for the default TLS name).
    pub(crate) backend: &'a str,
    /// How long connecting (and the TLS handshake) may take.
    pub(crate) connect_timeout: Duration,
    /// How long an HTTP/1.1 exchange may relay no body frame (and get no response head) before
    /// its connection is closed.
    pub(crate) stall: Duration,
}

/// How long a pooled connection must have sat idle for a bodiless request sent on it to be kept
/// for sending again. Upstreams close idle connections after a keep-alive timeout of a second or
/// more, and a request crossing that close is what the copy is for; on a connection reused
/// sooner a close is almost always seen before the request goes out, and copying every request
/// of a busy connection would cost more than the rare race.
const RESEND_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pooled connections are kept apart by endpoint, TLS configuration (0: cleartext) and protocol.
type Key = (Target, u64, bool);

/// Idle HTTP/1.1 connections and shared HTTP/2 connections by target. One pool per worker
/// thread, so the lock is uncontended.
pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<Idle>, BuildFast>>,
    h2: Mutex<HashMap<Key, http2::SendRequest<RequestBody>, BuildFast>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// How often a connection's stall watch looks.
    stall_tick: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An HTTP/1.1 connection: its sender, and the watch its task keeps over it.
struct Conn {
    sender: http1::SendRequest<RequestBody>,
    watch: Arc<Watch>,
}

/// What the stall watch of one HTTP/1.1 connection reads: progress, and the limit of the
/// exchange it carries.
#[derive(Debug, Default)]
struct Watch {
    /// Counts body frames relayed either way, and exchanges begun: any change is progress.
    moved: AtomicU64,
    /// The longest the current exchange may make no progress, in milliseconds; 0 while idle.
    limit_ms: AtomicU64,
}

impl Watch {
    /// An exchange begins: it may stall for at most `limit`.
    fn busy(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
        self.limit_ms.store(ms, Ordering::Relaxed);
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// A body frame went through.
    fn moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// The exchange is over; the connection waits in the pool.
    fn idle(&self) {
        self.limit_ms.store(0, Ordering::Relaxed);
    }

    /// Looks every `tick` until the connection task `conn` ends; closes the connection (by
    /// ending its task) once an exchange has made no progress for longer than its limit.
    async fn guard(self: Arc<Self>, conn: tokio::task::AbortHandle, tick: Duration) {
        let mut seen = self.moved.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            if conn.is_finished() {
                return;
            }
            let moved = self.moved.load(Ordering::Relaxed);
            let limit = self.limit_ms.load(Ordering::Relaxed);
            if moved != seen || limit == 0 {
                seen = moved;
                quiet = Duration::ZERO;
                continue;
            }
            quiet += tick;
            if quiet.as_millis() >= u128::from(limit) {
                // The upstream is released; the exchange fails if anyone still waits on it.
                tracing::debug!("upstream exchange made no progress within its limit; closing");
                conn.abort();
                return;
            }
        }
    }
}

/// A failed exchange; when the request was never written it comes back for another endpoint.
pub enum SendError {
    /// Nothing was sent (no connection could be made): the request can go elsewhere.
    /// The request comes back when the sender took it (`None`: the caller still has it).
    NotSent(UpstreamError, Option<Box<Request<RequestBody>>>),
    /// The request was sent, or the failure came after that.
    Failed(UpstreamError),
}

impl Pool {
    /// An empty pool for a proxy with `config`.
    pub fn new(config: &crate::ProxyConfig) -> Arc<Self> {
        // A stall is noticed within a quarter of the longest default limit past that limit.
        let longest = config.response_header_timeout.max(config.body_idle_timeout);
        Arc::new(Pool {
            idle: Mutex::new(HashMap::default()),
            h2: Mutex::new(HashMap::default()),
            idle_timeout: config.upstream_idle_timeout,
            max_idle: config.upstream_max_idle,
            stall_tick: (longest / 4).max(Duration::from_millis(10)),
        })
    }

    /// An idle connection to `key`, and how long it sat idle.
    fn take_idle(&self, key: &Key) -> Option<(Conn, Duration)> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(idle) = list.pop() {
            let idle_for = idle.since.elapsed();
            if !idle.conn.sender.is_closed() && idle_for < self.idle_timeout {
                return Some((idle.conn, idle_for));
            }
        }
        None
    }

    fn put_back(&self, key: Key, conn: Conn) {
        conn.watch.idle();
        if conn.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(key).or_default();
            if list.len() < self.max_idle {
                list.push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        }
    }

    async fn connect_h1(&self, target: &Target, route: &Route<'_>) -> Result<Conn, UpstreamError> {
        let io = Acking::new(
            open(target, route.tls, route.backend, route.connect_timeout).await?,
            Responses::default(),
        );
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        // The watch runs beside the connection rather than in its task, which wakes for every
        // read and write.
        let watch = Arc::new(Watch::default());
        tokio::spawn(watch.clone().guard(task.abort_handle(), self.stall_tick));
        Ok(Conn { sender, watch })
    }

    /// The shared HTTP/2 connection to `target`, made when there is none (or it closed).
    async fn h2_sender(
        &self,
        key: &Key,
        route: &Route<'_>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        if let Some(sender) = self.h2.lock().ok().and_then(|m| m.get(key).cloned()) {
            if !sender.is_closed() {
                return Ok(sender);
            }
        }
        // Boxed: connecting is rare, and the HTTP/2 handshake's state should not grow every
        // request's future.
        Box::pin(self.connect_h2(key, route)).await
    }

    /// A new HTTP/2 connection for `key`, shared from now on.
    async fn connect_h2(
        &self,
        key: &Key,
        route: &Route<'_>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let io = Acking::new(
            open(&key.0, route.tls, route.backend, route.connect_timeout).await?,
            Frames::default(),
        );
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        if let Ok(mut map) = self.h2.lock() {
            map.insert(key.clone(), sender.clone());
        }
        Ok(sender)
    }

    /// Sends `req` to `target`: over HTTP/2 on the shared connection, or over HTTP/1.1 on a
    /// pooled connection when one is idle, else on a new one.
    pub async fn send(
        self: &Arc<Self>,
        target: Target,
        req: Request<RequestBody>,
        route: Route<'_>,
    ) -> Result<Response<PooledBody>, SendError> {
        let key = (target, route.tls.map_or(0, |t| t.id), route.h2);
        if route.h2 {
            let mut sender = match self.h2_sender(&key, &route).await {
                Ok(sender) => sender,
                Err(e) => return Err(SendError::NotSent(e, Some(Box::new(req)))),
            };
            return match sender.send_request(req).await {
                Ok(response) => Ok(response.map(|inner| PooledBody::hyper(inner, None))),
                Err(e) => Err(SendError::Failed(e.into())),
            };
        }
        let mut req = req;
        if let Some((mut conn, idle_for)) = self.take_idle(&key) {
            // Without a body, the request can be sent again should the upstream close this
            // connection under it (its keep-alive ending as the request arrives).
            let again = (idle_for >= RESEND_AFTER_IDLE && req.body().is_end_stream())
                .then(|| resend_copy(&req));
            if conn.sender.ready().await.is_ok() {
                conn.watch.busy(route.stall);
                req.body_mut().watch(&conn.watch);
                match conn.sender.try_send_request(req).await {
                    Ok(response) => return Ok(self.wrap(key, conn, response)),
                    Err(mut e) => match (e.take_message(), again) {
                        // Never written: the connection closed under us; use a fresh one.
                        (Some(unsent), _) => req = unsent,
                        (None, Some(copy)) if closed_under_us(e.error()) => {
                            tracing::debug!(error = %e.error(), "pooled connection closed by the upstream; sending again");
                            req = *copy;
                        }
                        (None, _) => {
                            return Err(SendError::Failed(UpstreamError::Http(e.into_error())))
                        }
                    },
                }
            }
        }
        // Boxed, as for HTTP/2: the HTTP/1.1 handshake's state is large and rarely needed.
        let mut conn = match Box::pin(self.connect_h1(&key.0, &route)).await {
            Ok(conn) => conn,
            Err(e) => return Err(SendError::NotSent(e, Some(Box::new(req)))),
        };
        conn.watch.busy(route.stall);
        req.body_mut().watch(&conn.watch);
        match conn.sender.send_request(req).await {
            Ok(response) => Ok(self.wrap(key, conn, response)),
            Err(e) => Err(SendError::Failed(e.into())),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        key: Key,
        conn: Conn,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let done = response.body().is_end_stream();
        let mut release = Some(Release {
            pool: self.clone(),
            key,
            conn,
        });
        if done && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(r) = release.take() {
                r.give_back();
            }
        }
        response.map(|inner| PooledBody::hyper(inner, release))
    }
}

/// The request again, without a body, for sending it once more (boxed: it is rarely made, and
/// the future holding it should not grow by a request for everyone).
pub(crate) fn resend_copy(req: &Request<RequestBody>) -> Box<Request<RequestBody>> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Box::new(copy)
}

/// Whether an exchange on a reused connection failed because the connection was closed or
/// broken before any answer (rather than because the upstream answered something invalid).
fn closed_under_us(e: &hyper::Error) -> bool {
    e.is_incomplete_message()
        || e.is_canceled()
        || e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// An upstream byte stream, cleartext or TLS over TCP, for both pools.
pub(crate) enum Stream {
    /// Cleartext.
    Tcp(TcpStream),
    /// TLS towards the upstream.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl crate::quickack::QuickAck for Stream {
    fn quickack(&self) {
        crate::quickack::quickack(self.tcp());
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

struct Release {
    pool: Arc<Pool>,
    key: Key,
    conn: Conn,
}

impl Release {
    fn give_back(self) {
        self.pool.put_back(self.key, self.conn);
    }
}

/// A request body on its way upstream: the client's body, cut off with an error once it grows
/// past the route's limit (`proxy-body-size`).
pub struct RequestBody {
    /// `None`: no body.
    inner: Option<crate::h2conn::ClientBody>,
    limit: u64,
    seen: u64,
    exceeded: Arc<AtomicBool>,
    /// The watch of the connection the body goes out on, told of every frame.
    watch: Option<Arc<Watch>>,
}

impl RequestBody {
    /// The client's body, limited to `limit` bytes (0 = unlimited); `exceeded` is set when it
    /// goes past the limit.
    pub fn new(inner: crate::h2conn::ClientBody, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        RequestBody {
            inner: Some(inner),
            limit,
            seen: 0,
            exceeded,
            watch: None,
        }
    }

    /// No body at all.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            limit: 0,
            seen: 0,
            exceeded: Arc::default(),
            watch: None,
        }
    }

    /// Tells `watch` of every frame from now on (a bodiless request has none to tell).
    fn watch(&mut self, watch: &Arc<Watch>) {
        if !self.is_end_stream() {
            self.watch = Some(watch.clone());
        }
    }
}

/// The body went past its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the route allows")]
pub struct TooLarge;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(watch) = &self.watch {
                    watch.moved();
                }
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.limit > 0 && self.seen > self.limit {
                        self.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// An upstream response body that returns its connection to the pool once read to the end, and
/// completes the request's record (count, access log) when it is dropped: with the response's
/// status once the body ended or broke off upstream, as cancelled by the client (499) when it is
/// dropped before that.
pub struct PooledBody {
    inner: Inner,
    release: Option<Release>,
    /// The record of the request this body answers, on the HTTP/2 path.
    pub(crate) finish: Option<Box<Finish>>,
}

/// Where a response body comes from.
enum Inner {
    /// A connection driven by hyper (HTTP/2 upstreams, requests with bodies).
    Hyper(Incoming),
    /// A connection of the HTTP/1.x path's pool, read directly.
    Raw(crate::h1::bridge::RawBody),
}

impl PooledBody {
    /// A body read from a connection of the HTTP/1.x path's pool.
    pub(crate) fn raw(body: crate::h1::bridge::RawBody) -> Self {
        PooledBody {
            inner: Inner::Raw(body),
            release: None,
            finish: None,
        }
    }

    fn hyper(inner: Incoming, release: Option<Release>) -> Self {
        PooledBody {
            inner: Inner::Hyper(inner),
            release,
            finish: None,
        }
    }
}

/// A response body that broke off.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Hyper(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BodyError),
            Inner::Raw(inner) => inner.poll_frame(cx).map_err(|e| Box::new(e) as BodyError),
        };
        let ended = match &polled {
            Poll::Pending => return polled,
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(r) = &this.release {
                    r.conn.watch.moved();
                }
                if let (Some(finish), Some(data)) = (this.finish.as_mut(), frame.data_ref()) {
                    finish.sent(data.len());
                }
                this.is_end_stream()
            }
            Poll::Ready(Some(Err(_))) => {
                // A broken exchange: the connection is not reused, and the request is over
                // (not cancelled by the client).
                this.release = None;
                if let Some(finish) = this.finish.as_mut() {
                    finish.complete();
                }
                return polled;
            }
        };
        if ended {
            if let Some(r) = this.release.take() {
                r.give_back();
            }
            if let Some(finish) = this.finish.as_mut() {
                finish.complete();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(inner) => inner.is_end_stream(),
            Inner::Raw(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(inner) => inner.size_hint(),
            Inner::Raw(inner) => inner.size_hint(),
        }
    }
}
