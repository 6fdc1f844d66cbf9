//! Listeners: the accept loop, HTTP/1.1 + HTTP/2 serving, graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::forward::{handle, ConnInfo};
use crate::Proxy;

/// A bound listening socket, and the TLS configuration when it terminates TLS.
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// `None` for cleartext HTTP; the server configuration for HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// A cleartext HTTP listener.
    pub fn http(socket: TcpListener) -> Self {
        Listener { socket, tls: None }
    }

    /// An HTTPS listener.
    pub fn https(socket: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Listener {
            socket,
            tls: Some(config),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests up to the configured grace period to finish.
pub async fn serve(proxy: Arc<Proxy>, listener: Listener, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.config.client_idle_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let Listener { socket, tls } = listener;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let (stream, client) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and similar: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else { continue };
                let info = Arc::new(ConnInfo::new(client, local, scheme));
                let service_proxy = proxy.clone();
                let service = service_fn(move |req| handle(service_proxy.clone(), info.clone(), req));
                let watcher = graceful.watcher();
                let builder = builder.clone();
                match &acceptor {
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        tokio::spawn(async move {
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(error = %e, client = %client, "client connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        let accept = acceptor.accept(stream);
                        let handshake_timeout = proxy.config.tls_handshake_timeout;
                        tokio::spawn(async move {
                            let stream = match tokio::time::timeout(handshake_timeout, accept).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, client = %client, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(client = %client, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned();
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(error = %e, client = %client, "client connection ended with an error");
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(socket);
    if tokio::time::timeout(proxy.config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}
