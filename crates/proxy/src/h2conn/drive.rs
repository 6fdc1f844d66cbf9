//! The task of one HTTP/2 connection: reads frames into the state machine, starts an exchange
//! for every request, moves the exchanges and their response bodies on, and writes what the
//! state machine has to say — all on this one task.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http2::frame::Reason;
use http2::hpack::Field;
use http2::server::{Connection, Event, Head};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::{Shared, Wake};
use super::respond::{self, Pump};
use super::{Cancels, ClientBody};
use crate::error::ResBody;
use crate::forward::ConnInfo;
use crate::Proxy;

/// One stream's exchange, boxed where it is made: only the pointer moves into the set (an
/// exchange's future is several kilobytes).
type Exchange = Pin<Box<dyn Future<Output = (u32, Option<Response<ResBody>>)> + Send>>;

/// How much is read from the client at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Output buffers a worker keeps for its connections between their bursts of frames.
const MAX_SPARE_OUTPUT: usize = 32;

thread_local! {
    /// What each read lands in before the connection keeps what arrived.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
    /// Output buffers given back by connections with nothing under way: an idle connection
    /// holds none, and a busy one takes one back without asking the allocator.
    static SPARE_OUTPUT: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output past which nothing more is read from the client: a client that does not read what
/// it is sent (answers to its PINGs and SETTINGS, say) is not read either.
const OUT_HIGH: usize = 256 * 1024;

/// How a connection ended.
pub(super) enum Ended {
    /// The client closed it, or it was closed gracefully.
    Closed,
    /// An I/O or protocol error.
    Failed(String),
}

/// One HTTP/2 connection and everything under way on it.
pub(super) struct Driver<S> {
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    cancels: Arc<Cancels>,
    io: S,
    conn: Connection,
    input: BytesMut,
    events: Vec<Event>,
    exchanges: FuturesUnordered<Exchange>,
    pumps: Vec<Pump>,
    /// The streams whose exchange or request body is under way.
    streams: HashMap<u32, Arc<Shared>>,
    wake: Arc<Wake>,
    taken: Vec<(u32, u32)>,
    read_closed: bool,
    failed: Option<Reason>,
    /// Output was written and not yet flushed.
    unflushed: bool,
    /// The client answered a PING.
    pong: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(super) fn new(
        proxy: Arc<Proxy>,
        info: Arc<ConnInfo>,
        cancels: Arc<Cancels>,
        io: S,
        config: http2::server::Config,
    ) -> Self {
        Driver {
            proxy,
            info,
            cancels,
            io,
            conn: Connection::new(config),
            input: BytesMut::new(),
            events: Vec::new(),
            exchanges: FuturesUnordered::new(),
            pumps: Vec::new(),
            streams: HashMap::new(),
            wake: Arc::default(),
            taken: Vec::new(),
            read_closed: false,
            failed: None,
            unflushed: false,
            pong: false,
        }
    }

    /// Runs the connection until it is over; may be dropped and called again.
    pub(super) async fn run(&mut self) -> Ended {
        poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        self.wake.task.register(cx.waker());
        self.refill_output();
        loop {
            let mut progress = false;
            if !self.read_closed && self.failed.is_none() && self.conn.output().len() < OUT_HIGH {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.read_closed = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        if let Err(reason) = self.conn.receive(&mut self.input, &mut self.events) {
                            self.failed = Some(reason);
                        }
                        self.dispatch();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Ended::Failed(e.to_string())),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some((stream, response))) = self.exchanges.poll_next_unpin(cx) {
                progress = true;
                if let Some(response) = response {
                    if let Some(pump) = respond::start(&mut self.conn, stream, response) {
                        self.pumps.push(pump);
                    }
                }
                self.forget_if_closed(stream);
            }
            let mut i = 0;
            while i < self.pumps.len() {
                match self.pumps[i].poll(&mut self.conn, cx) {
                    Poll::Ready(()) => {
                        let done = self.pumps.swap_remove(i);
                        self.forget_if_closed(done.stream);
                    }
                    Poll::Pending => i += 1,
                }
            }
            self.wake.drain(&mut self.taken);
            for (stream, n) in self.taken.drain(..) {
                self.conn.release(stream, n);
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(true)) => progress = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::Failed(e.to_string())),
            }
            let written = self.conn.output().is_empty() && !self.unflushed;
            if written {
                if let Some(reason) = self.failed {
                    return Poll::Ready(Ended::Failed(format!("HTTP/2 protocol error: {reason}")));
                }
                if self.conn.is_done() {
                    return Poll::Ready(Ended::Closed);
                }
            }
            if self.read_closed && self.exchanges.is_empty() && self.pumps.is_empty() {
                return Poll::Ready(Ended::Closed);
            }
            if !progress {
                self.shrink_if_idle();
                return Poll::Pending;
            }
        }
    }

    /// Reads what the client sent. The read goes into the worker's scratch buffer and only what
    /// arrived is kept: an idle connection holds no read buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            self.input.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
    }

    /// Writes the output; `true` when some of it went.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let mut wrote = false;
        loop {
            let out = self.conn.output();
            if out.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    out.advance(n);
                    wrote = true;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Ok(wrote))
    }

    /// An idle connection keeps no buffers: they come back with its next frame.
    fn shrink_if_idle(&mut self) {
        if self.streams.is_empty() && self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
        let out = self.conn.output();
        if self.streams.is_empty() && out.is_empty() && out.capacity() > 0 {
            let spare = std::mem::take(out);
            SPARE_OUTPUT.with_borrow_mut(|spares| {
                if spares.len() < MAX_SPARE_OUTPUT {
                    spares.push(spare);
                }
            });
        }
    }

    /// Gives an output buffer to a connection that gave its own back, from the worker's spares.
    fn refill_output(&mut self) {
        let out = self.conn.output();
        if out.capacity() == 0 {
            if let Some(spare) = SPARE_OUTPUT.with_borrow_mut(Vec::pop) {
                *out = spare;
            }
        }
    }

    /// Acts on what the state machine made of the client's frames.
    fn dispatch(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                Event::Request {
                    stream,
                    head,
                    end_stream,
                } => self.start(stream, head, end_stream),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => match self.streams.get(&stream) {
                    Some(shared) => shared.push(data, end_stream),
                    // Nobody reads it any more: it goes straight back to the windows.
                    None => self.conn.release(stream, data.len() as u32),
                },
                Event::Trailers { stream, fields } => match header_map(fields) {
                    Some(trailers) => {
                        if let Some(shared) = self.streams.get(&stream) {
                            shared.push_trailers(trailers);
                        }
                    }
                    None => {
                        self.conn.reset(stream, Reason::PROTOCOL_ERROR);
                        self.cancel(stream, Reason::PROTOCOL_ERROR);
                    }
                },
                Event::Reset { stream, reason } => self.cancel(stream, reason),
                Event::Pong => self.pong = true,
                // Pumps waiting for room are polled on every pass; a client going away
                // still gets the answers to what it asked.
                Event::Window | Event::GoAway { .. } => {}
            }
        }
        self.events = events;
    }

    /// Starts the exchange of a new request.
    fn start(&mut self, stream: u32, head: Head, end_stream: bool) {
        let shared = Shared::new(stream, self.wake.clone(), end_stream);
        let body = if end_stream {
            ClientBody::empty()
        } else {
            ClientBody::streamed(shared.clone(), head.content_length)
        };
        let Some(req) = request(head, body) else {
            self.conn.reset(stream, Reason::PROTOCOL_ERROR);
            return;
        };
        self.streams.insert(stream, shared.clone());
        self.exchanges.push(Box::pin(respond::exchange(
            self.proxy.clone(),
            self.info.clone(),
            self.cancels.clone(),
            shared,
            req,
        )));
    }

    /// The stream is over before its exchange: the exchange and its body are abandoned.
    fn cancel(&mut self, stream: u32, reason: Reason) {
        if let Some(shared) = self.streams.remove(&stream) {
            shared.cancel(reason);
        }
        self.pumps.retain(|p| p.stream != stream);
    }

    fn forget_if_closed(&mut self, stream: u32) {
        if !self.conn.is_open(stream) {
            if let Some(shared) = self.streams.remove(&stream) {
                // A request body still arriving is cut off: the answer is already complete.
                shared.cancel(Reason::NO_ERROR);
            }
        }
    }

    /// Sends a PING; [`Driver::take_pong`] tells whether an answer came.
    pub(super) fn ping(&mut self) {
        self.pong = false;
        self.conn.ping(*b"portcull");
    }

    /// Whether the client answered since the last ping.
    pub(super) fn take_pong(&mut self) -> bool {
        std::mem::take(&mut self.pong)
    }

    /// Closes gracefully: streams opened so far are answered, later ones are not.
    pub(super) fn go_away(&mut self, reason: Reason) {
        self.conn.go_away(reason);
    }
}

/// The `http` request a checked HTTP/2 head describes; `None` when a part of it is not valid
/// as what it claims to be.
fn request(head: Head, body: ClientBody) -> Option<Request<ClientBody>> {
    let method = Method::from_bytes(&head.method).ok()?;
    let mut parts = http::uri::Parts::default();
    if let Some(authority) = head.authority {
        parts.authority = Some(Authority::from_maybe_shared(authority).ok()?);
        if let Some(scheme) = head.scheme {
            parts.scheme = Some(Scheme::try_from(&scheme[..]).ok()?);
        }
    }
    if let Some(path) = head.path {
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(path).ok()?);
    }
    let uri = Uri::from_parts(parts).ok()?;
    let headers = header_map(head.fields)?;
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    Some(req)
}

/// Decoded fields as a header map; `None` when a value holds what no field value may.
fn header_map(fields: Vec<Field>) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(&f.name).ok()?;
        let mut value = HeaderValue::from_maybe_shared(f.value).ok()?;
        value.set_sensitive(f.sensitive);
        headers.append(name, value);
    }
    Some(headers)
}
