//! Portcullis's own HTTP/1.1 data path: request and response heads parsed in place, bodies
//! relayed between the client and a pooled upstream connection by the client connection's own
//! task (no per-request tasks or channels), buffers released while a connection is idle.

pub(crate) mod bridge;
mod chunked;
pub(crate) mod codec;
pub(crate) mod conn;
mod head;
mod plan;
pub(crate) mod pool;
mod read;
mod relay;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The size of the read buffers kept for reuse.
const SPARE_SIZE: usize = 4096;
/// How many released read buffers a thread keeps for reuse.
const SPARE_COUNT: usize = 256;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer with a cursor: bytes before `start` are consumed. Emptied buffers give their
/// memory back when a connection goes idle.
#[derive(Debug, Default)]
pub(crate) struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    /// An empty buffer that owns no memory yet.
    pub(crate) fn new() -> Self {
        Buf::default()
    }

    /// The bytes read but not yet consumed.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Whether every byte read has been consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Marks the next `n` unread bytes consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Gives the memory of an empty buffer back (to the thread's spare buffers when it has the
    /// usual size, so the next connection to wake up reuses it).
    pub(crate) fn release_if_empty(&mut self) {
        if self.is_empty() && self.data.capacity() > 0 {
            let data = std::mem::take(&mut self.data);
            self.start = 0;
            if data.capacity() == SPARE_SIZE {
                SPARE.with(|spare| {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < SPARE_COUNT {
                        spare.push(data);
                    }
                });
            }
        }
    }

    /// Takes the unread bytes out, leaving the buffer empty.
    pub(crate) fn take_unread(&mut self) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.data);
        data.drain(..self.start);
        self.start = 0;
        data
    }

    /// Polls `r` for bytes once, reading at most `room` of them. Returns the number of bytes
    /// read (0 at end of stream).
    pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        let len = self.data.len();
        self.data.resize(len + room, 0);
        let mut free = ReadBuf::new(&mut self.data[len..]);
        let polled = Pin::new(r).poll_read(cx, &mut free);
        let n = match polled {
            Poll::Ready(Ok(())) => free.filled().len(),
            _ => 0,
        };
        self.data.truncate(len + n);
        polled.map_ok(|()| n)
    }

    /// Reads once from `r`, making room for at least `room` bytes first. Returns the number of
    /// bytes read (0 at end of stream).
    pub(crate) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        room: usize,
    ) -> io::Result<usize> {
        if self.data.capacity() == 0 && room <= SPARE_SIZE {
            self.data = SPARE
                .with(|spare| spare.borrow_mut().pop())
                .unwrap_or_else(|| Vec::with_capacity(SPARE_SIZE));
        }
        if self.data.capacity() - self.data.len() < room {
            if self.start > 0 {
                self.data.drain(..self.start);
                self.start = 0;
            }
            self.data.reserve(room);
        }
        r.read_buf(&mut self.data).await
    }
}

/// A client connection's byte stream.
pub(crate) trait ClientIo:
    AsyncRead + AsyncWrite + crate::quickack::QuickAck + Unpin + Send + 'static
{
    /// Waits until reading may make progress, so an idle connection need not hold a read
    /// buffer. Streams that buffer internally (TLS) return at once.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl ClientIo for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.readable()
    }
}

impl ClientIo for crate::server::ClientTls {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}

/// The shutdown signal of one listener: idle connections close at once, busy ones after their
/// current response.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    pub(crate) notify: Notify,
}

impl Stop {
    /// Signals every connection of the listener.
    pub(crate) fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_set(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Completes once shutdown has begun (at once if it already has).
    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

/// A connection's timeout clock: one timer per connection, re-armed lazily.
///
/// Each wait sets when it is due, which costs no timer operation as long as the armed timer goes
/// off no later than that. The timer is always armed at most `step` (the shortest timeout any
/// wait uses) ahead, so that holds for every later wait; when it goes off early it is re-armed
/// for the real due time. Registering a timer per request would cost more, and on a
/// single-threaded runtime often a wake-up of its event loop besides.
pub(crate) struct Deadline {
    timer: Pin<Box<Sleep>>,
    due: Instant,
    step: Duration,
    /// When the latest wait began.
    armed: Instant,
}

impl Deadline {
    /// A clock for waits of at least `step`.
    pub(crate) fn new(step: Duration) -> Self {
        let now = Instant::now();
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(now + step)),
            due: now + step,
            step,
            armed: now,
        }
    }

    /// When the latest wait began: a clock reading that costs nothing more.
    pub(crate) fn armed(&self) -> std::time::Instant {
        self.armed.into_std()
    }

    fn set(&mut self, timeout: Duration) {
        self.armed = Instant::now();
        self.due = self.armed + timeout;
        if self.timer.deadline() > self.due {
            self.timer.as_mut().reset(self.due);
        }
    }

    async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            let now = Instant::now();
            if now >= self.due {
                return;
            }
            let next = self.due.min(now + self.step);
            self.timer.as_mut().reset(next);
        }
    }

    /// Runs `work` for at most `timeout`; `None` when time ran out.
    pub(crate) async fn within<F: Future>(
        &mut self,
        timeout: Duration,
        work: F,
    ) -> Option<F::Output> {
        self.set(timeout);
        tokio::select! {
            biased;
            out = work => Some(out),
            () = self.expired() => None,
        }
    }
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [b' '; 29])) };
}

/// Appends the current time as an HTTP date (RFC 9110 §5.6.7), formatted at most once a second
/// per thread.
pub(crate) fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == cached.1.len() {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

/// A stream with bytes already read from it put back in front, for handing a connection whose
/// first bytes were inspected to another protocol implementation.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_consumes_and_releases() {
        let mut b = Buf::new();
        b.data.extend_from_slice(b"hello world");
        b.consume(6);
        assert_eq!(b.unread(), b"world");
        assert_eq!(b.take_unread(), b"world");
        assert!(b.is_empty());
        b.data.extend_from_slice(b"x");
        b.consume(1);
        assert!(b.is_empty());
        b.release_if_empty();
        assert_eq!(b.data.capacity(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_fire_on_time_across_waits() {
        let mut clock = Deadline::new(Duration::from_secs(60));
        let start = Instant::now();
        // A quick wait leaves the timer armed; a later, longer one still ends on time.
        assert_eq!(
            clock.within(Duration::from_secs(60), async { 1 }).await,
            Some(1)
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        let waited = clock
            .within(Duration::from_secs(75), std::future::pending::<()>())
            .await;
        assert!(waited.is_none());
        assert_eq!(Instant::now() - start, Duration::from_secs(105));
        // A shorter wait after a longer one is not held up by the armed timer.
        let waited = clock
            .within(Duration::from_secs(60), std::future::pending::<()>())
            .await;
        assert!(waited.is_none());
        assert_eq!(Instant::now() - start, Duration::from_secs(165));
    }

    #[test]
    fn date_is_an_http_date() {
        let mut out = Vec::new();
        push_date(&mut out);
        push_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), 58);
        assert!(httpdate::parse_http_date(&text[..29]).is_ok());
        assert!(text.ends_with("GMT"));
    }
}
