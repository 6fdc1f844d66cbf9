//! One client connection on the HTTP/1.1 path: read a request head, decide, send it on a
//! pooled upstream connection, relay the response, and repeat while the connection is kept
//! alive. Everything happens on the connection's own task.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::sync::futures::Notified;

use super::codec::{Framing, Kind, RequestHead, ResponseHead};
use super::head::{
    find_field, push_content_length, push_field, push_local, push_pair, push_response_start,
};
use super::plan::{admitted, has_body, plan, Logged, Plan, Req};
use super::pool::Upstream;
use super::read::{read_request_head, read_response_head, HeadRead, HEAD_READ};
use super::relay::{
    discard, relay, upload, write_flush, Ends, Mode, RelayError, Uploaded, Watched,
};
use super::{Buf, ClientIo, Deadline, Stop};
use crate::decide::{Attempts, Failed, Forward, Local};
use crate::forward::ConnInfo;
use crate::log::{AccessLog, Entry};
use crate::stats::Outcome;
use crate::upstream::{Target, UpstreamError};
use crate::{Proxy, ProxyError};

/// A body up to this size that has fully arrived travels in the same write as its head.
const INLINE_BODY: u64 = 16 * 1024;
/// Output buffer capacity kept between requests.
const KEEP_OUT: usize = 16 * 1024;
/// Retries of a request whose reused upstream connection turned out to be closed.
pub(super) const STALE_RETRIES: usize = 2;
/// Most of a request body left unread by an upstream that answered early that is read and
/// dropped to keep the client connection; with more left, the connection closes.
const DRAIN_MAX: u64 = 64 * 1024;
/// How long a closing connection whose client may still be sending a body is read from.
const LINGER: Duration = Duration::from_secs(2);

/// Serves HTTP/1.x requests on `stream` until the client closes, the connection is not kept
/// alive, or shutdown begins. `buf` holds bytes already read from the stream.
pub(crate) async fn serve<S: ClientIo>(
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    stream: S,
    buf: Buf,
    stop: Arc<Stop>,
) {
    let config = &proxy.config;
    let step = config
        .client_idle_timeout
        .min(config.response_header_timeout);
    // Registered once for the connection's lifetime rather than once per request.
    let mut stop_signal = Box::pin(stop.notify.notified());
    stop_signal.as_mut().enable();
    if stop.is_set() {
        return;
    }
    let mut client = Client {
        stop_signal,
        deadline: Deadline::new(step),
        proxy: &proxy,
        info: &info,
        stop: &stop,
        stream,
        buf,
        out: Vec::new(),
        linger: false,
    };
    client.run().await;
}

struct Client<'a, S> {
    proxy: &'a Proxy,
    info: &'a ConnInfo,
    stop: &'a Stop,
    stream: S,
    /// Bytes read from the client and not yet handled.
    buf: Buf,
    /// The head being written (upstream request or client response).
    out: Vec<u8>,
    /// Times the waits for request and response heads.
    deadline: Deadline,
    /// Completes when shutdown begins.
    stop_signal: Pin<Box<Notified<'a>>>,
    /// The client may still be sending a request body nobody read: on closing, what it sends
    /// is read and dropped for a while, so that the answer is not lost to a reset.
    linger: bool,
}

/// A request written to an upstream that answered with a head.
struct Sent {
    up: Upstream,
    target: Target,
    head: ResponseHead,
    /// What is left of the request body.
    rest: Rest,
}

/// What is left of a request body once the upstream has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    /// Nothing: all of it went upstream.
    None,
    /// The upstream answered first, and this many bytes (at most [`DRAIN_MAX`]) are still to
    /// be read from the client and dropped.
    Drain(u64),
    /// The upstream answered first, with more or an unknown amount left: the client
    /// connection closes after the answer.
    Abandon,
}

impl Rest {
    fn of(uploaded: Uploaded) -> Rest {
        match uploaded {
            Uploaded::Complete => Rest::None,
            Uploaded::Answered { left: Some(n) } if n <= DRAIN_MAX => Rest::Drain(n),
            Uploaded::Answered { .. } => Rest::Abandon,
        }
    }

    /// Whether the whole body has been read from the client.
    fn read(self) -> bool {
        matches!(self, Rest::None | Rest::Drain(0))
    }
}

