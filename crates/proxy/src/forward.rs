//! One request on the HTTP/2 path: the shared decision, the edits it names applied to `http`
//! parts, forwarding over the upstream pools.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Body;

use crate::client::ForwardedHeaders;
use crate::decide::{Attempts, Decision, Failed, Forward, Local, View};
use crate::error::{local_response, ResBody, SERVER};
use crate::h2conn::{ClientBody, Streams};
use crate::headers::{self, X_REQUEST_ID};
use crate::log::{AccessLog, Entry};
use crate::stats::Outcome;
use crate::upstream::{RequestBody, Route, SendError, UpstreamError};
use crate::{Proxy, ProxyError};

/// What the proxy knows about the client connection a request arrived on, with the header
/// values derived from it computed once per connection rather than once per request.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address: the peer's, or the one its PROXY protocol header announced.
    pub client: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub(crate) client_ip: HeaderValue,
    pub(crate) local_port: HeaderValue,
    /// The exchanges of an HTTP/2 connection, for its idle timeout.
    pub(crate) streams: Streams,
    /// Whether the client is a proxy whose forwarded headers are believed.
    pub(crate) trusted: bool,
}

impl ConnInfo {
    /// Connection facts for a client connection.
    pub fn new(client: SocketAddr, local: SocketAddr, scheme: &'static str) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            client,
            scheme,
            client_ip,
            local_port: HeaderValue::from(local.port()),
            streams: Streams::default(),
            trusted: false,
        }
    }

    /// The same connection, its forwarded headers believed when `forwarded` trusts its client.
    pub(crate) fn trusting(mut self, forwarded: Option<&ForwardedHeaders>) -> Self {
        self.trusted = forwarded.is_some_and(|f| f.trusts(self.client.ip()));
        self
    }

    /// Whether a request with `headers` on this connection came over HTTPS: the connection's
    /// scheme, or a trusted proxy's `X-Forwarded-Proto` (so that a load balancer terminating
    /// TLS is not redirected to HTTPS again, as ingress-nginx's `use-forwarded-headers` does).
    pub(crate) fn https_of(&self, headers: &dyn crate::decide::RequestHeaders) -> bool {
        if self.trusted {
            if let Some(proto) = headers.get("x-forwarded-proto") {
                return proto.trim_ascii().eq_ignore_ascii_case(b"https");
            }
        }
        self.scheme == "https"
    }

    /// The client address of a request with `headers` on this connection: the connection's,
    /// or the one its trusted forwarded headers name.
    pub(crate) fn client_of(
        &self,
        config: &crate::ProxyConfig,
        headers: &dyn crate::decide::RequestHeaders,
    ) -> IpAddr {
        if self.trusted {
            if let Some(ip) = config
                .forwarded_headers
                .as_ref()
                .and_then(|f| f.client(headers))
            {
                return ip;
            }
        }
        self.client.ip()
    }
}

/// What the access log records about a request beyond its status.
struct Logged {
    /// The client address found for the request, when not the connection's.
    client: Option<IpAddr>,
    version: Version,
    host: String,
    path: String,
    upstream: Option<String>,
    backend: Option<String>,
}

/// Serves one request; never fails (failures become responses).
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
) -> Response<ResBody> {
    // Boxed: the record travels with the response body, which is moved into the stream's pump.
    let mut finish = Box::new(Finish::new(proxy, conn, &req));
    let Finish {
        proxy,
        conn,
        logged,
        request_id,
        tally,
        ..
    } = &mut *finish;
    let response = match forward(proxy, conn, req, request_id, logged.as_deref_mut(), tally).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ProxyError::Upstream { .. } | ProxyError::Timeout(_)) {
                tracing::warn!(%error, "upstream failure");
            }
            error.to_response()
        }
    };
    finish.answer(response)
}

/// A request's count and access-log line, written when the request is over: when its
/// response has been sent in full (or broke off on the upstream's side), or — dropped before
/// that, because the client reset the stream or closed the connection — as nginx's 499.
pub(crate) struct Finish {
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    logged: Option<Box<Logged>>,
    request_id: HeaderValue,
    method: http::Method,
    tally: Tally,
    request_bytes: u64,
    response_bytes: u64,
    /// The status answered, once the response is over; `None` until then.
    status: Option<StatusCode>,
    /// The status of the response under way.
    answering: StatusCode,
}

