//! One client connection on the HTTP/1.1 path: read a request head, route it, send it on a
//! pooled upstream connection, relay the response, and repeat while the connection is kept
//! alive. Everything happens on the connection's own task.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::futures::Notified;

use super::codec::{self, Chunked, Field, Framing, HeadError, Kind, RequestHead, ResponseHead};
use super::pool::Upstream;
use super::{push_date, Buf, ClientIo, Deadline, Stop};
use crate::error::{local_body, LOCAL_CONTENT_TYPE};
use crate::forward::{next_endpoint, redirect_location, route, ConnInfo, Routed, MAX_ATTEMPTS};
use crate::headers;
use crate::log::{AccessLog, Entry};
use crate::upstream::{Target, UpstreamError};
use crate::{Proxy, ProxyError};

/// Bytes read at a time while a head is incomplete.
const HEAD_READ: usize = 4096;
/// Bytes read at a time while relaying a body.
const BODY_READ: usize = 64 * 1024;
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
    Forward(Target),
    Local(StatusCode, Option<String>),
}

/// What is kept about a request once its head bytes are consumed.
struct Req {
    method: Method,
    minor: u8,
    keep_alive: bool,
    framing: Framing,
    upgrade: bool,
    expect_continue: bool,
    /// Where the host and the path sit in the upstream head, for finding another endpoint.
    host: Range<usize>,
    path: Range<usize>,
}

