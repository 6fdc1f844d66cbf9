//! Listeners: the accept loop, protocol choice per connection, graceful shutdown.
//!
//! HTTP/1.x is served by Portcullis's own connection loop ([`crate::h1`]); HTTP/2 (prior
//! knowledge on cleartext, ALPN `h2` over TLS) by hyper's HTTP/2 server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::LazyConfigAcceptor;

use crate::forward::{handle, ConnInfo};
use crate::h1::{self, Buf, Rewind, Stop};
use crate::proxy_protocol::{self, Header};
use crate::{Proxy, TlsConfig};

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A bound listening socket, and the TLS configuration when it terminates TLS.
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// `None` for cleartext HTTP; the server configuration for HTTPS.
    pub tls: Option<TlsConfig>,
}

impl Listener {
    /// A cleartext HTTP listener.
    pub fn http(socket: TcpListener) -> Self {
        Listener { socket, tls: None }
    }

    /// An HTTPS listener.
    pub fn https(socket: TcpListener, config: TlsConfig) -> Self {
        Listener {
            socket,
            tls: Some(config),
        }
    }
}

/// What every connection of a listener shares.
struct Shared {
    proxy: Arc<Proxy>,
    stop: Arc<Stop>,
    h2: http2::Builder<TokioExecutor>,
}

/// The largest header list an HTTP/2 client may send: the HTTP/1.x head limit, plus the 32
/// bytes per field that RFC 9113 §6.5.2 adds to each.
const H2_MAX_HEADER_LIST: u32 = (h1::codec::MAX_HEAD + 32 * h1::codec::MAX_HEADERS) as u32;

/// Streams a client may reset before the server has even picked them up; beyond this the
/// connection is closed with `ENHANCE_YOUR_CALM` (the rapid-reset attack, CVE-2023-44487).
const H2_MAX_PENDING_RESETS: usize = 20;

/// Streams a client may cancel while they are being answered before the connection is closed,
/// if it cancelled more than it let finish: a client that starts requests only to reset them
/// makes Portcullis work for nothing.
const H2_MAX_CANCELLED: u32 = 100;

/// The HTTP/2 server settings, chosen rather than inherited.
fn h2_builder(config: &crate::ProxyConfig) -> http2::Builder<TokioExecutor> {
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        // Pings find dead peers; a peer that does not answer within the timeout is dropped.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        // Streams the server itself resets for protocol errors the client caused.
        .max_local_error_reset_streams(Some(256))
        // CONTINUATION frames are bounded by h2 through the header list size above.
        .max_send_buf_size(256 * 1024);
    h2
}

