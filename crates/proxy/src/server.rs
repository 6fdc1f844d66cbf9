//! Listeners: the accept loop, protocol choice per connection, graceful shutdown.
//!
//! HTTP/1.x is served by Portcullis's own connection loop ([`crate::h1`]); HTTP/2 (prior
//! knowledge on cleartext, ALPN `h2` over TLS) on the connection's task ([`crate::h2conn`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::LazyConfigAcceptor;

use crate::forward::ConnInfo;
use crate::h1::{self, Buf, Rewind, Stop};
use crate::proxy_protocol::{self, Header};
use crate::{Proxy, TlsConfig};

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client's TLS connection once its handshake is done, on the heap: the stream (over a
/// kilobyte with its session) is then moved between the connection's futures as a pointer,
/// rather than copied into each of them and kept there for the connection's life.
pub(crate) type ClientTls = Box<tokio_rustls::server::TlsStream<TcpStream>>;

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
    h2: http2::server::Config,
}

/// Accepts connections on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests up to the configured grace period to finish. While the listener is at its
/// connection limit, new connections wait: one per worker accepted and held, the rest in the
/// kernel's accept queue.
pub async fn serve(proxy: Arc<Proxy>, listener: Listener, shutdown: impl Future<Output = ()>) {
    let h2 = crate::h2conn::settings(&proxy.config);
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
                                Ok(Ok(stream)) => encrypted(shared, info, Box::new(stream)).await,
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
            crate::h2conn::serve(shared.proxy.clone(), info, stream, &shared.h2, &shared.stop)
                .await;
        }
        Ok(Ok(false)) => {
            let _open = Open::count(&open.http1);
            h1::conn::serve(shared.proxy.clone(), info, stream, buf, shared.stop.clone()).await;
        }
        Ok(Err(_)) | Err(_) => {}
    }
}

/// A TLS connection: HTTP/2 when ALPN chose it, else HTTP/1.x.
async fn encrypted(shared: Arc<Shared>, info: Arc<ConnInfo>, stream: ClientTls) {
    let open = &shared.proxy.stats.connections;
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let _open = Open::count(&open.https2);
        crate::h2conn::serve(shared.proxy.clone(), info, stream, &shared.h2, &shared.stop).await;
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