impl Finish {
    fn new(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, req: &Request<ClientBody>) -> Self {
        conn.streams.begin();
        let logged = (proxy.config.access_log != AccessLog::Off).then(|| {
            Box::new(Logged {
                client: None,
                version: req.version(),
                host: request_host(req).to_string(),
                path: req.uri().path().to_string(),
                upstream: None,
                backend: None,
            })
        });
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .cloned()
            .unwrap_or_else(headers::request_id);
        Finish {
            proxy,
            conn,
            logged,
            request_id,
            method: req.method().clone(),
            tally: Tally {
                start: Instant::now(),
                counters: None,
                upstream_at: None,
                guard: None,
            },
            request_bytes: req.body().size_hint().exact().unwrap_or(0),
            response_bytes: 0,
            status: None,
            answering: StatusCode::OK,
        }
    }

    /// Hands the record to the response: a streamed upstream body carries it until it ends; a
    /// complete response is counted now.
    fn answer(mut self: Box<Self>, mut response: Response<ResBody>) -> Response<ResBody> {
        self.answering = response.status();
        match response.body_mut() {
            Either::Left(body) if !body.is_end_stream() => body.finish = Some(self),
            body => {
                self.response_bytes = body.size_hint().exact().unwrap_or(0);
                self.complete();
            }
        }
        response
    }

    /// `n` more response body bytes went to the client.
    pub(crate) fn sent(&mut self, n: usize) {
        self.response_bytes += n as u64;
    }

    /// The response is over, whatever the client does next.
    pub(crate) fn complete(&mut self) {
        self.status = Some(self.answering);
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.conn.streams.end();
        let status = self
            .status
            .unwrap_or_else(|| ProxyError::ClientClosed.status());
        let duration = self.tally.start.elapsed();
        let counters = self.tally.counters.as_ref().unwrap_or(&self.proxy.unrouted);
        counters.record(&Outcome {
            status: status.as_u16(),
            method: &self.method,
            duration,
            upstream: self.tally.upstream_at.map(|at| duration.saturating_sub(at)),
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        });
        if let Some(l) = self.logged.take() {
            self.proxy.config.access_log.write(&Entry {
                client: l.client.unwrap_or(self.conn.client.ip()),
                method: &self.method,
                host: &l.host,
                path: &l.path,
                version: l.version,
                status,
                upstream: l.upstream.as_deref(),
                backend: l.backend.as_deref(),
                duration,
                request_id: self.request_id.to_str().unwrap_or("-"),
            });
        }
    }
}

/// The host a request is for: the URI authority (HTTP/2 `:authority`, HTTP/1.1 absolute-form),
/// else the Host header.
fn request_host(req: &Request<ClientBody>) -> &str {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// The host as a header value: a cheap clone of the Host header, or a copy of the URI authority
/// for HTTP/2 and absolute-form requests.
fn host_value(req: &Request<ClientBody>) -> Result<HeaderValue, ProxyError> {
    Ok(match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest("host"))?,
        None => req
            .headers()
            .get(header::HOST)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("")),
    })
}

/// The request body's length, when known: from the stream's end or its `Content-Length`.
fn content_length(req: &Request<ClientBody>) -> Option<u64> {
    req.body().size_hint().exact().or_else(|| {
        req.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    })
}

/// What the counters need to know of a request's exchange.
struct Tally {
    /// When the request arrived.
    start: Instant,
    /// The matched route's counters (`None`: no route).
    counters: Option<Arc<crate::stats::RouteCounters>>,
    /// When the request went upstream, after the start.
    upstream_at: Option<std::time::Duration>,
    /// The request's place under a concurrency limit.
    guard: Option<crate::ratelimit::Guard>,
}