impl<S: ClientIo> Client<'_, S> {
    async fn run(&mut self) {
        loop {
            let head = match self.read_head().await {
                HeadRead::Head(head) => head,
                HeadRead::Closed => return,
                HeadRead::TimedOut => {
                    tracing::debug!(client = %self.info.client, "request head not complete in time");
                    // A client this slow is not waited for any longer.
                    return self.refuse(StatusCode::REQUEST_TIMEOUT, false).await;
                }
                HeadRead::Bad(e) => {
                    tracing::debug!(client = %self.info.client, error = %e, "bad request head");
                    return self.refuse(e.status(), true).await;
                }
            };
            if !self.exchange(head).await {
                let _ = self.stream.shutdown().await;
                if self.linger {
                    self.linger().await;
                }
                return;
            }
            if self.out.capacity() > KEEP_OUT {
                self.out = Vec::new();
            }
        }
    }

    /// Answers a request whose head was refused with `status`, and closes (lingering, when
    /// asked, over what the client still sends).
    async fn refuse(&mut self, status: StatusCode, linger: bool) {
        self.out.clear();
        push_local(&mut self.out, &Local::status(status), 1, false, false);
        let _ = write_flush(&mut self.stream, &self.out).await;
        let _ = self.stream.shutdown().await;
        if linger {
            self.linger().await;
        }
    }

    /// Reads and drops what the client still sends, until it closes or [`LINGER`] is over.
    async fn linger(&mut self) {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let draining = async {
            while let Ok(n @ 1..) = buf.fill(stream, HEAD_READ).await {
                buf.consume(n);
            }
        };
        let _ = self.deadline.within(LINGER, draining).await;
    }

    /// The next request head, not past shutdown and within the idle timeout; from its first
    /// byte, the whole head within the client header timeout.
    async fn read_head(&mut self) -> HeadRead {
        let config = &self.proxy.config;
        let header_timeout = config.client_header_timeout;
        let reading = read_request_head(&mut self.stream, &mut self.buf, header_timeout);
        tokio::select! {
            biased;
            () = &mut self.stop_signal => HeadRead::Closed,
            read = self.deadline.within(config.client_idle_timeout, reading) => {
                read.unwrap_or(HeadRead::Closed)
            }
        }
    }

    /// Serves one request. Returns whether the connection stays open for another.
    async fn exchange(&mut self, head: RequestHead) -> bool {
        let log = self.proxy.config.access_log != AccessLog::Off;
        let (plan, req, mut logged) = plan(
            self.proxy,
            self.info,
            self.buf.unread(),
            &head,
            &mut self.out,
            log,
        );
        let plan = match plan {
            Plan::Admit(forward, id) => {
                let raw = self.buf.unread();
                // Boxed: the admission's state stays out of every request's exchange future.
                let admission = admitted(
                    self.proxy,
                    self.info,
                    raw,
                    &head,
                    forward,
                    id,
                    &mut self.out,
                );
                Box::pin(admission).await
            }
            plan => plan,
        };
        self.buf.consume(head.len);
        drop(head);

        let forward = match plan {
            Plan::Forward(forward) => forward,
            answered => {
                // An `Admit` plan was settled above; the arm only keeps the match whole.
                let local = match answered {
                    Plan::Local(local) => local,
                    _ => Local::status(StatusCode::INTERNAL_SERVER_ERROR),
                };
                self.linger = has_body(req.framing);
                let keep = req.keep_alive && !has_body(req.framing) && !self.stop.is_set();
                self.out.clear();
                push_local(&mut self.out, &local, req.minor, keep, req.is_head());
                let written = write_flush(&mut self.stream, &self.out).await.is_ok();
                self.log(logged, &req, local.status);
                return written && keep;
            }
        };
        if forward.protocol().is_h2() {
            let error = ProxyError::Upstream {
                addr: forward.target.to_string(),
                source: UpstreamError::Protocol(
                    "the backend speaks only HTTP/2 (backend-protocol GRPC, GRPCS or H2C); send this request over HTTP/2",
                ),
            };
            return self
                .failed(error, &req, !has_body(req.framing), logged)
                .await;
        }

        // A small body that has fully arrived goes out with the head; then a request that meets
        // a closed pooled connection can simply be written again.
        let mut body_done = !has_body(req.framing);
        if let Framing::Length(n) = req.framing {
            if n <= INLINE_BODY && self.buf.unread().len() as u64 >= n {
                let n = n as usize;
                self.out.extend_from_slice(&self.buf.unread()[..n]);
                self.buf.consume(n);
                body_done = true;
            }
        }
        let whole = body_done;

        let sent = match self.send(&forward, &req, whole, &mut body_done).await {
            Ok(sent) => sent,
            Err(error) => return self.failed(error, &req, body_done, logged).await,
        };
        if let Some(l) = logged.as_mut() {
            l.upstream = Some(sent.target.to_string());
        }
        self.respond(sent, &forward, &req, logged).await
    }

    /// Answers a request that failed before any response head was sent.
    async fn failed(
        &mut self,
        error: ProxyError,
        req: &Req,
        body_done: bool,
        logged: Option<Box<Logged>>,
    ) -> bool {
        match &error {
            ProxyError::Upstream { .. } | ProxyError::Timeout(_) => {
                tracing::warn!(%error, "upstream failure");
            }
            ProxyError::ClientClosed => {
                // Nobody to answer; logged with nginx's "client closed request" code.
                self.log(logged, req, error.status());
                return false;
            }
            _ => tracing::debug!(client = %self.info.client, %error, "request failed"),
        }
        let status = error.status();
        self.linger = !body_done;
        let keep = req.keep_alive && body_done && !self.stop.is_set();
        self.out.clear();
        push_local(
            &mut self.out,
            &Local::status(status),
            req.minor,
            keep,
            req.is_head(),
        );
        let written = write_flush(&mut self.stream, &self.out).await.is_ok();
        self.log(logged, req, status);
        written && keep
    }

    /// Writes the request (head in `out`, then any body still to come from the client) to an
    /// upstream connection and reads the response head. Failures move on to another ready
    /// endpoint as the route's retry rules allow; a reused connection found closed is replaced
    /// while the request can still be written again.
    async fn send(
        &mut self,
        forward: &Forward,
        req: &Req,
        whole: bool,
        body_done: &mut bool,
    ) -> Result<Sent, ProxyError> {
        let pool = &self.proxy.h1_pool;
        let limits = forward.limits(self.proxy);
        let mut target = forward.target.clone();
        let mut attempts = Attempts::new();
        let since = forward.measures_latency().then(Instant::now);
        let mut stale = 0;
        loop {
            let mut up = match pool.take(&target, forward.upstream_tls(), req.start) {
                Some(up) => up,
                None => match pool.connect(&target, forward, limits.connect).await {
                    Ok(up) => up,
                    Err(e) => {
                        let why = connect_failure(&e);
                        match attempts.next(self.proxy, forward, &target, why, &req.method, whole) {
                            Some(next) => {
                                tracing::debug!(error = %e, failed = %target, %next, "trying another endpoint");
                                target = next;
                                continue;
                            }
                            None => return Err(upstream_error(&target, e)),
                        }
                    }
                },
            };
            let reused = up.reused;
            if let Err(e) = write_flush(&mut up.stream, &self.out).await {
                if reused && whole && stale < STALE_RETRIES {
                    stale += 1;
                    continue;
                }
                return Err(upstream_error(&target, UpstreamError::Io(e)));
            }
            let mut rest = Rest::None;
            if !whole {
                // Boxed: uploads are rare enough, and the usual request stays small.
                rest = Box::pin(self.send_body(&mut up, &target, forward, req)).await?;
                *body_done = rest.read();
            }
            let (why, error) = match self.answer(&mut up, req, limits.read).await {
                Some(Ok(head)) => {
                    let status = head.status;
                    if status >= 200 {
                        forward.answered(self.proxy, &target, status, since);
                    }
                    if whole && limits.retry.on_status(status) {
                        let why = Failed::Status(status);
                        if let Some(next) =
                            attempts.next(self.proxy, forward, &target, why, &req.method, whole)
                        {
                            tracing::debug!(failed = %target, %next, status, "trying another endpoint");
                            target = next;
                            stale = 0;
                            continue;
                        }
                    }
                    return Ok(Sent {
                        up,
                        target,
                        head,
                        rest,
                    });
                }
                Some(Err(UpstreamError::Closed)) if reused && whole && stale < STALE_RETRIES => {
                    stale += 1;
                    continue;
                }
                None => (Failed::Timeout, ProxyError::Timeout(target.to_string())),
                Some(Err(e)) => (read_failure(&e), upstream_error(&target, e)),
            };
            match attempts.next(self.proxy, forward, &target, why, &req.method, whole) {
                Some(next) => {
                    tracing::debug!(failed = %target, %next, reason = ?why, "trying another endpoint");
                    target = next;
                    stale = 0;
                }
                None => return Err(error),
            }
        }
    }

    /// Waits for the response head (`None`: not in time), noting when the wait began: as the
    /// request went upstream.
    async fn answer(
        &mut self,
        up: &mut Upstream,
        req: &Req,
        timeout: Duration,
    ) -> Option<Result<ResponseHead, UpstreamError>> {
        let waiting = read_response_head(up, req.is_head());
        let answer = self.deadline.within(timeout, waiting).await;
        if req.upstream_at.load(Ordering::Relaxed) == 0 {
            let sent = self.deadline.armed().saturating_duration_since(req.start);
            req.upstream_at
                .store(sent.as_nanos() as u64 + 1, Ordering::Relaxed);
        }
        answer
    }

    /// Relays the rest of the request body (after `100 Continue` when the client waits for it).
    async fn send_body(
        &mut self,
        up: &mut Upstream,
        target: &Target,
        forward: &Forward,
        req: &Req,
    ) -> Result<Rest, ProxyError> {
        let limits = forward.limits(self.proxy);
        if req.expect_continue && self.buf.is_empty() {
            write_flush(&mut self.stream, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| ProxyError::ClientClosed)?;
        }
        let ends = Ends {
            deadline: &mut self.deadline,
            read_idle: self.proxy.config.body_idle_timeout,
            write_idle: limits.send,
            limit: limits.body,
            written: 0,
        };
        let watched = Watched {
            stream: &mut up.stream,
            buf: &mut up.buf,
        };
        match upload(&mut self.stream, &mut self.buf, watched, req.framing, ends).await {
            Ok(uploaded) => Ok(Rest::of(uploaded)),
            Err(RelayError::Read(_) | RelayError::Eof) => Err(ProxyError::ClientClosed),
            Err(RelayError::ReadStalled) => Err(ProxyError::RequestTimeout),
            Err(RelayError::Framing(what)) => Err(ProxyError::BadRequest(what)),
            Err(RelayError::TooLarge) => Err(ProxyError::PayloadTooLarge),
            Err(RelayError::Write(e)) => Err(upstream_error(target, UpstreamError::Io(e))),
            Err(RelayError::WriteStalled) => Err(ProxyError::Timeout(target.to_string())),
        }
    }

    /// Relays interim responses, then the final response head and body, or tunnels after a
    /// protocol switch. Returns whether the client connection stays open.
    async fn respond(
        &mut self,
        sent: Sent,
        forward: &Forward,
        req: &Req,
        logged: Option<Box<Logged>>,
    ) -> bool {
        let Sent {
            mut up,
            target,
            head,
            rest,
        } = sent;
        let limits = forward.limits(self.proxy);
        let head = if is_interim(head.status) {
            let interim = self.final_head(&mut up, &target, head, req, limits.read);
            match Box::pin(interim).await {
                Ok(head) => head,
                Err(Some(error)) => return self.failed(error, req, rest.read(), logged).await,
                Err(None) => return false,
            }
        } else {
            head
        };
        let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        if head.status == 101 {
            if !req.upgrade {
                let error = upstream_error(
                    &target,
                    UpstreamError::Protocol("switched protocols without being asked"),
                );
                return self.failed(error, req, rest.read(), logged).await;
            }
            return self.switch(up, head, req, logged, status).await;
        }

        // The body's framing towards the client.
        let client_http11 = req.minor == 1;
        let (mode, reframed) = match (head.framing, client_http11) {
            (Framing::Length(_) | Framing::None, _) => (Mode::Pass, false),
            (Framing::Chunked, true) => (Mode::Reframe, false),
            (Framing::Chunked, false) => (Mode::Decode, true),
            (Framing::Close, true) => (Mode::Encode, false),
            (Framing::Close, false) => (Mode::Pass, true),
        };
        let keep = req.keep_alive && !reframed && rest != Rest::Abandon && !self.stop.is_set();
        self.linger = !keep && !rest.read();
        let body = self.push_response_head(&mut up, &head, forward, &target, req, keep);
        req.response_bytes
            .store(self.out.len() as u64, Ordering::Relaxed);
        if write_flush(&mut self.stream, &self.out).await.is_err() {
            self.log(logged, req, status);
            return false;
        }
        let ends = Ends {
            deadline: &mut self.deadline,
            read_idle: limits.read_idle,
            write_idle: self.proxy.config.body_idle_timeout,
            limit: 0,
            written: 0,
        };
        let (src, dst) = (&mut up.stream, &mut self.stream);
        let relayed = relay(src, &mut up.buf, dst, body, mode, ends).await;
        if let Ok(n) = relayed {
            req.response_bytes.fetch_add(n, Ordering::Relaxed);
        }
        let end = self.log(logged, req, status);
        if let Err(e) = relayed {
            match e {
                RelayError::Write(_) => {}
                RelayError::WriteStalled => {
                    tracing::debug!(client = %self.info.client, "client stopped taking the response body");
                }
                e => {
                    tracing::debug!(upstream = %target, error = %e, "upstream response body broke off")
                }
            }
            return false;
        }
        // A connection whose request body was cut short is out of step.
        if head.keep_alive && head.framing != Framing::Close && rest == Rest::None {
            self.proxy.h1_pool.put(&target, up, end);
        }
        match rest {
            Rest::Drain(n) if keep && n > 0 => Box::pin(self.drain(n)).await,
            _ => keep,
        }
    }

    /// Relays interim responses (to HTTP/1.1 clients) until the final response head, or a
    /// `101`. `Err(None)`: the client went away.
    async fn final_head(
        &mut self,
        up: &mut Upstream,
        target: &Target,
        mut head: ResponseHead,
        req: &Req,
        read_timeout: Duration,
    ) -> Result<ResponseHead, Option<ProxyError>> {
        while is_interim(head.status) {
            if req.minor == 1 {
                self.out.clear();
                push_response_start(&mut self.out, up.buf.unread(), &head, req.is_head(), &[]);
                self.out.extend_from_slice(b"\r\n");
                if write_flush(&mut self.stream, &self.out).await.is_err() {
                    return Err(None);
                }
            }
            up.buf.consume(head.len);
            let waiting = read_response_head(up, req.is_head());
            head = match self.deadline.within(read_timeout, waiting).await {
                Some(Ok(head)) => head,
                Some(Err(e)) => return Err(Some(upstream_error(target, e))),
                None => return Err(Some(ProxyError::Timeout(target.to_string()))),
            };
        }
        Ok(head)
    }

    /// Writes the client's response head into `out` (with the body when it is small and has
    /// arrived) and consumes the upstream's; returns the framing of the body still to relay.
    fn push_response_head(
        &mut self,
        up: &mut Upstream,
        head: &ResponseHead,
        forward: &Forward,
        target: &Target,
        req: &Req,
        keep: bool,
    ) -> Framing {
        let client_http11 = req.minor == 1;
        self.out.clear();
        let set = if forward.has_response_fields() {
            forward.response_fields()
        } else {
            Vec::new()
        };
        push_response_start(&mut self.out, up.buf.unread(), head, req.is_head(), &set);
        if let Some(cookie) = forward.set_cookie(target) {
            self.out.extend_from_slice(b"set-cookie: ");
            self.out.extend_from_slice(cookie.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        if let Some(granted) = forward.granted() {
            for cookie in granted.cookies_for(head.status) {
                push_pair(&mut self.out, b"Set-Cookie", cookie.as_bytes());
            }
        }
        match (head.framing, client_http11) {
            (Framing::Length(n), _) => push_content_length(&mut self.out, n),
            // The upstream's own Transfer-Encoding fields go through (they may list codings
            // before `chunked`); a Content-Length beside them does not.
            (Framing::Chunked, true) => {
                let raw = up.buf.unread();
                for f in head.fields.iter().filter(|f| f.kind == Kind::Framing) {
                    if raw[f.name.clone()].eq_ignore_ascii_case(b"transfer-encoding") {
                        push_field(&mut self.out, raw, f);
                    }
                }
            }
            (Framing::Close, true) => self
                .out
                .extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        if !keep {
            self.out.extend_from_slice(b"Connection: close\r\n");
        } else if !client_http11 {
            self.out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        up.buf.consume(head.len);
        if let Framing::Length(n) = head.framing {
            if n <= INLINE_BODY && up.buf.unread().len() as u64 >= n {
                let n = n as usize;
                self.out.extend_from_slice(&up.buf.unread()[..n]);
                up.buf.consume(n);
                return Framing::None;
            }
        }
        head.framing
    }

    /// Reads and drops the `left` bytes of a request body the upstream did not wait for;
    /// returns whether the connection can serve another request.
    async fn drain(&mut self, left: u64) -> bool {
        let ends = Ends {
            deadline: &mut self.deadline,
            read_idle: self.proxy.config.body_idle_timeout,
            write_idle: self.proxy.config.body_idle_timeout,
            limit: 0,
            written: 0,
        };
        discard(&mut self.stream, &mut self.buf, left, ends)
            .await
            .is_ok()
    }

    /// Completes a protocol switch (101) and tunnels bytes both ways until either side closes.
    async fn switch(
        &mut self,
        mut up: Upstream,
        head: ResponseHead,
        req: &Req,
        logged: Option<Box<Logged>>,
        status: StatusCode,
    ) -> bool {
        self.out.clear();
        push_response_start(&mut self.out, up.buf.unread(), &head, false, &[]);
        self.out.extend_from_slice(b"Connection: upgrade\r\n");
        if let Some(f) = find_field(up.buf.unread(), &head.fields, b"upgrade") {
            push_field(&mut self.out, up.buf.unread(), f);
        }
        self.out.extend_from_slice(b"\r\n");
        up.buf.consume(head.len);
        self.out.extend_from_slice(up.buf.unread());
        up.buf.consume(up.buf.unread().len());
        self.log(logged, req, status);
        if write_flush(&mut self.stream, &self.out).await.is_err() {
            return false;
        }
        if !self.buf.is_empty() {
            if write_flush(&mut up.stream, self.buf.unread())
                .await
                .is_err()
            {
                return false;
            }
            let n = self.buf.unread().len();
            self.buf.consume(n);
        }
        self.buf.release_if_empty();
        self.out = Vec::new();
        if let Err(e) = tokio::io::copy_bidirectional(&mut self.stream, &mut up.stream).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
        false
    }

    /// Counts a finished request and writes its access-log line; returns when it finished.
    fn log(&self, logged: Option<Box<Logged>>, req: &Req, status: StatusCode) -> Instant {
        let end = Instant::now();
        let duration = end.saturating_duration_since(req.start);
        let upstream = match req.upstream_at.load(Ordering::Relaxed) {
            0 => None,
            at => duration.checked_sub(Duration::from_nanos(at - 1)),
        };
        let counters = req.counters.as_ref().unwrap_or(&self.proxy.unrouted);
        counters.record(&Outcome {
            status: status.as_u16(),
            method: &req.method,
            duration,
            upstream,
            request_bytes: req.request_bytes,
            response_bytes: req.response_bytes.load(Ordering::Relaxed),
        });
        let Some(l) = logged else { return end };
        self.proxy.config.access_log.write(&Entry {
            client: l.client.unwrap_or(self.info.client.ip()),
            method: &l.method,
            host: &l.host,
            path: &l.path,
            version: l.version,
            status,
            upstream: l.upstream.as_deref(),
            backend: l.backend.as_deref(),
            duration,
            request_id: &l.request_id,
        });
        end
    }
}

/// Whether a response with `status` is an interim one, to be followed by another.
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// What a failure to connect counts as for the retry rules and endpoint health.
fn connect_failure(e: &UpstreamError) -> Failed {
    match e {
        UpstreamError::ConnectTimeout => Failed::ConnectTimeout,
        _ => Failed::Connect,
    }
}

/// What a failure to read a response head counts as.
fn read_failure(e: &UpstreamError) -> Failed {
    match e {
        UpstreamError::Protocol(_) => Failed::Invalid,
        _ => Failed::Broken,
    }
}

fn upstream_error(target: &Target, source: UpstreamError) -> ProxyError {
    ProxyError::Upstream {
        addr: target.to_string(),
        source,
    }
}
