//! Upstream connections: a keep-alive pool per worker, keyed by endpoint, over hyper's HTTP/1.1
//! client connections.
//!
//! A connection goes back to the pool when its response body has been read to the end, so a
//! pooled connection is always idle. A request that could not be written on a pooled connection
//! (the upstream closed it meanwhile) is retried once on a fresh connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use table::fasthash::BuildFast;

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
}

/// A failed exchange; when the request was never written it comes back for another endpoint.
pub enum SendError {
    /// Nothing was sent (no connection could be made): the request can go elsewhere.
    NotSent(UpstreamError, Box<Request<Incoming>>),
    /// The request was sent, or the failure came after that.
    Failed(UpstreamError),
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

/// Idle keep-alive connections by target. One pool per worker thread, so the lock is uncontended.
pub struct Pool {
    idle: Mutex<HashMap<Target, Vec<Idle>, BuildFast>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Pool {
    /// An empty pool.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::default()),
            connect_timeout,
            idle_timeout,
            max_idle,
        })
    }

    fn take_idle(&self, target: &Target) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(target)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < self.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    fn put_back(&self, target: Target, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(target).or_default();
            if list.len() < self.max_idle {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    async fn connect(&self, target: &Target) -> Result<SendRequest<Incoming>, UpstreamError> {
        let stream = connect_tcp(target, self.connect_timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` to `target` on a pooled connection when one is idle, else on a new one.
    pub async fn send(
        self: &Arc<Self>,
        target: Target,
        req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut req = req;
        if let Some(mut sender) = self.take_idle(&target) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(response) => return Ok(self.wrap(target, sender, response)),
                    Err(mut e) => match e.take_message() {
                        // Never written: the connection closed under us; use a fresh one.
                        Some(unsent) => req = unsent,
                        None => return Err(SendError::Failed(UpstreamError::Http(e.into_error()))),
                    },
                }
            }
        }
        let mut sender = match self.connect(&target).await {
            Ok(sender) => sender,
            Err(e) => return Err(SendError::NotSent(e, Box::new(req))),
        };
        match sender.send_request(req).await {
            Ok(response) => Ok(self.wrap(target, sender, response)),
            Err(e) => Err(SendError::Failed(e.into())),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        target: Target,
        sender: SendRequest<Incoming>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        let done = response.body().is_end_stream();
        let mut release = Some(Release {
            pool: self.clone(),
            target,
            sender,
        });
        if done && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(r) = release.take() {
                r.give_back();
            }
        }
        response.map(|inner| PooledBody { inner, release })
    }
}

struct Release {
    pool: Arc<Pool>,
    target: Target,
    sender: SendRequest<Incoming>,
}

impl Release {
    fn give_back(self) {
        self.pool.put_back(self.target, self.sender);
    }
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    release: Option<Release>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(r) = self.release.take() {
                    r.give_back();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // A broken exchange: the connection is not reused.
                self.release = None;
            }
            _ => {
                if self.inner.is_end_stream() {
                    if let Some(r) = self.release.take() {
                        r.give_back();
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
