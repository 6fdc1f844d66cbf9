//! A request body received on an HTTP/2 stream, and what the stream's exchange and the
//! connection share about it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::HeaderMap;
use http2::frame::Reason;
use hyper::body::{Body, Frame, SizeHint};

/// The body broke off: the client reset the stream, or the connection ended.
#[derive(Debug, thiserror::Error)]
#[error("request body broke off: {0}")]
pub struct BodyCut(pub(super) Reason);

/// What the connection's task learns from its streams' exchanges.
#[derive(Default)]
pub(super) struct Wake {
    /// The connection's task.
    pub(super) task: AtomicWaker,
    /// Body bytes taken by exchanges, per stream, to be given back to the client's windows.
    pub(super) taken: Mutex<Vec<(u32, u32)>>,
}

impl Wake {
    /// Takes what was taken since the last call.
    pub(super) fn drain(&self, into: &mut Vec<(u32, u32)>) {
        into.append(&mut lock(&self.taken));
    }
}

/// One stream's state shared between the connection's task and the stream's exchange.
pub(super) struct Shared {
    pub(super) id: u32,
    /// The client reset the stream: the exchange is abandoned.
    pub(super) cancelled: AtomicBool,
    /// The exchange's task, woken when the stream is cancelled.
    pub(super) exchange: AtomicWaker,
    recv: Mutex<Recv>,
    wake: Arc<Wake>,
}

/// The request body as received and not yet taken.
#[derive(Default)]
struct Recv {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// Every frame of the body has arrived.
    ended: bool,
    cut: Option<Reason>,
    reader: Option<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn new(id: u32, wake: Arc<Wake>, ended: bool) -> Arc<Self> {
        Arc::new(Shared {
            id,
            cancelled: AtomicBool::new(false),
            exchange: AtomicWaker::new(),
            recv: Mutex::new(Recv {
                ended,
                ..Recv::default()
            }),
            wake,
        })
    }

    /// A piece of the body arrived.
    pub(super) fn push(&self, data: Bytes, end: bool) {
        let mut r = lock(&self.recv);
        if !data.is_empty() {
            r.chunks.push_back(data);
        }
        r.ended |= end;
        if let Some(w) = r.reader.take() {
            w.wake();
        }
    }

    /// The trailers that end the body arrived.
    pub(super) fn push_trailers(&self, trailers: HeaderMap) {
        let mut r = lock(&self.recv);
        r.trailers = Some(trailers);
        r.ended = true;
        if let Some(w) = r.reader.take() {
            w.wake();
        }
    }

    /// The stream is over before its exchange: the body (if still read) breaks off and the
    /// exchange is abandoned.
    pub(super) fn cancel(&self, reason: Reason) {
        self.cancelled.store(true, Ordering::Release);
        self.exchange.wake();
        let mut r = lock(&self.recv);
        if !r.ended {
            r.cut = Some(reason);
        }
        if let Some(w) = r.reader.take() {
            w.wake();
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// The body of a request received on an HTTP/2 stream: its DATA frames, then its trailers.
/// Bytes taken from it are handed back to the client's flow-control windows, so the client
/// may send more while they travel on.
pub struct ClientBody {
    /// `None`: the request has no body.
    shared: Option<Arc<Shared>>,
    /// The declared `Content-Length`, when the request had a valid one.
    length: Option<u64>,
}

impl ClientBody {
    /// An empty body.
    pub(super) fn empty() -> Self {
        ClientBody {
            shared: None,
            length: Some(0),
        }
    }

    /// The body of the stream `shared`, `length` bytes long when declared.
    pub(super) fn streamed(shared: Arc<Shared>, length: Option<u64>) -> Self {
        ClientBody {
            shared: Some(shared),
            length,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut r = lock(&shared.recv);
        if let Some(data) = r.chunks.pop_front() {
            drop(r);
            lock(&shared.wake.taken).push((shared.id, data.len() as u32));
            shared.wake.task.wake();
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(reason) = r.cut {
            return Poll::Ready(Some(Err(BodyCut(reason))));
        }
        if let Some(trailers) = r.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if r.ended {
            return Poll::Ready(None);
        }
        r.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        match &self.shared {
            None => true,
            Some(s) => {
                let r = lock(&s.recv);
                r.ended && r.chunks.is_empty() && r.trailers.is_none() && r.cut.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
