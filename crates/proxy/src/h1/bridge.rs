//! Bodiless requests of HTTP/2 clients to HTTP/1.1 upstreams, sent over the HTTP/1.x path's own
//! connection pool: the request head is written from the `http` parts in one write, the
//! response head is parsed in place, and the body is read by the client stream's own task — no
//! connection task or channel per upstream connection.
//!
//! A response body that arrived with its head is handed over whole and its connection goes back
//! to the pool at once. A longer one is read as the client takes it, under a watch that closes
//! the upstream connection once nothing has moved for the exchange's stall limit (a silent
//! upstream, or a client that grants no flow-control window and so stops taking the body).

use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::{Frame, SizeHint};

use super::chunked::Chunked;
use super::codec::{Framing, Kind, ResponseHead};
use super::conn::STALE_RETRIES;
use super::pool::{Pool, Upstream};
use super::read::read_response_head;
use super::relay::write_flush;
use crate::decide::Forward;
use crate::headers::Staged;
use crate::quickack::QuickAck;
use crate::upstream::{Route, SendError, Target, UpstreamError};

/// Bytes read from the upstream at a time while a body streams.
const BODY_READ: usize = 16 * 1024;

/// Sends the head of a bodiless request (`head_request`: to `HEAD`) to `target` over a pooled
/// HTTP/1.1 connection, or a new one; returns the response with its body to relay.
pub(crate) async fn send(
    pool: &Arc<Pool>,
    forward: &Forward,
    target: &Target,
    head: &[u8],
    head_request: bool,
    route: Route<'_>,
) -> Result<Response<crate::upstream::PooledBody>, SendError> {
    let mut stale = 0;
    loop {
        let mut up = match pool.take(target, route.tls, Instant::now()) {
            Some(up) => up,
            None => match pool.connect(target, forward, route.connect_timeout).await {
                Ok(up) => up,
                Err(e) => return Err(SendError::NotSent(e, None)),
            },
        };
        let reused = up.reused;
        if let Err(e) = write_flush(&mut up.stream, head).await {
            if reused && stale < STALE_RETRIES {
                stale += 1;
                continue;
            }
            return Err(SendError::Failed(UpstreamError::Io(e)));
        }
        match final_head(&mut up, head_request).await {
            Ok(head) => {
                return response(pool, target, up, head, route.stall).map_err(SendError::Failed);
            }
            Err(UpstreamError::Closed) if reused && stale < STALE_RETRIES => stale += 1,
            Err(e) => return Err(SendError::Failed(e)),
        }
    }
}