impl Req {
    fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// What the access log needs beyond the status.
struct Logged {
    start: Instant,
    method: Method,
    version: Version,
    host: String,
    path: String,
    request_id: String,
    backend: Option<String>,
    upstream: Option<String>,
}

/// How a request failed before a response head reached the client.
enum Failure {
    /// The upstream could not be reached, broke, or was too slow: answered with 502/504.
    Upstream(ProxyError),
    /// The client went away while sending its body.
    ClientGone,
    /// The client stopped sending its body: answered with 408.
    ClientStalled,
    /// The client's chunked body framing was invalid: answered with 400.
    BadBody(&'static str),
}

/// A request written to an upstream that answered with a head.
struct Sent {
    up: Upstream,
    target: Target,
    head: ResponseHead,
}

impl<S: ClientIo> Client<'_, S> {
    async fn run(&mut self) {
        loop {
            let head = match self.read_head().await {
                HeadRead::Head(head) => head,
                HeadRead::Closed => return,
                HeadRead::Bad(e) => {
                    tracing::debug!(client = %self.info.client, error = %e, "bad request head");
                    let status =
                        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                    self.out.clear();
                    push_local(&mut self.out, status, 1, false, false, None);
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

        let target = match plan {
            Plan::Local(status, location) => {
                let keep = req.keep_alive && !has_body(req.framing) && !self.stop.is_set();
                self.out.clear();
                push_local(
                    &mut self.out,
                    status,
                    req.minor,
                    keep,
                    req.is_head(),
                    location.as_deref(),
                );
                let written = write_flush(&mut self.stream, &self.out).await.is_ok();
                self.log(logged, status);
                return written && keep;
            }
            Plan::Forward(target) => target,
        };

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

        let sent = match self.send(target, &req, whole, &mut body_done).await {
            Ok(sent) => sent,
            Err(failure) => return self.failed(failure, &req, body_done, logged).await,
        };
        if let Some(l) = logged.as_mut() {
            l.upstream = Some(sent.target.to_string());
        }
        self.respond(sent, &req, logged).await
    }

    /// Answers a request that failed before any response head was sent.
    async fn failed(
        &mut self,
        failure: Failure,
        req: &Req,
        body_done: bool,
        logged: Option<Logged>,
    ) -> bool {
        let status = match &failure {
            Failure::Upstream(error) => {
                tracing::warn!(%error, "upstream failure");
                error.status()
            }
            Failure::ClientGone => {
                // Nobody to answer; logged with nginx's "client closed request" code.
                self.log(
                    logged,
                    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                );
                return false;
            }
            Failure::BadBody(what) => {
                tracing::debug!(client = %self.info.client, error = what, "bad request body");
                StatusCode::BAD_REQUEST
            }
            Failure::ClientStalled => {
                tracing::debug!(client = %self.info.client, "request body stalled");
                StatusCode::REQUEST_TIMEOUT
            }
        };
        let keep = req.keep_alive && body_done && !self.stop.is_set();
        self.out.clear();
        push_local(&mut self.out, status, req.minor, keep, req.is_head(), None);
        let written = write_flush(&mut self.stream, &self.out).await.is_ok();
        self.log(logged, status);
        written && keep
    }

    /// Writes the request (head in `out`, then any body still to come from the client) to an
    /// upstream connection and reads the response head. Connection failures move on to another
    /// ready endpoint; a reused connection found closed is replaced while the request can still
    /// be written again.
    async fn send(
        &mut self,
        mut target: Target,
        req: &Req,
        whole: bool,
        body_done: &mut bool,
    ) -> Result<Sent, Failure> {
        let pool = &self.proxy.h1_pool;
        let mut failed: Vec<SocketAddr> = Vec::new();
        let mut stale = 0;
        loop {
            let mut up = match pool.take(&target) {
                Some(up) => up,
                None => match pool.connect(&target).await {
                    Ok(up) => up,
                    Err(e) => {
                        if let Target::Addr(addr) = target {
                            failed.push(addr);
                        }
                        let next = if failed.len() < MAX_ATTEMPTS {
                            let host =
                                std::str::from_utf8(&self.out[req.host.clone()]).unwrap_or("");
                            let path =
                                std::str::from_utf8(&self.out[req.path.clone()]).unwrap_or("/");
                            next_endpoint(self.proxy, host, path, &failed)
                        } else {
                            None
                        };
                        match next {
                            Some(next) => {
                                tracing::debug!(error = %e, failed = %target, %next, "trying another endpoint");
                                target = Target::Addr(next);
                                continue;
                            }
                            None => return Err(upstream_failure(&target, e)),
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
                return Err(upstream_failure(&target, UpstreamError::Io(e)));
            }
            if !whole {
                if req.expect_continue && self.buf.is_empty() {
                    write_flush(&mut self.stream, b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .map_err(|_| Failure::ClientGone)?;
                }
                let ends = Ends {
                    deadline: &mut self.deadline,
                    idle: self.proxy.config.body_idle_timeout,
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
                    Ok(()) => *body_done = true,
                    Err(RelayError::Read(_) | RelayError::Eof) => return Err(Failure::ClientGone),
                    Err(RelayError::ReadStalled) => return Err(Failure::ClientStalled),
                    Err(RelayError::Framing(what)) => return Err(Failure::BadBody(what)),
                    Err(RelayError::Write(e)) => {
                        return Err(upstream_failure(&target, UpstreamError::Io(e)))
                    }
                    Err(RelayError::WriteStalled) => {
                        let timeout = ProxyError::Timeout(target.to_string());
                        return Err(Failure::Upstream(timeout));
                    }
                }
            }
            let waiting = read_response_head(&mut up, req.is_head());
            let timeout = self.proxy.config.response_header_timeout;
            match self.deadline.within(timeout, waiting).await {
                None => return Err(Failure::Upstream(ProxyError::Timeout(target.to_string()))),
                Some(Ok(head)) => return Ok(Sent { up, target, head }),
                Some(Err(UpstreamError::Closed)) if reused && whole && stale < STALE_RETRIES => {
                    stale += 1;
                }
                Some(Err(e)) => return Err(upstream_failure(&target, e)),
            }
        }
    }

    /// Relays interim responses, then the final response head and body, or tunnels after a
    /// protocol switch. Returns whether the client connection stays open.
    async fn respond(&mut self, sent: Sent, req: &Req, logged: Option<Logged>) -> bool {
        let Sent {
            mut up,
            target,
            mut head,
        } = sent;
        let client_http11 = req.minor == 1;
        while (100..200).contains(&head.status) && head.status != 101 {
            if client_http11 {
                self.out.clear();
                push_response_start(&mut self.out, up.buf.unread(), &head, req.is_head());
                self.out.extend_from_slice(b"\r\n");
                if write_flush(&mut self.stream, &self.out).await.is_err() {
                    return false;
                }
            }
            up.buf.consume(head.len);
            let waiting = read_response_head(&mut up, req.is_head());
            let timeout = self.proxy.config.response_header_timeout;
            head = match self.deadline.within(timeout, waiting).await {
                Some(Ok(head)) => head,
                Some(Err(e)) => {
                    return self
                        .failed(upstream_failure(&target, e), req, true, logged)
                        .await
                }
                None => {
                    let timeout = Failure::Upstream(ProxyError::Timeout(target.to_string()));
                    return self.failed(timeout, req, true, logged).await;
                }
            };
        }
        let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);

        if head.status == 101 {
            if !req.upgrade {
                let error = upstream_failure(
                    &target,
                    UpstreamError::Protocol("switched protocols without being asked"),
                );
                return self.failed(error, req, true, logged).await;
            }
            self.out.clear();
            push_response_start(&mut self.out, up.buf.unread(), &head, false);
            self.out.extend_from_slice(b"Connection: upgrade\r\n");
            if let Some(f) = find_field(up.buf.unread(), &head.fields, b"upgrade") {
                push_field(&mut self.out, up.buf.unread(), f);
            }
            self.out.extend_from_slice(b"\r\n");
            up.buf.consume(head.len);
            self.out.extend_from_slice(up.buf.unread());
            up.buf.consume(up.buf.unread().len());
            self.log(logged, status);
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
            return false;
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
        push_response_start(&mut self.out, up.buf.unread(), &head, req.is_head());
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
        if write_flush(&mut self.stream, &self.out).await.is_err() {
            self.log(logged, status);
            return false;
        }
        let ends = Ends {
            deadline: &mut self.deadline,
            idle: self.proxy.config.body_idle_timeout,
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
        self.log(logged, status);
        match relayed {
            Ok(()) => {
                if head.keep_alive && head.framing != Framing::Close {
                    self.proxy.h1_pool.put(&target, up);
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

    fn log(&self, logged: Option<Logged>, status: StatusCode) {
        let Some(l) = logged else { return };
        self.proxy.config.access_log.write(&Entry {
            client: self.info.client,
            method: &l.method,
            host: &l.host,
            path: &l.path,
            version: l.version,
            status,
            upstream: l.upstream.as_deref(),
            backend: l.backend.as_deref(),
            duration: l.start.elapsed(),
            request_id: &l.request_id,
        });
    }
}

fn upstream_failure(target: &Target, source: UpstreamError) -> Failure {
    Failure::Upstream(ProxyError::Upstream {
        addr: target.to_string(),
        source,
    })
}

fn has_body(framing: Framing) -> bool {
    !matches!(framing, Framing::None | Framing::Length(0))
}

/// Routes a request and writes its upstream head into `out`.
fn plan(
    proxy: &Proxy,
    info: &ConnInfo,
    raw: &[u8],
    head: &RequestHead,
    out: &mut Vec<u8>,
    log: bool,
) -> (Plan, Req, Option<Logged>) {
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
        host: 0..0,
        path: 0..0,
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
    let mut logged = log.then(|| Logged {
        start: Instant::now(),
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
    });
    let Ok(path) = std::str::from_utf8(path_bytes) else {
        return (Plan::Local(StatusCode::BAD_REQUEST, None), req, logged);
    };
    let path_and_query = &raw[head.path_and_query.clone()];

    let backend_name = logged.as_mut().map(|l| &mut l.backend);
    let target = match route(proxy, info.scheme, host, path, backend_name) {
        Ok(Routed::Upstream(target)) => target,
        Ok(Routed::Redirect) => {
            let target = match std::str::from_utf8(path_and_query) {
                Ok("") => "/",
                Ok(t) => t,
                Err(_) => return (Plan::Local(StatusCode::BAD_REQUEST, None), req, logged),
            };
            let location = redirect_location(host, target, proxy.config.https_redirect_port);
            return (
                Plan::Local(StatusCode::PERMANENT_REDIRECT, Some(location)),
                req,
                logged,
            );
        }
        Err(error) => return (Plan::Local(error.status(), None), req, logged),
    };

    // The upstream request head: origin-form target, the client's fields minus hop-by-hop and
    // forwarding ones, then ours.
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let path_start = out.len();
    if path_and_query.is_empty() {
        out.push(b'/');
        req.path = path_start..out.len();
    } else {
        out.extend_from_slice(path_and_query);
        req.path = path_start..path_start + path_bytes.len().min(path_and_query.len());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let host_start = out.len();
    out.extend_from_slice(host.as_bytes());
    req.host = host_start..out.len();
    out.extend_from_slice(b"\r\n");
    let mut kept = FieldRun::new(raw);
    for f in &head.fields {
        match f.kind {
            Kind::Other => {
                if head.expect_continue && raw[f.name.clone()].eq_ignore_ascii_case(b"expect") {
                    continue;
                }
                kept.keep(out, f);
            }
            Kind::XRequestId | Kind::Server | Kind::Date => kept.keep(out, f),
            Kind::Hop | Kind::Framing | Kind::Host | Kind::Forwarded | Kind::XForwardedFor => {}
        }
    }
    kept.finish(out);
    out.extend_from_slice(b"X-Forwarded-For: ");
    for f in head.fields.iter().filter(|f| f.kind == Kind::XForwardedFor) {
        let prior = raw[f.value.clone()].trim_ascii();
        if !prior.is_empty() {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
    }
    let client_ip = info.client_ip.as_bytes();
    out.extend_from_slice(client_ip);
    out.extend_from_slice(b"\r\nX-Real-IP: ");
    out.extend_from_slice(client_ip);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(info.scheme.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Host: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Port: ");
    out.extend_from_slice(info.local_port.as_bytes());
    out.extend_from_slice(b"\r\n");
    if given_id.is_none() {
        out.extend_from_slice(b"X-Request-ID: ");
        out.extend_from_slice(request_id);
        out.extend_from_slice(b"\r\n");
    }
    match head.framing {
        Framing::Length(n) => push_content_length(out, n),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        if let Some(f) = find_field(raw, &head.fields, b"upgrade") {
            push_field(out, raw, f);
        }
    }
    out.extend_from_slice(b"\r\n");
    (Plan::Forward(target), req, logged)
}

fn find_field<'f>(raw: &[u8], fields: &'f [Field], name: &[u8]) -> Option<&'f Field> {
    fields
        .iter()
        .find(|f| raw[f.name.clone()].eq_ignore_ascii_case(name))
}

fn push_field(out: &mut Vec<u8>, raw: &[u8], f: &Field) {
    out.extend_from_slice(&raw[f.name.clone()]);
    out.extend_from_slice(b": ");
    out.extend_from_slice(&raw[f.value.clone()]);
    out.extend_from_slice(b"\r\n");
}

/// Copies the field lines a head passes on. Lines that follow one another in the received head
/// go out as one copy of the received bytes (from the first name to the last value, CRLFs
/// between them included); each run ends with a CRLF of ours.
struct FieldRun<'r> {
    raw: &'r [u8],
    run: Option<Range<usize>>,
}

impl<'r> FieldRun<'r> {
    fn new(raw: &'r [u8]) -> Self {
        FieldRun { raw, run: None }
    }

    fn keep(&mut self, out: &mut Vec<u8>, f: &Field) {
        let line = f.name.start..f.value.end;
        if let Some(run) = &mut self.run {
            if joins(&self.raw[run.end..line.start]) {
                run.end = line.end;
                return;
            }
        }
        self.finish(out);
        self.run = Some(line);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(run) = self.run.take() {
            out.extend_from_slice(&self.raw[run]);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Whether the bytes between one field value and the next field name are only trailing
/// whitespace and one CRLF (a bare LF or anything else ends the run, and the copy gets a CRLF).
fn joins(gap: &[u8]) -> bool {
    match gap.strip_suffix(b"\r\n") {
        Some(ows) => ows.iter().all(|&b| b == b' ' || b == b'\t'),
        None => false,
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    if reason.is_empty() {
        let canonical = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        out.extend_from_slice(canonical.as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
}

/// The status line and end-to-end fields of an upstream response, plus `Server` and `Date`
/// when the upstream sent none. Framing and connection fields are the caller's.
fn push_response_start(out: &mut Vec<u8>, raw: &[u8], head: &ResponseHead, head_request: bool) {
    push_status_line(out, head.status, &raw[head.reason.clone()]);
    // A response without a body may still describe the length of one (HEAD, 304).
    let keep_length =
        head.framing == Framing::None && (head_request || head.status == 304) && head.status >= 200;
    let mut has_server = false;
    let mut has_date = false;
    let mut kept = FieldRun::new(raw);
    for f in &head.fields {
        match f.kind {
            Kind::Hop => continue,
            Kind::Framing
                if !(keep_length
                    && raw[f.name.clone()].eq_ignore_ascii_case(b"content-length")) =>
            {
                continue
            }
            Kind::Server => has_server = true,
            Kind::Date => has_date = true,
            _ => {}
        }
        kept.keep(out, f);
    }
    kept.finish(out);
    if head.status >= 200 {
        if !has_server {
            out.extend_from_slice(b"Server: portcullis\r\n");
        }
        if !has_date {
            out.extend_from_slice(b"Date: ");
            push_date(out);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A small response Portcullis makes itself (errors, redirects).
fn push_local(
    out: &mut Vec<u8>,
    status: StatusCode,
    minor: u8,
    keep_alive: bool,
    head_request: bool,
    location: Option<&str>,
) {
    let reason = status.canonical_reason().unwrap_or("");
    let body = local_body(status);
    push_status_line(out, status.as_u16(), reason.as_bytes());
    out.extend_from_slice(b"Server: portcullis\r\nDate: ");
    push_date(out);
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(LOCAL_CONTENT_TYPE.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_content_length(out, body.len() as u64);
    if let Some(location) = location {
        out.extend_from_slice(b"Location: ");
        out.extend_from_slice(location.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(&body);
    }
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
                Ok(None) => {}
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
                Ok(None) => {}
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

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// How a body is rewritten on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Bytes go through as they are (framing included).
    Pass,
    /// Chunked framing is removed (for HTTP/1.0 clients).
    Decode,
    /// A close-delimited body is sent chunked (for HTTP/1.1 clients).
    Encode,
}

#[derive(Debug)]
enum RelayError {
    Read(io::Error),
    Write(io::Error),
    Eof,
    Framing(&'static str),
    /// No bytes from the sender within the body idle timeout.
    ReadStalled,
    /// The receiver took nothing within the body idle timeout.
    WriteStalled,
}

/// The clock a body relay waits on, and how long each wait may take.
struct Ends<'d> {
    deadline: &'d mut Deadline,
    idle: Duration,
}

impl Ends<'_> {
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        buf: &mut Buf,
        src: &mut R,
    ) -> Result<usize, RelayError> {
        match self
            .deadline
            .within(self.idle, buf.fill(src, BODY_READ))
            .await
        {
            Some(read) => read.map_err(RelayError::Read),
            None => Err(RelayError::ReadStalled),
        }
    }

    async fn put<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        bytes: &[u8],
    ) -> Result<(), RelayError> {
        match self.deadline.within(self.idle, dst.write_all(bytes)).await {
            Some(written) => written.map_err(RelayError::Write),
            None => Err(RelayError::WriteStalled),
        }
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Read(e) => write!(f, "read: {e}"),
            RelayError::Write(e) => write!(f, "write: {e}"),
            RelayError::Eof => f.write_str("ended before the body was complete"),
            RelayError::Framing(what) => write!(f, "chunked framing: {what}"),
            RelayError::ReadStalled => f.write_str("no body bytes within the body idle timeout"),
            RelayError::WriteStalled => f.write_str("body not taken within the body idle timeout"),
        }
    }
}

/// Copies one body delimited by `framing` from `src` (bytes already read are in `buf`) to `dst`.
/// Bytes after the body stay in `buf`.
async fn relay<R, W>(
    src: &mut R,
    buf: &mut Buf,
    dst: &mut W,
    framing: Framing,
    mode: Mode,
    mut ends: Ends<'_>,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scratch = Vec::new();
    match framing {
        Framing::None => return Ok(()),
        Framing::Length(total) => {
            let mut left = total;
            loop {
                let take = (buf.unread().len() as u64).min(left) as usize;
                if take > 0 {
                    ends.put(dst, &buf.unread()[..take]).await?;
                    buf.consume(take);
                    left -= take as u64;
                }
                if left == 0 {
                    break;
                }
                if ends.fill(buf, src).await? == 0 {
                    return Err(RelayError::Eof);
                }
            }
        }
        Framing::Chunked => {
            let mut chunked = Chunked::new();
            loop {
                if !buf.is_empty() {
                    let done = if mode == Mode::Decode {
                        scratch.clear();
                        let (n, done) = chunked
                            .decode(buf.unread(), &mut scratch)
                            .map_err(|e| RelayError::Framing(e.0))?;
                        buf.consume(n);
                        if !scratch.is_empty() {
                            ends.put(dst, &scratch).await?;
                        }
                        done
                    } else {
                        let (n, done) = chunked
                            .scan(buf.unread())
                            .map_err(|e| RelayError::Framing(e.0))?;
                        ends.put(dst, &buf.unread()[..n]).await?;
                        buf.consume(n);
                        done
                    };
                    if done {
                        break;
                    }
                }
                if ends.fill(buf, src).await? == 0 {
                    return Err(RelayError::Eof);
                }
            }
        }
        Framing::Close => {
            loop {
                if !buf.is_empty() {
                    let data = buf.unread();
                    if mode == Mode::Encode {
                        scratch.clear();
                        codec::push_chunk_header(data.len(), &mut scratch);
                        scratch.extend_from_slice(data);
                        scratch.extend_from_slice(b"\r\n");
                        ends.put(dst, &scratch).await?;
                    } else {
                        ends.put(dst, data).await?;
                    }
                    let n = data.len();
                    buf.consume(n);
                }
                if ends.fill(buf, src).await? == 0 {
                    break;
                }
            }
            if mode == Mode::Encode {
                scratch.clear();
                codec::push_last_chunk(&mut scratch);
                ends.put(dst, &scratch).await?;
            }
        }
    }
    dst.flush().await.map_err(RelayError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::codec::parse_response;

    fn kept_lines(text: &str) -> String {
        let raw = text.as_bytes();
        let head = parse_response(raw, false).unwrap().unwrap();
        let mut out = Vec::new();
        let mut kept = FieldRun::new(raw);
        for f in head.fields.iter().filter(|f| f.kind != Kind::Hop) {
            kept.keep(&mut out, f);
        }
        kept.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn adjacent_fields_are_copied_as_received_and_gaps_close_runs() {
        let text = "HTTP/1.1 200 OK\r\nA: 1\r\nB:2  \r\nConnection: x\r\nX: y\r\nC:\t3\r\n\r\n";
        // `Connection` and the field it names are dropped; runs around them get their own CRLF.
        assert_eq!(kept_lines(text), "A: 1\r\nB:2\r\nC:\t3\r\n");
        let text = "HTTP/1.1 200 OK\r\nA: 1 \r\nB: 2\r\nEmpty:\r\nD: 4\r\n\r\n";
        assert_eq!(kept_lines(text), "A: 1 \r\nB: 2\r\nEmpty:\r\nD: 4\r\n");
    }

    #[test]
    fn bare_line_feeds_are_not_copied() {
        let text = "HTTP/1.1 200 OK\nA: 1\nB: 2\r\nC: 3\n\n";
        assert_eq!(kept_lines(text), "A: 1\r\nB: 2\r\nC: 3\r\n");
    }

    #[test]
    fn joins_needs_exactly_one_crlf_after_whitespace() {
        assert!(joins(b"\r\n"));
        assert!(joins(b" \t\r\n"));
        assert!(!joins(b"\n"));
        assert!(!joins(b"\r\n\r\n"));
        assert!(!joins(b"x\r\n"));
        assert!(!joins(b""));
    }
}
