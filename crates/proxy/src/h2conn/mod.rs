//! HTTP/2 client connections, served on the connection's own task: the h2 crate reads and
//! writes frames, and every stream's exchange is driven beside it, with no task or channel of
//! its own.

mod body;
mod respond;

use std::future::{poll_fn, Future as _};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use body::ClientBody;

use crate::forward::ConnInfo;
use crate::h1::{self, Stop};
use crate::Proxy;

/// The largest header list an HTTP/2 client may send: the HTTP/1.x head limit, plus the 32
/// bytes per field that RFC 9113 §6.5.2 adds to each.
const MAX_HEADER_LIST: u32 = (h1::codec::MAX_HEAD + 32 * h1::codec::MAX_HEADERS) as u32;

/// Streams a client may reset before the server has even picked them up; beyond this the
/// connection is closed with `ENHANCE_YOUR_CALM` (the rapid-reset attack, CVE-2023-44487).
const MAX_PENDING_RESETS: usize = 20;

/// Streams a client may cancel while they are being answered before the connection is closed,
/// if it cancelled more than it let finish: a client that starts requests only to reset them
/// makes Portcullis work for nothing.
const MAX_CANCELLED: u32 = 100;

/// The receive window of each stream and of the whole connection: a client can keep 1 MiB of
/// request body in flight without waiting for a window update.
const WINDOW: u32 = 1024 * 1024;

/// How often a connection is pinged, and how long its answer may take before the peer is
/// taken for dead and the connection dropped.
const PING_EVERY: Duration = Duration::from_secs(30);
const PONG_WITHIN: Duration = Duration::from_secs(20);

/// The HTTP/2 server settings, chosen rather than inherited.
pub(crate) fn settings(config: &crate::ProxyConfig) -> h2::server::Builder {
    let mut h2 = h2::server::Builder::new();
    h2.initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(16 * 1024)
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        // Streams the server itself resets for protocol errors the client caused.
        .max_local_error_reset_streams(Some(256))
        // CONTINUATION frames are bounded by h2 through the header list size above.
        .max_send_buffer_size(256 * 1024);
    h2
}

/// Serves one HTTP/2 connection until the client closes it, it idles past the idle timeout,
/// its client abuses it, or the listener stops (then in-flight streams finish first).
pub(crate) async fn serve<S>(
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    io: S,
    settings: &h2::server::Builder,
    stop: &Stop,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cancels = Arc::new(Cancels::default());
    // The idle watch runs beside the connection rather than in its task, which wakes for
    // every frame.
    let idle_timeout = proxy.config.client_idle_timeout;
    let watch = tokio::spawn(watch_idle(info.clone(), cancels.clone(), idle_timeout));
    let _watching = AbortOnDrop(watch.abort_handle());
    let mut conn = tokio::select! {
        biased;
        () = stop.wait() => return,
        () = cancels.close.notified() => return,
        conn = settings.handshake::<_, Bytes>(io) => match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 handshake failed");
                return;
            }
        },
    };
    let mut keepalive = KeepAlive::new(conn.ping_pong());
    let mut streams = FuturesUnordered::new();
    // Boxed where it is made: the exchange is copied onto the heap once, and only the pointer
    // moves into the set (a stream's future is several kilobytes).
    let mut start = |req, respond| {
        Box::pin(respond::stream(
            proxy.clone(),
            info.clone(),
            cancels.clone(),
            req,
            respond,
        ))
    };
    let mut shutting = false;
    // Once the connection is being closed for its client's sake: how long it still gets.
    let mut deadline: Option<Instant> = None;
    loop {
        let closing = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            ended = drive(&mut conn, &mut streams, &mut start) => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                }
                return;
            }
            () = stop.wait(), if !shutting => {
                shutting = true;
                conn.graceful_shutdown();
            }
            () = cancels.close.notified(), if !shutting => {
                shutting = true;
                conn.graceful_shutdown();
                if cancels.idle.load(Ordering::Relaxed) {
                    tracing::debug!("HTTP/2 connection idle; closing it");
                    // The GOAWAY exchange gets as long again; a peer that does not finish it
                    // is dropped.
                    deadline = Some(Instant::now() + idle_timeout);
                } else {
                    tracing::warn!("HTTP/2 client cancels most of its streams; closing the connection");
                    // Answers in flight get a moment; the client gets no more.
                    deadline = Some(Instant::now() + Duration::from_secs(1));
                }
            }
            alive = keepalive.tick() => {
                if !alive {
                    tracing::debug!("HTTP/2 client did not answer a ping; dropping the connection");
                    return;
                }
            }
            () = closing => return,
        }
    }
}

/// Runs the connection: reads and writes frames, starts an exchange for every new stream, and
/// moves the exchanges on. Done when the connection is over.
async fn drive<S, F>(
    conn: &mut h2::server::Connection<S, Bytes>,
    streams: &mut FuturesUnordered<F>,
    start: &mut impl FnMut(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> F,
) -> Result<(), h2::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: std::future::Future<Output = ()> + Unpin,
{
    poll_fn(|cx| loop {
        // The exchanges first: what they queue is written by the connection's turn below.
        while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
        match conn.poll_accept(cx) {
            Poll::Ready(Some(Ok((req, respond)))) => streams.push(start(req, respond)),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Pings the client now and then; a client that does not answer in time is gone.
struct KeepAlive {
    ping: Option<h2::PingPong>,
    /// When the next ping goes out, or — with one out — when its answer is due.
    next: Instant,
    /// A ping is out.
    waiting: bool,
}

impl KeepAlive {
    fn new(ping: Option<h2::PingPong>) -> Self {
        KeepAlive {
            ping,
            next: Instant::now() + PING_EVERY,
            waiting: false,
        }
    }

    /// Completes when a ping went out or came back (`true`), or when an answer is overdue or
    /// the connection cannot ping (`false`); pending in between.
    async fn tick(&mut self) -> bool {
        let Some(ping) = self.ping.as_mut() else {
            return std::future::pending().await;
        };
        if self.waiting {
            let sleep = tokio::time::sleep_until(self.next);
            tokio::pin!(sleep);
            let answered = poll_fn(|cx| {
                if let Poll::Ready(answer) = ping.poll_pong(cx) {
                    return Poll::Ready(answer.is_ok());
                }
                sleep.as_mut().poll(cx).map(|()| false)
            })
            .await;
            self.waiting = false;
            self.next = Instant::now() + PING_EVERY;
            return answered;
        }
        tokio::time::sleep_until(self.next).await;
        if ping.send_ping(h2::Ping::opaque()).is_err() {
            return false;
        }
        self.waiting = true;
        self.next = Instant::now() + PONG_WITHIN;
        true
    }
}

/// What the streams of one HTTP/2 connection came to: answered, or cancelled by the client
/// while being answered; and whether the connection is to be closed for that, or for being
/// idle.
#[derive(Default)]
pub(crate) struct Cancels {
    answered: AtomicU32,
    cancelled: AtomicU32,
    /// Set when the connection is closed for being idle.
    idle: AtomicBool,
    /// Notified when the connection is to be closed: abusive or idle.
    close: Notify,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stream being answered; dropped unfinished when the client resets it.
pub(crate) struct Answering(Option<Arc<Cancels>>);

impl Answering {
    fn finished(mut self) {
        if let Some(c) = self.0.take() {
            c.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let Some(c) = self.0.take() else { return };
        let cancelled = c.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        if cancelled > MAX_CANCELLED && cancelled > c.answered.load(Ordering::Relaxed) {
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