/// The head of a bodiless request for `path` in HTTP/1.1 framing: the client's fields but those
/// `fields` sets, then those. A method that usually has a body says it has none with
/// `Content-Length: 0`.
pub(crate) fn request_head(method: &Method, path: &str, fields: &Staged<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let received = fields.received.iter().filter(|(n, _)| !fields.replaces(n));
    for (name, value) in received.chain(fields.set.iter().map(|(n, v)| (n, v))) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let with_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if with_body && !fields.received.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads response heads until the final one: interim (1xx) responses are not relayed to
/// HTTP/2 clients, and a protocol switch nobody asked for is an invalid answer.
async fn final_head(up: &mut Upstream, head_request: bool) -> Result<ResponseHead, UpstreamError> {
    loop {
        let head = read_response_head(up, head_request).await?;
        match head.status {
            101 => {
                return Err(UpstreamError::Protocol(
                    "switched protocols without being asked",
                ))
            }
            100..=199 => up.buf.consume(head.len),
            _ => return Ok(head),
        }
    }
}

/// The `http` response for `head`, with a body that reads the rest from `up`.
fn response(
    pool: &Arc<Pool>,
    target: &Target,
    mut up: Upstream,
    head: ResponseHead,
    stall: Duration,
) -> Result<Response<crate::upstream::PooledBody>, UpstreamError> {
    let status =
        StatusCode::from_u16(head.status).map_err(|_| UpstreamError::Protocol("status"))?;
    let keep = head.keep_alive;
    // The head, and a body that came with it in full, are copied out once: the fields and the
    // body are slices of that one buffer.
    let inline = match head.framing {
        Framing::Length(n) if (up.buf.unread().len() - head.len) as u64 >= n => Some(n as usize),
        Framing::None => Some(0),
        _ => None,
    };
    let copied = Bytes::copy_from_slice(&up.buf.unread()[..head.len + inline.unwrap_or(0)]);
    let headers = fields(&copied, &head)?;
    up.buf.consume(copied.len());
    let body = match inline {
        Some(n) => {
            if keep {
                pool.put(target, up, Instant::now());
            }
            RawBody::Whole((n > 0).then(|| copied.slice(head.len..)))
        }
        None => RawBody::Streaming(Box::new(Streaming::start(
            pool.clone(),
            target.clone(),
            up,
            head.framing,
            keep,
            stall,
        ))),
    };
    let mut response = Response::new(crate::upstream::PooledBody::raw(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The response fields to pass on: everything but hop-by-hop and framing fields, with the
/// body's length when it has one (and the upstream's own `Content-Length` for a response
/// without a body, such as the answer to `HEAD`). Values are slices of `raw`.
fn fields(raw: &Bytes, head: &ResponseHead) -> Result<HeaderMap, UpstreamError> {
    let mut headers = HeaderMap::with_capacity(head.fields.len() + 1);
    for f in &head.fields {
        let name = &raw[f.name.clone()];
        let keep = match f.kind {
            Kind::Hop => false,
            Kind::Framing => {
                !matches!(head.framing, Framing::Chunked | Framing::Close)
                    && name.eq_ignore_ascii_case(b"content-length")
            }
            _ => true,
        };
        if !keep {
            continue;
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| UpstreamError::Protocol("response field name"))?;
        let value = HeaderValue::from_maybe_shared(raw.slice(f.value.clone()))
            .map_err(|_| UpstreamError::Protocol("response field value"))?;
        if name == header::CONTENT_LENGTH {
            // One value, the one the framing was read from (a list of equal values included).
            if let Framing::Length(n) = head.framing {
                if !value.as_bytes().iter().all(u8::is_ascii_digit) {
                    headers.insert(name, HeaderValue::from(n));
                    continue;
                }
            }
            headers.insert(name, value);
            continue;
        }
        headers.append(name, value);
    }
    Ok(headers)
}

/// A response body read from a raw upstream connection.
pub(crate) enum RawBody {
    /// The whole body (`None`: empty), already read; its connection is back in the pool.
    Whole(Option<Bytes>),
    /// A body still arriving.
    Streaming(Box<Streaming>),
}

impl RawBody {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self {
            RawBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RawBody::Streaming(s) => s.poll_frame(cx),
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        match self {
            RawBody::Whole(data) => data.is_none(),
            RawBody::Streaming(s) => s.reading.done,
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            RawBody::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RawBody::Streaming(s) => match s.reading.left {
                Left::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}

/// What is left of a streaming body.
enum Left {
    Length(u64),
    Chunked(Box<Chunked>),
    /// Until the upstream closes the connection.
    Close,
}

/// The upstream connection of a streaming body, shared with its stall watch.
#[derive(Default)]
struct Held {
    /// `None` once the body has ended or the watch cut the connection off.
    up: Option<Upstream>,
    /// Bytes read so far, for the watch to see progress.
    moved: u64,
    /// The task waiting on the body, woken when the watch cuts the connection off.
    waker: Option<Waker>,
    /// Set by the watch.
    stalled: bool,
}

/// A response body still arriving from its upstream connection.
pub(crate) struct Streaming {
    held: Arc<Mutex<Held>>,
    reading: Reading,
}

/// Where a streaming body stands.
struct Reading {
    watch: tokio::task::AbortHandle,
    left: Left,
    pool: Arc<Pool>,
    target: Target,
    keep: bool,
    done: bool,
    decoded: Vec<u8>,
}

impl Streaming {
    fn start(
        pool: Arc<Pool>,
        target: Target,
        up: Upstream,
        framing: Framing,
        keep: bool,
        stall: Duration,
    ) -> Self {
        let left = match framing {
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Box::new(Chunked::with_limit(0))),
            Framing::None | Framing::Close => Left::Close,
        };
        let held = Arc::new(Mutex::new(Held {
            up: Some(up),
            ..Held::default()
        }));
        let watch = tokio::spawn(watch(Arc::downgrade(&held), stall)).abort_handle();
        Streaming {
            held,
            reading: Reading {
                watch,
                left,
                pool,
                target,
                keep: keep && framing != Framing::Close,
                done: false,
                decoded: Vec::new(),
            },
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let Streaming { held, reading } = self;
        if reading.done {
            return Poll::Ready(None);
        }
        let Ok(mut held) = held.lock() else {
            return Poll::Ready(Some(Err(UpstreamError::Protocol("body state lost"))));
        };
        loop {
            let stalled = held.stalled;
            let Some(up) = held.up.as_mut() else {
                reading.done = true;
                let why = if stalled {
                    UpstreamError::Protocol("response body stalled")
                } else {
                    UpstreamError::Closed
                };
                return Poll::Ready(Some(Err(why)));
            };
            if !up.buf.is_empty() {
                match reading.take(up) {
                    Ok((data, ended)) => {
                        if ended {
                            reading.end(held.up.take());
                        }
                        if let Some(data) = data {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        if ended {
                            return Poll::Ready(None);
                        }
                    }
                    Err(e) => {
                        reading.end(None);
                        held.up = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            let Some(up) = held.up.as_mut() else { continue };
            match up.buf.poll_fill(&mut up.stream, cx, BODY_READ) {
                Poll::Pending => {
                    up.stream.quickack();
                    if !held.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        held.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    let close_delimited = matches!(reading.left, Left::Close);
                    reading.end(None);
                    held.up = None;
                    return Poll::Ready(if close_delimited {
                        None
                    } else {
                        Some(Err(UpstreamError::Protocol("response body cut short")))
                    });
                }
                Poll::Ready(Ok(n)) => held.moved += n as u64,
                Poll::Ready(Err(e)) => {
                    reading.end(None);
                    held.up = None;
                    return Poll::Ready(Some(Err(UpstreamError::Io(e))));
                }
            }
        }
    }
}

impl Reading {
    /// Takes what `up`'s buffer holds of the body: the data for a frame (if any), and whether
    /// the body has ended.
    fn take(&mut self, up: &mut Upstream) -> Result<(Option<Bytes>, bool), UpstreamError> {
        let unread = up.buf.unread();
        match &mut self.left {
            Left::Length(n) => {
                let k = unread.len().min(usize::try_from(*n).unwrap_or(usize::MAX));
                let data = Bytes::copy_from_slice(&unread[..k]);
                up.buf.consume(k);
                *n -= k as u64;
                Ok((Some(data), *n == 0))
            }
            Left::Close => {
                let data = Bytes::copy_from_slice(unread);
                let k = unread.len();
                up.buf.consume(k);
                Ok((Some(data), false))
            }
            Left::Chunked(decoder) => {
                self.decoded.clear();
                let (k, ended) = decoder
                    .decode(unread, &mut self.decoded)
                    .map_err(|e| UpstreamError::Protocol(e.0))?;
                up.buf.consume(k);
                let data =
                    (!self.decoded.is_empty()).then(|| Bytes::copy_from_slice(&self.decoded));
                Ok((data, ended))
            }
        }
    }

    /// The body is over: its connection goes back to the pool when it can serve another
    /// request (`up` is `None` when the connection is not reusable), and the watch stops.
    fn end(&mut self, up: Option<Upstream>) {
        self.done = true;
        self.watch.abort();
        if let Some(up) = up.filter(|_| self.keep) {
            self.pool.put(&self.target, up, Instant::now());
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.reading.watch.abort();
    }
}

/// Looks at a streaming body's progress a few times per `stall`; closes its connection once
/// nothing has been read for longer than that, waking the task that waits on it.
async fn watch(held: Weak<Mutex<Held>>, stall: Duration) {
    let tick = (stall / 4).max(Duration::from_millis(10));
    let mut seen = 0;
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let Some(held) = held.upgrade() else { return };
        let Ok(mut held) = held.lock() else { return };
        if held.moved != seen {
            seen = held.moved;
            quiet = Duration::ZERO;
            continue;
        }
        quiet += tick;
        if quiet >= stall {
            tracing::debug!("upstream response body made no progress within its limit; closing");
            held.up = None;
            held.stalled = true;
            if let Some(waker) = held.waker.take() {
                waker.wake();
            }
            return;
        }
    }
}