/// Accepts connections on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests up to the configured grace period to finish. While the listener is at its
/// connection limit, new connections wait: one per worker accepted and held, the rest in the
/// kernel's accept queue.
pub async fn serve(proxy: Arc<Proxy>, listener: Listener, shutdown: impl Future<Output = ()>) {
    let h2 = h2_builder(&proxy.config);
    let grace = proxy.config.shutdown_grace;
    let slots = proxy.slots[usize::from(listener.tls.is_some())].clone();
    let shared = Arc::new(Shared {
        proxy,
        stop: Arc::new(Stop::default()),
        h2,
    });
    // Every connection task holds a sender; the receiver sees the channel close when the last
    // one has ended.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let Listener { socket, tls } = listener;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let (mut stream, client) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and similar: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                // At the limit, this connection waits for a slot and no other is accepted
                // meanwhile: at most one connection per worker is held unserved, and the slot
                // goes to a worker that has a connection for it.
                let slot = tokio::select! {
                    slot = take_slot(slots.as_ref()) => slot,
                    () = &mut shutdown => break,
                };
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else { continue };
                let shared = shared.clone();
                let alive = alive.clone();
                match &tls {
                    None => {
                        tokio::spawn(async move {
                            if let Some(info) = conn_info(&shared.proxy, &mut stream, client, local, scheme).await {
                                cleartext(shared, info, stream).await;
                            }
                            drop((alive, slot));
                        });
                    }
                    Some(tls) => {
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let Some(info) = conn_info(&shared.proxy, &mut stream, client, local, scheme).await else {
                                return drop((alive, slot));
                            };
                            let accept = handshake(tls, stream);
                            let timeout = shared.proxy.config.tls_handshake_timeout;
                            match tokio::time::timeout(timeout, accept).await {
                                Ok(Ok(stream)) => encrypted(shared, info, stream).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, client = %client, "TLS handshake failed");
                                }
                                Err(_) => {
                                    tracing::debug!(client = %client, "TLS handshake timed out");
                                }
                            }
                            drop((alive, slot));
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(socket);
    shared.stop.trigger();
    drop(alive);
    if tokio::time::timeout(grace, all_done.recv()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// The facts of a new connection: its client is the peer, or — with the PROXY protocol — the
/// address the connection's header announces (`None`: no valid header came in time; the
/// connection is to be closed).
async fn conn_info(
    proxy: &Proxy,
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    scheme: &'static str,
) -> Option<Arc<ConnInfo>> {
    let config = &proxy.config;
    let (client, local) = match config.proxy_protocol {
        None => (peer, local),
        Some(timeout) => match proxy_protocol::read(stream, timeout).await {
            Ok(Header::Proxied {
                source,
                destination,
            }) => (source, destination),
            Ok(Header::Local) => (peer, local),
            Err(e) => {
                let refused = &proxy.stats.connections.refused_proxy_headers;
                refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %peer, error = %e, "connection closed: no valid PROXY protocol header");
                return None;
            }
        },
    };
    let info = ConnInfo::new(client, local, scheme).trusting(config.forwarded_headers.as_ref());
    Some(Arc::new(info))
}

/// A connection slot of a limited listener, waiting while all are taken.
async fn take_slot(
    slots: Option<&Arc<tokio::sync::Semaphore>>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slots = slots?;
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    tracing::warn!("connection limit reached; new connections wait until one closes");
    slots.clone().acquire_owned().await.ok()
}

/// The TLS handshake, with the configuration chosen from the ClientHello.
async fn handshake(
    tls: TlsConfig,
    stream: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
    let config = tls.for_hello(&start.client_hello());
    start.into_stream(config).await
}

/// A cleartext connection: HTTP/2 when it opens with the HTTP/2 preface, else HTTP/1.x.
async fn cleartext(shared: Arc<Shared>, info: Arc<ConnInfo>, mut stream: TcpStream) {
    let mut buf = Buf::new();
    let idle = shared.proxy.config.client_idle_timeout;
    let sniffed = tokio::select! {
        biased;
        () = shared.stop.wait() => return,
        sniffed = tokio::time::timeout(idle, sniff(&mut stream, &mut buf)) => sniffed,
    };
    let open = &shared.proxy.stats.connections;
    match sniffed {
        Ok(Ok(true)) => {
            let _open = Open::count(&open.http2);
            let stream = Rewind::new(buf.take_unread(), stream);
            serve_h2(&shared, info, stream).await;
        }
        Ok(Ok(false)) => {
            let _open = Open::count(&open.http1);
            h1::conn::serve(shared.proxy.clone(), info, stream, buf, shared.stop.clone()).await;
        }
        Ok(Err(_)) | Err(_) => {}
    }
}

/// A TLS connection: HTTP/2 when ALPN chose it, else HTTP/1.x.
async fn encrypted(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    stream: tokio_rustls::server::TlsStream<TcpStream>,
) {
    let open = &shared.proxy.stats.connections;
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let _open = Open::count(&open.https2);
        serve_h2(&shared, info, stream).await;
    } else {
        let _open = Open::count(&open.https1);
        h1::conn::serve(
            shared.proxy.clone(),
            info,
            stream,
            Buf::new(),
            shared.stop.clone(),
        )
        .await;
    }
}

/// One open connection in a gauge, for as long as it lives.
struct Open<'a>(&'a std::sync::atomic::AtomicI64);

