//! HTTP/2 client connections, served on the connection's own task: the `http2` state
//! machine reads and writes frames, and every stream's exchange is driven beside it, with no
//! task or channel of its own.

mod body;
mod drive;
mod respond;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use body::ClientBody;

use crate::forward::ConnInfo;
use crate::h1::{self, Stop};
use crate::Proxy;
use drive::{Driver, Ended};
use http2::frame::Reason;

/// The largest header list an HTTP/2 client may send: the HTTP/1.x head limit, plus the 32
/// bytes per field that RFC 9113 §6.5.2 adds to each.
const MAX_HEADER_LIST: u32 = (h1::codec::MAX_HEAD + 32 * h1::codec::MAX_HEADERS) as u32;

/// Streams a client may cancel while they are being answered before the connection is closed,
/// if it cancelled more than it let finish: a client that starts requests only to reset them
/// makes Portcullis work for nothing (the rapid-reset attack, CVE-2023-44487).
const MAX_CANCELLED: u32 = 100;

/// The receive window of each stream and of the whole connection: a client can keep 1 MiB of
/// request body in flight without waiting for a window update.
const WINDOW: u32 = 1024 * 1024;

/// How often a connection is pinged, and how long its answer may take before the peer is
/// taken for dead and the connection dropped.
const PING_EVERY: Duration = Duration::from_secs(30);
const PONG_WITHIN: Duration = Duration::from_secs(20);

/// The HTTP/2 server settings, chosen rather than inherited.
pub(crate) fn settings(config: &crate::ProxyConfig) -> http2::server::Config {
    http2::server::Config {
        max_concurrent_streams: config.http2_max_concurrent_streams,
        stream_window: WINDOW,
        connection_window: WINDOW,
        max_frame_size: http2::frame::DEFAULT_MAX_FRAME_SIZE,
        max_header_list: MAX_HEADER_LIST,
        // Streams reset for protocol errors the client caused.
        max_local_resets: 256,
        // A header block within the list limit needs a handful of frames of the default size.
        max_block_frames: 64,
    }
}

/// Serves one HTTP/2 connection until the client closes it, it idles past the idle timeout,
/// its client abuses it, or the listener stops (then in-flight streams finish first).
pub(crate) async fn serve<S>(
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    io: S,
    settings: &http2::server::Config,
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
    let mut driver = Driver::new(proxy, info, cancels.clone(), io, *settings);
    let mut keepalive = KeepAlive::new();
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
            ended = driver.run() => {
                if let Ended::Failed(e) = ended {
                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                }
                return;
            }
            () = stop.wait(), if !shutting => {
                shutting = true;
                driver.go_away(Reason::NO_ERROR);
            }
            () = cancels.close.notified(), if !shutting => {
                shutting = true;
                if cancels.idle.load(Ordering::Relaxed) {
                    tracing::debug!("HTTP/2 connection idle; closing it");
                    driver.go_away(Reason::NO_ERROR);
                    // The GOAWAY exchange gets as long again; a peer that does not finish it
                    // is dropped.
                    deadline = Some(Instant::now() + idle_timeout);
                } else {
                    tracing::warn!("HTTP/2 client cancels most of its streams; closing the connection");
                    driver.go_away(Reason::ENHANCE_YOUR_CALM);
                    // Answers in flight get a moment; the client gets no more.
                    deadline = Some(Instant::now() + Duration::from_secs(1));
                }
            }
            () = tokio::time::sleep_until(keepalive.next) => {
                if !keepalive.tick(&mut driver) {
                    tracing::debug!("HTTP/2 client did not answer a ping; dropping the connection");
                    return;
                }
            }
            () = closing => return,
        }
    }
}

/// Pings the client now and then; a client that does not answer in time is gone.
struct KeepAlive {
    /// When the next ping goes out, or — with one out — when its answer is due.
    next: Instant,
    /// When the ping now out was sent.
    sent: Option<Instant>,
}

impl KeepAlive {
    fn new() -> Self {
        KeepAlive {
            next: Instant::now() + PING_EVERY,
            sent: None,
        }
    }

    /// At `next`: sends a ping, or checks that the one out was answered (`false`: it was not).
    fn tick<S: AsyncRead + AsyncWrite + Unpin>(&mut self, driver: &mut Driver<S>) -> bool {
        match self.sent.take() {
            Some(at) => {
                if !driver.take_pong() {
                    return false;
                }
                self.next = at + PING_EVERY;
            }
            None => {
                driver.ping();
                let now = Instant::now();
                self.sent = Some(now);
                self.next = now + PONG_WITHIN;
            }
        }
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
