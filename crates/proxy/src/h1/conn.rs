//! One client connection on the HTTP/1.1 path: read a request head, decide, send it on a
//! pooled upstream connection, relay the response, and repeat while the connection is kept
//! alive. Everything happens on the connection's own task.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::sync::futures::Notified;

use super::codec::{self, Field, Framing, HeadError, Kind, RequestHead, ResponseHead};
use super::head::{
    find_field, push_content_length, push_field, push_local, push_request, push_response_start,
    RequestLine,
};
use super::pool::Upstream;
use super::relay::{relay, write_flush, Ends, Mode, RelayError};
use super::{Buf, ClientIo, Deadline, Stop};
use crate::decide::{Attempts, Decision, Failed, Forward, Local, RequestHeaders, View};
use crate::forward::ConnInfo;
use crate::headers;
use crate::log::{AccessLog, Entry};
use crate::quickack::QuickAck;
use crate::stats::{Outcome, RouteCounters};
use crate::upstream::{Target, UpstreamError};
use crate::{Proxy, ProxyError};

/// Bytes read at a time while a head is incomplete.
const HEAD_READ: usize = 4096;
/// A body up to this size that has fully arrived travels in the same write as its head.
const INLINE_BODY: u64 = 16 * 1024;
/// Output buffer capacity kept between requests.
const KEEP_OUT: usize = 16 * 1024;
/// Retries of a request whose reused upstream connection turned out to be closed.
const STALE_RETRIES: usize = 2;

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
}

enum HeadRead {
    Head(RequestHead),
    Closed,
    Bad(HeadError),
}

/// What happens to a request, decided from its head and the table.
enum Plan {
    Forward(Forward),
    Local(Local),
}

/// What is kept about a request once its head bytes are consumed.
struct Req {
    method: Method,
    minor: u8,
    keep_alive: bool,
    framing: Framing,
    upgrade: bool,
    expect_continue: bool,
    /// When the head was read.
    start: Instant,
    /// The head's size plus the declared body's.
    request_bytes: u64,
    /// The matched route's counters (`None`: no route; the proxy's unrouted counters).
    counters: Option<Arc<RouteCounters>>,
    /// When the request went upstream, in nanoseconds after `start` plus one (0: it did not).
    upstream_at: AtomicU64,
    /// Bytes of the response written to the client.
    response_bytes: AtomicU64,
}

impl Req {
    fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// What the access log needs beyond the status.
struct Logged {
    method: Method,
    version: Version,
    host: String,
    path: String,
    request_id: String,
    backend: Option<String>,
    upstream: Option<String>,
}

/// A request written to an upstream that answered with a head.
struct Sent {
    up: Upstream,
    target: Target,
    head: ResponseHead,
}

/// The fields of a request head, for the decision.
struct RawFields<'a> {
    raw: &'a [u8],
    fields: &'a [Field],
}

impl RequestHeaders for RawFields<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        find_field(self.raw, self.fields, name.as_bytes()).map(|f| &self.raw[f.value.clone()])
    }
}

