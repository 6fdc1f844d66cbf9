//! Listeners: the accept loop, protocol choice per connection, graceful shutdown.
//!
//! HTTP/1.x is served by Portcullis's own connection loop ([`crate::h1`]); HTTP/2 (prior
//! knowledge on cleartext, ALPN `h2` over TLS) by hyper's HTTP/2 server.

use std::future::Future;
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

/// Accepts connections on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests up to the configured grace period to finish.
pub async fn serve(proxy: Arc<Proxy>, listener: Listener, shutdown: impl Future<Output = ()>) {
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let grace = proxy.config.shutdown_grace;
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
                let (stream, client) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and similar: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else { continue };
                let info = Arc::new(ConnInfo::new(client, local, scheme));
                let shared = shared.clone();
                let alive = alive.clone();
                match &tls {
                    None => {
                        tokio::spawn(async move {
                            cleartext(shared, info, stream).await;
                            drop(alive);
                        });
                    }
                    Some(tls) => {
                        let accept = handshake(tls.clone(), stream);
                        tokio::spawn(async move {
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
                            drop(alive);
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
    let service = service_fn(move |req| handle(proxy.clone(), info.clone(), req));
    let conn = shared.h2.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shared.stop.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
    }
}