/// A response Portcullis makes itself, as an `http` response.
pub(crate) fn local_to_response(local: &Local) -> Response<ResBody> {
    let mut response = local_response(local.status);
    if !local.body {
        *response.body_mut() = Either::Right(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        headers.remove(header::CONTENT_LENGTH);
    }
    for (name, value) in &local.headers {
        if name == header::SET_COOKIE {
            response.headers_mut().append(name.clone(), value.clone());
        } else {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

async fn forward(
    proxy: &Proxy,
    conn: &ConnInfo,
    req: Request<ClientBody>,
    request_id: &HeaderValue,
    logged: Option<&mut Logged>,
    tally: &mut Tally,
) -> Result<Response<ResBody>, ProxyError> {
    let start = tally.start;
    let host = host_value(&req)?;
    let host_str = host.to_str().map_err(|_| ProxyError::BadRequest("host"))?;
    let client = conn.client_of(&proxy.config, req.headers());
    let mut logged = logged;
    if let Some(l) = logged.as_mut() {
        l.client = (client != conn.client.ip()).then_some(client);
    }
    let view = View {
        https: conn.https_of(req.headers()),
        client,
        method: req.method(),
        host: host_str,
        path: req.uri().path(),
        query: req.uri().query(),
        content_length: content_length(&req),
        headers: req.headers(),
    };
    let (decision, counters) = proxy.decide(&view);
    tally.counters = counters;
    let mut fwd = match decision? {
        Decision::Local(local) => return Ok(local_to_response(&local)),
        Decision::Forward(fwd) => fwd,
    };
    // Held until the response body ends or the stream is reset, with the request's record.
    tally.guard = fwd.guard.take();
    // The address forwarded headers named, as a header value (none when it is the
    // connection's own).
    let real_ip = (client != conn.client.ip())
        .then(|| HeaderValue::from_str(&client.to_string()).ok())
        .flatten();
    if let Some(l) = logged {
        l.backend = Some(fwd.backend.name.clone());
        l.upstream = Some(fwd.target.to_string());
    }
    if fwd.needs_admission() {
        // Boxed: the admission's state stays out of every request's future.
        if let Err(local) = Box::pin(proxy.admit(&view, &mut fwd)).await {
            return Ok(local_to_response(&local));
        }
    }

    let h2 = fwd.protocol().is_h2();

    let (parts, body) = req.into_parts();
    let limits = fwd.limits(proxy);
    let edits = Edits {
        conn,
        fwd: &fwd,
        real_ip: real_ip.as_ref(),
        request_id,
        host: &host,
    };
    let (outgoing, exceeded) = edits.outgoing(parts, body, h2, &limits)?;

    tally.upstream_at = Some(start.elapsed());
    let exchange = send(proxy, &fwd, outgoing, h2, &limits);
    let too_large = || exceeded.as_ref().is_some_and(|e| e.load(Ordering::Relaxed));
    let mut response = match tokio::time::timeout(limits.read, exchange).await {
        Err(_) => return Err(ProxyError::Timeout(fwd.target.to_string())),
        Ok(Err(_)) if too_large() => return Err(ProxyError::PayloadTooLarge),
        Ok(result) => result?,
    };

    headers::strip_hop_by_hop(response.headers_mut());
    let status = response.status().as_u16();
    response_fields(&fwd, response.headers_mut(), status);
    Ok(response.map(Either::Left))
}

/// The response fields the decision adds: the policy's, the authentication service's cookies,
/// and `Server` when the upstream sent none.
fn response_fields(fwd: &Forward, headers: &mut http::HeaderMap, status: u16) {
    if fwd.has_response_fields() {
        for (name, value) in fwd.response_fields() {
            headers.insert(name, value);
        }
    }
    if let Some(granted) = fwd.granted() {
        for cookie in granted.cookies_for(status) {
            headers.append(header::SET_COOKIE, cookie.clone());
        }
    }
    headers.entry(header::SERVER).or_insert(SERVER);
}

/// The upstream request fields of an admitted request: what the client must not set removed,
/// what the authentication service's answer names set.
fn admitted_fields(fwd: &Forward, headers: &mut http::HeaderMap) {
    let stripped: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| fwd.strips(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in stripped {
        headers.remove(name);
    }
    for (name, value) in fwd.granted_fields() {
        headers.insert(name.clone(), value.clone());
    }
}

/// The request target sent upstream: origin form for HTTP/1.1 (the host travels in `Host`),
/// absolute form for HTTP/2 (scheme and `:authority`); the path rewritten when the decision says.
fn upstream_uri(
    received: &Uri,
    fwd: &Forward,
    h2: bool,
    authority: &HeaderValue,
) -> Result<Uri, ProxyError> {
    let path = match fwd.path() {
        Some(p) => p,
        None => received.path_and_query().map_or("/", |pq| pq.as_str()),
    };
    if !h2 {
        if fwd.path().is_none() && received.scheme().is_none() && received.authority().is_none() {
            return Ok(received.clone());
        }
        return Uri::try_from(path).map_err(|_| ProxyError::BadRequest("rewritten path"));
    }
    let authority = authority
        .to_str()
        .map_err(|_| ProxyError::BadRequest("host"))?;
    let scheme = if fwd.tls { "https" } else { "http" };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::BadRequest("host"))
}

/// The origin-form target of a bodiless request written straight to an HTTP/1.1 upstream: the
/// rewritten path when the decision says, else the received path and query.
fn origin_target<'a>(received: &'a Uri, fwd: &'a Forward) -> Result<&'a str, ProxyError> {
    let target = match fwd.path() {
        Some(p) => p,
        None => received.path_and_query().map_or("/", |pq| pq.as_str()),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ProxyError::BadRequest("rewritten path"));
    }
    Ok(target)
}

/// What the upstream request is sent as.
enum Outgoing {
    /// A bodiless request to an HTTP/1.1 upstream, as the head to write (and its method), over
    /// the HTTP/1.x path's own pool.
    Raw(Vec<u8>, http::Method),
    /// A request for hyper's client: one with a body, or to an HTTP/2 upstream.
    Hyper(Box<Request<RequestBody>>),
}

/// The fields every upstream request gets: forwarding fields, the request id and the policy's.
struct Edits<'a> {
    conn: &'a ConnInfo,
    fwd: &'a Forward,
    real_ip: Option<&'a HeaderValue>,
    request_id: &'a HeaderValue,
    host: &'a HeaderValue,
}

impl Edits<'_> {
    /// The upstream request made of the client's `parts` and `body`, and the flag its body
    /// sets when it grows past the route's limit.
    fn outgoing(
        &self,
        mut parts: http::request::Parts,
        body: ClientBody,
        h2: bool,
        limits: &crate::decide::Limits,
    ) -> Result<(Outgoing, Option<Arc<AtomicBool>>), ProxyError> {
        let fwd = self.fwd;
        if !h2 {
            join_cookies(&mut parts.headers);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        if h2 {
            // gRPC needs `te: trailers` end to end; it is the one hop-by-hop field HTTP/2 allows.
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // The upstream's Host and HTTP/2 authority: the policy's, else the client's.
        let authority = fwd.upstream_host().unwrap_or(self.host);
        // A bodiless request to an HTTP/1.1 upstream is written out directly: its head is the
        // client's fields with ours set beside them, and its target needs no `Uri` of its own.
        if !h2 && body.is_end_stream() && !fwd.needs_admission() {
            let mut staged = headers::Staged::new(&parts.headers);
            self.apply(&mut staged);
            headers::Fields::set(&mut staged, header::HOST, authority.clone());
            let target = origin_target(&parts.uri, fwd)?;
            let head = crate::h1::bridge::request_head(&parts.method, target, &staged);
            return Ok((Outgoing::Raw(head, parts.method), None));
        }
        self.apply(&mut parts.headers);
        if fwd.needs_admission() {
            admitted_fields(fwd, &mut parts.headers);
        }
        parts.uri = upstream_uri(&parts.uri, fwd, h2, authority)?;
        if h2 {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        } else {
            parts.version = Version::HTTP_11;
            parts.headers.insert(header::HOST, authority.clone());
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = RequestBody::new(body, limits.body, exceeded.clone());
        let request = Request::from_parts(parts, body);
        Ok((Outgoing::Hyper(Box::new(request)), Some(exceeded)))
    }

    /// Sets the forwarding fields, the request id and the policy's request fields.
    fn apply(&self, fields: &mut impl headers::Fields) {
        headers::set_forwarded(
            fields,
            &headers::Forwarding {
                client_ip: &self.conn.client_ip,
                real_ip: self.real_ip,
                pass_on: self.conn.trusted,
            },
            self.host.clone(),
            self.conn.scheme,
            &self.conn.local_port,
        );
        fields.set(X_REQUEST_ID.clone(), self.request_id.clone());
        for (name, value) in self.fwd.request_fields() {
            if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
                fields.set(name, value.clone());
            }
        }
    }
}

/// Sends the request, moving on to another endpoint while nothing was sent and the route's
/// retry rules allow it.
async fn send(
    proxy: &Proxy,
    fwd: &Forward,
    outgoing: Outgoing,
    h2: bool,
    limits: &crate::decide::Limits,
) -> Result<Response<crate::upstream::PooledBody>, ProxyError> {
    let route = Route {
        h2,
        tls: fwd.upstream_tls(),
        backend: &fwd.backend.name,
        connect_timeout: limits.connect,
        // No phase of the exchange waits longer than this without a byte moving: the wait for
        // the response head, a silent upstream body, a client not taking the response.
        stall: limits
            .read
            .max(limits.read_idle)
            .max(limits.send)
            .max(proxy.config.body_idle_timeout),
    };
    let mut target = fwd.target.clone();
    let mut outgoing = outgoing;
    let mut attempts = Attempts::new();
    let since = fwd.measures_latency().then(Instant::now);
    // A bodiless request to an HTTP/1.1 upstream goes over the HTTP/1.x path's own pool, which
    // only borrows it; the request stays here, to be sent again should the upstream break the
    // exchange before answering (an endpoint going away under it), as the HTTP/1.x path does.
    // Anything else is handed to hyper, which takes it: a bodiless one is copied first.
    let (raw, method, mut again) = match &outgoing {
        Outgoing::Raw(_, method) => (true, method.clone(), None),
        Outgoing::Hyper(req) => (
            false,
            req.method().clone(),
            req.body()
                .is_end_stream()
                .then(|| crate::upstream::resend_copy(req)),
        ),
    };
    loop {
        let sent = match &mut outgoing {
            Outgoing::Raw(head, method) => {
                let head_request = *method == http::Method::HEAD;
                crate::h1::bridge::send(&proxy.h1_pool, fwd, &target, head, head_request, route)
                    .await
            }
            Outgoing::Hyper(req) => {
                let req = std::mem::replace(&mut **req, Request::new(RequestBody::empty()));
                proxy.pool.send(target.clone(), req, route).await
            }
        };
        match sent {
            Ok(mut response) => {
                fwd.answered(proxy, &target, response.status().as_u16(), since);
                if let Some(cookie) = fwd.set_cookie(&target) {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                return Ok(response);
            }
            Err(SendError::NotSent(source, unsent)) => {
                let why = match source {
                    UpstreamError::ConnectTimeout => Failed::ConnectTimeout,
                    _ => Failed::Connect,
                };
                match attempts.next(proxy, fwd, &target, why, &method, false) {
                    Some(next) => {
                        tracing::debug!(%source, failed = %target, %next, "trying another endpoint");
                        target = next;
                        if let Some(unsent) = unsent {
                            outgoing = Outgoing::Hyper(unsent);
                        }
                    }
                    None => {
                        return Err(ProxyError::Upstream {
                            addr: target.to_string(),
                            source,
                        })
                    }
                }
            }
            Err(SendError::Failed(source)) => {
                let next = if raw || again.is_some() {
                    attempts.next(proxy, fwd, &target, Failed::Broken, &method, true)
                } else {
                    if let crate::upstream::Target::Addr(addr) = target {
                        proxy.health.failure(&fwd.backend.name, addr);
                    }
                    None
                };
                let Some(next) = next else {
                    return Err(ProxyError::Upstream {
                        addr: target.to_string(),
                        source,
                    });
                };
                tracing::debug!(%source, failed = %target, %next, "trying another endpoint");
                target = next;
                if let Some(copy) = again.take() {
                    again = Some(crate::upstream::resend_copy(&copy));
                    outgoing = Outgoing::Hyper(copy);
                }
            }
        }
    }
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3). The
/// values are joined as bytes: a cookie with bytes beyond ASCII goes through as it came.
fn join_cookies(headers: &mut http::HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, value) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}
