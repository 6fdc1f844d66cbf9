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

/// A bound listening socket and the scheme its requests are reported with.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// `http` for cleartext.
    pub scheme: &'static str,
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
    let Listener { socket, scheme } = listener;
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
                let info = ConnInfo { client, local, scheme };
                let proxy = proxy.clone();
                let service = service_fn(move |req| handle(proxy.clone(), info, req));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        tracing::debug!(error = %e, client = %client, "client connection ended with an error");
                    }
                });
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