impl<'a> Open<'a> {
    fn count(gauge: &'a std::sync::atomic::AtomicI64) -> Self {
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads until the connection's first bytes show whether it speaks HTTP/2 (`true`).
async fn sniff(stream: &mut TcpStream, buf: &mut Buf) -> std::io::Result<bool> {
    loop {
        let seen = buf.unread();
        let n = seen.len().min(PREFACE.len());
        if seen[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        if buf.is_empty() {
            stream.readable().await?;
        }
        if buf.fill(stream, 4096).await? == 0 {
            return Ok(false);
        }
    }
}

async fn serve_h2<S>(shared: &Shared, info: Arc<ConnInfo>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = shared.proxy.clone();
    let cancels = Arc::new(Cancels::default());
    let counted = cancels.clone();
    // The idle watch runs beside the connection rather than in its task, which wakes for
    // every frame.
    let idle_timeout = shared.proxy.config.client_idle_timeout;
    let watch = tokio::spawn(watch_idle(info.clone(), cancels.clone(), idle_timeout));
    let _watching = AbortOnDrop(watch.abort_handle());
    let service = service_fn(move |req| {
        let stream = Answering(Some(counted.clone()));
        let (proxy, info) = (proxy.clone(), info.clone());
        // Boxed: hyper moves this future into a task per stream, and a boxed one is a pointer
        // to move rather than the whole state of an exchange (built in place, inside the box).
        Box::pin(async move {
            let response = handle(proxy, info, req).await;
            stream.finished();
            response
        })
    });
    let conn = shared.h2.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shared.stop.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = cancels.close.notified() => {
            conn.as_mut().graceful_shutdown();
            if cancels.idle.load(Ordering::Relaxed) {
                tracing::debug!("HTTP/2 connection idle; closing it");
                // The GOAWAY exchange gets as long again; a peer that does not finish it is
                // dropped.
                let _ = tokio::time::timeout(idle_timeout, conn).await;
            } else {
                tracing::warn!("HTTP/2 client cancels most of its streams; closing the connection");
                // Answers in flight get a moment; the client gets no more.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            }
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
    }
}

/// What the streams of one HTTP/2 connection came to: answered, or cancelled by the client
/// while being answered; and whether the connection is to be closed for that, or for being
/// idle.
#[derive(Default)]
struct Cancels {
    answered: std::sync::atomic::AtomicU32,
    cancelled: std::sync::atomic::AtomicU32,
    /// Set when the connection is closed for being idle.
    idle: std::sync::atomic::AtomicBool,
    /// Notified when the connection is to be closed: abusive or idle.
    close: tokio::sync::Notify,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stream being answered; dropped unfinished when the client resets it.
struct Answering(Option<Arc<Cancels>>);

impl Answering {
    fn finished(mut self) {
        if let Some(c) = self.0.take() {
            c.answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let Some(c) = self.0.take() else { return };
        let cancelled = c
            .cancelled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if cancelled > H2_MAX_CANCELLED
            && cancelled > c.answered.load(std::sync::atomic::Ordering::Relaxed)
        {
            c.close.notify_one();
        }
    }
}

/// How many exchanges of one HTTP/2 connection began and ended (the response sent in full or
/// the stream cancelled): the connection is idle while the two are equal.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Streams {
    /// An exchange begins.
    pub(crate) fn begin(&self) {
        self.begun.fetch_add(1, Ordering::SeqCst);
    }

    /// An exchange is over.
    pub(crate) fn end(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }

    /// `(begun, ended)`; ended is read first, so equal counts mean no exchange was open.
    fn now(&self) -> (u64, u64) {
        let ended = self.ended.load(Ordering::SeqCst);
        (self.begun.load(Ordering::SeqCst), ended)
    }
}

/// Asks for the connection to be closed once it has had no exchange open, and none begun, for
/// `timeout` (noticed within a quarter of it).
async fn watch_idle(info: Arc<ConnInfo>, cancels: Arc<Cancels>, timeout: Duration) {
    let tick = (timeout / 4).max(Duration::from_millis(10));
    let mut last = info.streams.now();
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = info.streams.now();
        if now == last && now.0 == now.1 {
            quiet += tick;
            if quiet >= timeout {
                cancels.idle.store(true, Ordering::Relaxed);
                cancels.close.notify_one();
                return;
            }
        } else {
            quiet = Duration::ZERO;
        }
        last = now;
    }
}