impl<S: ClientIo> Client<'_, S> {
    async fn run(&mut self) {
        loop {
            let head = match self.read_head().await {
                HeadRead::Head(head) => head,
                HeadRead::Closed => return,
                HeadRead::Bad(e) => {
                    tracing::debug!(client = %self.info.client, error = %e, "bad request head");
                    let error = ProxyError::from(e);
                    self.out.clear();
                    push_local(
                        &mut self.out,
                        &Local::status(error.status()),
                        1,
                        false,
                        false,
                    );
                    let _ = write_flush(&mut self.stream, &self.out).await;
                    let _ = self.stream.shutdown().await;
                    return;
                }
            };
            if !self.exchange(head).await {
                let _ = self.stream.shutdown().await;
                return;
            }
            if self.out.capacity() > KEEP_OUT {
                self.out = Vec::new();
            }
        }
    }

    /// The next request head, waiting at most the idle timeout and not past shutdown.
    async fn read_head(&mut self) -> HeadRead {
        let idle = self.proxy.config.client_idle_timeout;
        let reading = read_request_head(&mut self.stream, &mut self.buf);
        tokio::select! {
            biased;
            () = &mut self.stop_signal => HeadRead::Closed,
            read = self.deadline.within(idle, reading) => read.unwrap_or(HeadRead::Closed),
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
        self.buf.consume(head.len);
        drop(head);

        let forward = match plan {
            Plan::Local(local) => {
                let keep = req.keep_alive && !has_body(req.framing) && !self.stop.is_set();
                self.out.clear();
                push_local(&mut self.out, &local, req.minor, keep, req.is_head());
                let written = write_flush(&mut self.stream, &self.out).await.is_ok();
                self.log(logged, &req, local.status);
                return written && keep;
            }
            Plan::Forward(forward) => forward,
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
        let mut stale = 0;
        loop {
            let mut up = match pool.take(&target, forward.upstream_tls(), req.start) {
                Some(up) => up,
                None => match pool.connect(&target, forward, limits.connect).await {
                    Ok(up) => up,
                    Err(e) => {
                        let why = match e {
                            UpstreamError::ConnectTimeout => Failed::ConnectTimeout,
                            _ => Failed::Connect,
                        };
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
            if !whole {
                self.send_body(&mut up, &target, forward, req).await?;
                *body_done = true;
            }
            let waiting = read_response_head(&mut up, req.is_head());
            let answer = self.deadline.within(limits.read, waiting).await;
            if req.upstream_at.load(Ordering::Relaxed) == 0 {
                // The wait for the answer began as the request was sent.
                let sent = self.deadline.armed().saturating_duration_since(req.start);
                req.upstream_at
                    .store(sent.as_nanos() as u64 + 1, Ordering::Relaxed);
            }
            let (why, error) = match answer {
                Some(Ok(head)) => {
                    let status = head.status;
                    if status >= 200 {
                        forward.answered(self.proxy, &target, status);
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
                    return Ok(Sent { up, target, head });
                }
                Some(Err(UpstreamError::Closed)) if reused && whole && stale < STALE_RETRIES => {
                    stale += 1;
                    continue;
                }
                None => (Failed::Timeout, ProxyError::Timeout(target.to_string())),
                Some(Err(e)) => {
                    let why = match e {
                        UpstreamError::Protocol(_) => Failed::Invalid,
                        _ => Failed::Broken,
                    };
                    (why, upstream_error(&target, e))
                }
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

    /// Relays the rest of the request body (after `100 Continue` when the client waits for it).
    async fn send_body(
        &mut self,
        up: &mut Upstream,
        target: &Target,
        forward: &Forward,
        req: &Req,
    ) -> Result<(), ProxyError> {
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
        match relay(
            &mut self.stream,
            &mut self.buf,
            &mut up.stream,
            req.framing,
            Mode::Pass,
            ends,
        )
        .await
        {
            Ok(_) => Ok(()),
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
            mut head,
        } = sent;
        let limits = forward.limits(self.proxy);
        let client_http11 = req.minor == 1;
        while (100..200).contains(&head.status) && head.status != 101 {
            if client_http11 {
                self.out.clear();
                push_response_start(&mut self.out, up.buf.unread(), &head, req.is_head(), &[]);
                self.out.extend_from_slice(b"\r\n");
                if write_flush(&mut self.stream, &self.out).await.is_err() {
                    return false;
                }
            }
            up.buf.consume(head.len);
            let waiting = read_response_head(&mut up, req.is_head());
            head = match self.deadline.within(limits.read, waiting).await {
                Some(Ok(head)) => head,
                Some(Err(e)) => {
                    return self
                        .failed(upstream_error(&target, e), req, true, logged)
                        .await
                }
                None => {
                    let timeout = ProxyError::Timeout(target.to_string());
                    return self.failed(timeout, req, true, logged).await;
                }
            };
        }
        let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        if head.status == 101 {
            return self.switch(up, target, head, req, logged, status).await;
        }

        // The body's framing towards the client.
        let (framing_line, mode, reframed): (&[u8], Mode, bool) =
            match (head.framing, client_http11) {
                (Framing::Length(_), _) | (Framing::None, _) => (b"", Mode::Pass, false),
                // The upstream's own Transfer-Encoding fields go through (they may list codings
                // before `chunked`).
                (Framing::Chunked, true) => (b"", Mode::Pass, false),
                (Framing::Chunked, false) => (b"", Mode::Decode, true),
                (Framing::Close, true) => (b"Transfer-Encoding: chunked\r\n", Mode::Encode, false),
                (Framing::Close, false) => (b"", Mode::Pass, true),
            };
        let keep = req.keep_alive && !reframed && !self.stop.is_set();

        self.out.clear();
        let set = if forward.has_response_fields() {
            forward.response_fields()
        } else {
            Vec::new()
        };
        push_response_start(&mut self.out, up.buf.unread(), &head, req.is_head(), &set);
        if let Framing::Length(n) = head.framing {
            push_content_length(&mut self.out, n);
        }
        self.out.extend_from_slice(framing_line);
        if head.framing == Framing::Chunked && client_http11 {
            let raw = up.buf.unread();
            for f in head.fields.iter().filter(|f| f.kind == Kind::Framing) {
                if raw[f.name.clone()].eq_ignore_ascii_case(b"transfer-encoding") {
                    push_field(&mut self.out, raw, f);
                }
            }
        }
        if !keep {
            self.out.extend_from_slice(b"Connection: close\r\n");
        } else if !client_http11 {
            self.out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        up.buf.consume(head.len);
        let mut body = head.framing;
        if let Framing::Length(n) = body {
            if n <= INLINE_BODY && up.buf.unread().len() as u64 >= n {
                let n = n as usize;
                self.out.extend_from_slice(&up.buf.unread()[..n]);
                up.buf.consume(n);
                body = Framing::None;
            }
        }
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
        let relayed = relay(
            &mut up.stream,
            &mut up.buf,
            &mut self.stream,
            body,
            mode,
            ends,
        )
        .await;
        if let Ok(n) = relayed {
            req.response_bytes.fetch_add(n, Ordering::Relaxed);
        }
        let end = self.log(logged, req, status);
        match relayed {
            Ok(_) => {
                if head.keep_alive && head.framing != Framing::Close {
                    self.proxy.h1_pool.put(&target, up, end);
                }
                keep
            }
            Err(RelayError::Write(_)) => false,
            Err(RelayError::WriteStalled) => {
                tracing::debug!(client = %self.info.client, "client stopped taking the response body");
                false
            }
            Err(e) => {
                tracing::debug!(upstream = %target, error = %e, "upstream response body broke off");
                false
            }
        }
    }

    /// Completes a protocol switch (101) and tunnels bytes both ways until either side closes.
    async fn switch(
        &mut self,
        mut up: Upstream,
        target: Target,
        head: ResponseHead,
        req: &Req,
        logged: Option<Box<Logged>>,
        status: StatusCode,
    ) -> bool {
        if !req.upgrade {
            let error = upstream_error(
                &target,
                UpstreamError::Protocol("switched protocols without being asked"),
            );
            return self.failed(error, req, true, logged).await;
        }
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
            client: self.info.client,
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

fn upstream_error(target: &Target, source: UpstreamError) -> ProxyError {
    ProxyError::Upstream {
        addr: target.to_string(),
        source,
    }
}

fn has_body(framing: Framing) -> bool {
    !matches!(framing, Framing::None | Framing::Length(0))
}

/// Decides what happens to a request and, when it is forwarded, writes its upstream head into
/// `out`.
fn plan(
    proxy: &Proxy,
    info: &ConnInfo,
    raw: &[u8],
    head: &RequestHead,
    out: &mut Vec<u8>,
    log: bool,
) -> (Plan, Req, Option<Box<Logged>>) {
    let host = head
        .host
        .clone()
        .and_then(|r| std::str::from_utf8(&raw[r]).ok())
        .unwrap_or("");
    let path_bytes: &[u8] = match &raw[head.path.clone()] {
        b"" => b"/",
        p => p,
    };
    let mut req = Req {
        method: head.method.clone(),
        minor: head.minor_version,
        keep_alive: head.keep_alive,
        framing: head.framing,
        upgrade: head.upgrade,
        expect_continue: head.expect_continue,
        start: Instant::now(),
        request_bytes: head.len as u64
            + match head.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
        counters: None,
        upstream_at: AtomicU64::new(0),
        response_bytes: AtomicU64::new(0),
    };
    let given_id = head
        .fields
        .iter()
        .find(|f| f.kind == Kind::XRequestId)
        .map(|f| &raw[f.value.clone()]);
    let generated;
    let request_id: &[u8] = match given_id {
        Some(id) => id,
        None => {
            generated = headers::request_id_hex();
            &generated
        }
    };
    let mut logged = log.then(|| {
        Box::new(Logged {
            method: head.method.clone(),
            version: if head.minor_version == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            },
            host: host.to_string(),
            path: String::from_utf8_lossy(path_bytes).into_owned(),
            request_id: String::from_utf8_lossy(request_id).into_owned(),
            backend: None,
            upstream: None,
        })
    });
    let bad = |req, logged| {
        let local = Local::status(StatusCode::BAD_REQUEST);
        (Plan::Local(local), req, logged)
    };
    let Ok(path) = std::str::from_utf8(path_bytes) else {
        return bad(req, logged);
    };
    let target = match &raw[head.path_and_query.clone()] {
        b"" => b"/".as_slice(),
        t => t,
    };
    // The query is read only as far as a rewrite or redirect needs it.
    let query = match target.iter().position(|&b| b == b'?') {
        None => None,
        Some(at) => match std::str::from_utf8(&target[at + 1..]) {
            Ok(q) => Some(q),
            Err(_) => return bad(req, logged),
        },
    };
    let view = View {
        https: info.scheme == "https",
        client: info.client.ip(),
        method: &head.method,
        host,
        path,
        query,
        content_length: match head.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        headers: &RawFields {
            raw,
            fields: &head.fields,
        },
    };
    let (decision, counters) = proxy.decide(&view);
    req.counters = counters;
    let forward = match decision {
        Ok(Decision::Forward(forward)) => forward,
        Ok(Decision::Local(local)) => return (Plan::Local(local), req, logged),
        Err(error) => return (Plan::Local(Local::status(error.status())), req, logged),
    };
    if let Some(l) = logged.as_mut() {
        l.backend = Some(forward.backend.name.clone());
    }
    let line = RequestLine {
        host,
        target,
        new_id: given_id.is_none().then_some(request_id),
    };
    push_request(out, raw, head, &line, info, &forward);
    (Plan::Forward(forward), req, logged)
}

async fn read_request_head<S: ClientIo>(stream: &mut S, buf: &mut Buf) -> HeadRead {
    loop {
        if buf.is_empty() {
            // Idle: hold no buffer until the client sends something.
            buf.release_if_empty();
            if stream.wait_readable().await.is_err() {
                return HeadRead::Closed;
            }
        } else {
            match codec::parse_request(buf.unread()) {
                Ok(Some(head)) => return HeadRead::Head(head),
                // Part of a head: acknowledge it now, or a client with Nagle on holds the rest.
                Ok(None) => stream.quickack(),
                Err(e) => return HeadRead::Bad(e),
            }
        }
        match buf.fill(stream, HEAD_READ).await {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(_) => {}
        }
    }
}

async fn read_response_head(
    up: &mut Upstream,
    head_request: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !up.buf.is_empty() {
            match codec::parse_response(up.buf.unread(), head_request) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => up.stream.quickack(),
                Err(e) => return Err(UpstreamError::Protocol(head_error_text(e))),
            }
        }
        match up.buf.fill(&mut up.stream, HEAD_READ).await {
            Ok(0) if up.buf.is_empty() => return Err(UpstreamError::Closed),
            Ok(0) => return Err(UpstreamError::Protocol("response head cut short")),
            Ok(_) => {}
            Err(e)
                if up.buf.is_empty()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(UpstreamError::Closed)
            }
            Err(e) => return Err(UpstreamError::Io(e)),
        }
    }
}

fn head_error_text(e: HeadError) -> &'static str {
    match e {
        HeadError::TooLarge => "response head too large",
        HeadError::TooManyHeaders => "too many response header fields",
        HeadError::Invalid(what) => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::relay::tests::{source, Counting};
    use std::sync::atomic::Ordering;

    impl ClientIo for Counting {
        fn wait_readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send + '_ {
            std::future::ready(Ok(()))
        }
    }

    async fn head_acks(parts: &[&[u8]]) -> usize {
        let (mut src, mut peer, acks) = source();
        let mut buf = Buf::new();
        let reading = tokio::spawn(async move {
            let head = read_request_head(&mut src, &mut buf).await;
            matches!(head, HeadRead::Head(_))
        });
        for part in parts {
            peer.write_all(part).await.unwrap();
            // Each part is read on its own before the next is written.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        assert!(reading.await.unwrap(), "a whole head is read");
        acks.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_head_in_one_read_costs_no_quick_ack() {
        assert_eq!(head_acks(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await, 0);
    }

    #[tokio::test]
    async fn part_of_a_head_is_acknowledged_before_waiting_for_the_rest() {
        let acks = head_acks(&[b"GET / HTTP/1.1\r\nHo", b"st: a\r\n\r\n"]).await;
        assert!(acks >= 1);
    }
}
