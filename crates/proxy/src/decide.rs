//! The one decision per request that the HTTP/1.x loop and the HTTP/2 handler both go through:
//! a request view in, either a response Portcullis answers itself or everything the exchange
//! needs (backend, endpoint, compiled policy, request and response edits, limits) out. The
//! decision is held for the whole exchange, retries included; the table is not.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use table::{
    Algorithm, Backend, BackendTarget, Lookup, Policy, Protocol, Retry, RetryOn, Route, Table,
    UpstreamTls,
};

use crate::balance::{self, Latencies};
use crate::health::Health;
use crate::ratelimit::{Guard, Limiter, Verdict};
use crate::stats::RouteCounters;

use crate::upstream::Target;
use crate::{Proxy, ProxyError};

/// What the decision reads of a request, whatever its protocol.
pub(crate) struct View<'a> {
    /// Whether the client connection is TLS.
    pub(crate) https: bool,
    /// The client's address: the connection's, or the one trusted forwarded headers name.
    pub(crate) client: std::net::IpAddr,
    /// The request method.
    pub(crate) method: &'a Method,
    /// The host as received (Host header or `:authority`, port included).
    pub(crate) host: &'a str,
    /// The path as received, without the query.
    pub(crate) path: &'a str,
    /// The query without its `?`, if there is one.
    pub(crate) query: Option<&'a str>,
    /// The declared body length, if the request has one.
    pub(crate) content_length: Option<u64>,
    /// The request's header fields, read only when a policy needs one.
    pub(crate) headers: &'a dyn RequestHeaders,
}

/// Header lookup by lower-case name, over either protocol's representation.
pub(crate) trait RequestHeaders: Sync {
    /// The value of the first field named `name`.
    fn get(&self, name: &str) -> Option<&[u8]>;

    /// Calls `f` with the value of every field named `name`, in order.
    fn values<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8]));

    /// The value of the cookie `name` (in the first `Cookie` field).
    fn cookie(&self, name: &str) -> Option<&[u8]> {
        crate::balance::find_cookie(self.get("cookie")?, name)
    }

    /// Calls `f` with the name and value of every field, in order (for an authentication
    /// sub-request, which carries them).
    fn each(&self, f: &mut dyn FnMut(&[u8], &[u8]));
}

impl RequestHeaders for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&[u8]> {
        http::HeaderMap::get(self, name).map(HeaderValue::as_bytes)
    }

    fn values<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for v in self.get_all(name) {
            f(v.as_bytes());
        }
    }

    /// HTTP/2 clients may send every cookie in a field of its own.
    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.get_all(header::COOKIE)
            .iter()
            .find_map(|v| crate::balance::find_cookie(v.as_bytes(), name))
    }

    fn each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (name, value) in self {
            f(name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// A response Portcullis makes itself instead of forwarding.
#[derive(Debug)]
pub(crate) struct Local {
    /// The status.
    pub(crate) status: StatusCode,
    /// Fields beyond `Server`, `Date`, `Content-Type` and `Content-Length` (`Location`, CORS).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the small standard body (`<code> <reason>`) is sent; `false` sends none.
    pub(crate) body: bool,
}

impl Local {
    /// A response with the standard body and no extra fields.
    pub(crate) fn status(status: StatusCode) -> Self {
        Local {
            status,
            headers: Vec::new(),
            body: true,
        }
    }

    /// A redirect to `location`.
    pub(crate) fn redirect(status: StatusCode, location: &str) -> Self {
        let mut local = Local::status(status);
        if let Ok(v) = HeaderValue::from_str(location) {
            local.headers.push((header::LOCATION, v));
        }
        local
    }
}

/// What the exchange of a forwarded request needs.
pub(crate) struct Forward {
    /// The backend that serves it (kept for retries on other endpoints).
    pub(crate) backend: Arc<Backend>,
    /// The endpoint picked first.
    pub(crate) target: Target,
    /// The route's compiled policy, if its Ingress has annotations.
    pub(crate) rules: Option<Arc<Policy>>,
    /// What this request's policy changes beyond fixed fields; `None` (no allocation) when
    /// nothing.
    pub(crate) edits: Option<Box<Edits>>,
    /// Whether the upstream connection is TLS.
    pub(crate) tls: bool,
    /// The request's place under its route's concurrency limit, held for the exchange.
    pub(crate) guard: Option<Guard>,
}

/// The parts of a decision that depend on the request itself.
#[derive(Debug, Default)]
pub(crate) struct Edits {
    /// The request target sent upstream when the path is rewritten (path and query).
    pub(crate) path: Option<String>,
    /// `Access-Control-Allow-Origin` for the response, when CORS applies.
    pub(crate) cors_origin: Option<HeaderValue>,
    /// What authentication granted (`auth-url`).
    pub(crate) auth: Option<crate::auth::Granted>,
    /// Session affinity by cookie, when the route has it.
    pub(crate) sticky: Option<Sticky>,
}

/// What the response needs to keep a client's session on its endpoint.
#[derive(Debug)]
pub(crate) struct Sticky {
    /// The cookie naming the endpoint picked first, when the request had no usable one.
    cookie: Option<HeaderValue>,
    /// The cookie's path when the policy names none: the route's.
    path: String,
    /// Whether the client is a browser that mishandles `SameSite=None`.
    legacy_agent: bool,
    /// The route's canary, when it serves the request (its affinity settings then apply).
    canary: Option<Arc<table::Canary>>,
}

/// Timeouts, body limit and retry rules of one exchange: the route's policy over the proxy's
/// defaults, read in this one place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connecting to an endpoint.
    pub(crate) connect: Duration,
    /// Waiting for the response head.
    pub(crate) read: Duration,
    /// Between reads of the response body.
    pub(crate) read_idle: Duration,
    /// Between writes of the request body to the upstream.
    pub(crate) send: Duration,
    /// Largest request body in bytes; 0 = unlimited.
    pub(crate) body: u64,
    /// When to try another endpoint.
    pub(crate) retry: Retry,
}

/// The decision for one request.
pub(crate) enum Decision {
    /// Answered by Portcullis.
    Local(Local),
    /// Sent upstream.
    Forward(Forward),
}

impl Limits {
    /// The proxy-wide limits, for routes whose policy sets none.
    pub(crate) fn defaults(config: &crate::ProxyConfig) -> Limits {
        Limits {
            connect: config.connect_timeout,
            read: config.response_header_timeout,
            read_idle: config.body_idle_timeout,
            send: config.body_idle_timeout,
            body: config.max_body_size,
            retry: Retry::DEFAULT,
        }
    }
}

impl Proxy {
    /// Decides what happens to a request. Errors become the one error → response mapping. Also
    /// returns the counters of the matched route (`None`: no route matched).
    pub(crate) fn decide(
        &self,
        view: &View<'_>,
    ) -> (Result<Decision, ProxyError>, Option<Arc<RouteCounters>>) {
        let table = self.published.load();
        let mut matched = None;
        let state = State {
            health: Some(&self.health),
            latencies: &self.latencies,
            limiter: Some(&self.limiter),
        };
        let decision = decide_in(&table, &self.config, state, view, &mut matched);
        let counters = matched.map(|route| self.stats.route(&table, route));
        (decision, counters)
    }

    /// The limits of a route with policy `p`.
    fn limits_of(&self, p: &Policy) -> Limits {
        limits_of(&self.limits, p)
    }
}

/// The limits of a route with policy `p` over the defaults `d`.
fn limits_of(d: &Limits, p: &Policy) -> Limits {
    Limits {
        connect: p.timeouts.connect.unwrap_or(d.connect),
        read: p.timeouts.read.unwrap_or(d.read),
        read_idle: p.timeouts.read.unwrap_or(d.read_idle),
        send: p.timeouts.send.unwrap_or(d.send),
        body: p.body_limit.unwrap_or(d.body),
        retry: p.retry.unwrap_or(d.retry),
    }
}

/// The proxy's state a decision reads: endpoint health, response-time averages and the
/// per-client limits (`None`: every endpoint usable, no limits counted).
#[derive(Clone, Copy)]
pub(crate) struct State<'a> {
    pub(crate) health: Option<&'a Health>,
    pub(crate) latencies: &'a Latencies,
    pub(crate) limiter: Option<&'a Limiter>,
}

/// The decision for a request against one table, as [`Proxy::decide`] makes it; endpoints
/// `state.health` finds unusable are avoided. The matched route, if any, is left in `matched`.
pub(crate) fn decide_in<'t>(
    table: &'t Table,
    config: &crate::ProxyConfig,
    state: State<'_>,
    view: &View<'_>,
    matched: &mut Option<&'t Arc<Route>>,
) -> Result<Decision, ProxyError> {
    let (health, latencies) = (state.health, state.latencies);
    // Routed (and forwarded) by its dot segments resolved; see `table::normalize_path`.
    let routed =
        table::normalize_path(view.path).map_err(|e| ProxyError::BadRequest(e.reason()))?;
    let found = match table.resolve(view.host, &routed) {
        Lookup::NotFound => return Err(ProxyError::NoRoute),
        Lookup::RedirectHost(to) => {
            let location = format!(
                "{}://{to}{}",
                if view.https { "https" } else { "http" },
                request_target(view)
            );
            return Ok(Decision::Local(Local::redirect(
                StatusCode::PERMANENT_REDIRECT,
                &location,
            )));
        }
        Lookup::AppRoot(root) => {
            let location = format!(
                "{}://{}{root}",
                if view.https { "https" } else { "http" },
                view.host
            );
            return Ok(Decision::Local(Local::redirect(
                StatusCode::FOUND,
                &location,
            )));
        }
        Lookup::Route(found) => found,
    };
    let route = found.route;
    *matched = Some(route);
    let rules = route.policy.rules.as_ref();
    let mut cors_origin = None;
    if let Some(p) = rules {
        if let Some(why) = &p.denied {
            return Err(ProxyError::Denied(why.clone()));
        }
        if let Some(cors) = &p.cors {
            cors_origin = cors.allow_origin(view.headers.get("origin"));
            if let Some(origin) = &cors_origin {
                if view.method == Method::OPTIONS {
                    return Ok(Decision::Local(preflight(cors, origin.clone())));
                }
            }
        }
        if let Some(redirect) = &p.redirect {
            let status =
                StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return Ok(Decision::Local(Local::redirect(status, &redirect.location)));
        }
    }
    if route.policy.https_redirect && !view.https {
        let location =
            redirect_location(view.host, request_target(view), config.https_redirect_port);
        return Ok(Decision::Local(Local::redirect(
            StatusCode::PERMANENT_REDIRECT,
            &location,
        )));
    }
    // Limits, then source lists, are checked after redirects, as nginx's preaccess and access
    // phases come after its rewrite phase.
    let guard = match rules {
        Some(p) => match access(p, state, config, view.client)? {
            Ok(guard) => guard,
            Err(refused) => return Ok(Decision::Local(refused)),
        },
        None => None,
    };
    let body_limit = rules
        .and_then(|p| p.body_limit)
        .unwrap_or(config.max_body_size);
    if body_limit > 0 && view.content_length.is_some_and(|n| n > body_limit) {
        return Err(ProxyError::PayloadTooLarge);
    }
    let (serving, balance, canary) = crate::canary::serving(route, rules.map(|p| &**p), view);
    let mut backend = table.backends[serving.0].clone();
    if let Some(fallback) = route.policy.fallback {
        if !has_ready(&backend) {
            backend = table.backends[fallback.0].clone();
        }
    }
    let (target, sticky) = match balance {
        Some(b) if matches!(backend.target, BackendTarget::Endpoints { .. }) => {
            choose(b, &backend, health, latencies, view, route, canary)?
        }
        _ => (pick(&backend, health)?, None),
    };
    let path = rules.and_then(|p| {
        let rewrite = p.rewrite.as_ref()?;
        if rewrite.written == route.origin.path {
            return None;
        }
        let captures = found.pattern.and_then(|re| re.captures(&routed));
        Some(rewrite.apply(captures.as_ref(), view.query))
    });
    let path = path.or_else(|| match &routed {
        Cow::Owned(resolved) => Some(with_query(resolved, view.query)),
        Cow::Borrowed(_) => None,
    });
    let protocol = rules.map_or(Protocol::Http, |p| p.protocol);
    let edits = (path.is_some() || cors_origin.is_some() || sticky.is_some()).then(|| {
        Box::new(Edits {
            path,
            cors_origin,
            sticky,
            auth: None,
        })
    });
    Ok(Decision::Forward(Forward {
        backend,
        target,
        rules: rules.cloned(),
        edits,
        tls: protocol.is_tls(view.https),
        guard,
    }))
}

/// The limits and source lists of a route with a policy: `Ok(Err(answer))` refuses the request
/// with a limit's status, `Err` with 403.
#[inline(never)]
fn access(
    p: &Policy,
    state: State<'_>,
    config: &crate::ProxyConfig,
    client: std::net::IpAddr,
) -> Result<Result<Option<crate::ratelimit::Guard>, Local>, ProxyError> {
    let guard = match &p.rate_limit {
        Some(limit) => match admit(limit, state, config, client) {
            Ok(guard) => guard,
            Err(refused) => return Ok(Err(refused)),
        },
        None => None,
    };
    if let Some(source) = &p.source {
        // `satisfy: any` leaves a refused address to authentication (see `Proxy::admit`).
        let satisfy_any = p.auth.as_ref().is_some_and(|a| a.satisfy_any);
        if !source.admits(client) && !satisfy_any {
            return Err(ProxyError::Forbidden);
        }
    }
    Ok(Ok(guard))
}

/// The endpoint of a route whose policy balances by affinity, hash or latency, and what its
/// response needs for affinity.
#[inline(never)]
fn choose(
    b: &table::Balance,
    backend: &Backend,
    health: Option<&Health>,
    latencies: &Latencies,
    view: &View<'_>,
    route: &Route,
    canary: Option<&Arc<table::Canary>>,
) -> Result<(Target, Option<Sticky>), ProxyError> {
    let usable = usable(backend, health);
    let choice = balance::choose(b, backend, &usable, view, &route.origin.path, latencies)
        .ok_or_else(|| ProxyError::NoEndpoint(backend.name.clone()))?;
    let sticky = b.affinity.as_ref().map(|a| Sticky {
        cookie: choice.cookie,
        path: route.origin.path.clone(),
        legacy_agent: a.conditional_same_site_none
            && view
                .headers
                .get("user-agent")
                .is_some_and(balance::mishandles_same_site_none),
        canary: canary.cloned(),
    });
    Ok((Target::Addr(choice.addr), sticky))
}

/// A request from `client` under `limit`: admitted (holding its place under a concurrency
/// limit, if there is one) or refused with the configured status.
fn admit(
    limit: &table::RateLimit,
    state: State<'_>,
    config: &crate::ProxyConfig,
    client: std::net::IpAddr,
) -> Result<Option<Guard>, Local> {
    let Some(limiter) = state.limiter else {
        return Ok(None);
    };
    match limiter.check(limit, client) {
        Verdict::Pass(guard) => Ok(guard),
        Verdict::Rate => Err(Local::status(config.limit_req_status)),
        Verdict::Busy => Err(Local::status(config.limit_conn_status)),
    }
}

/// The path and query of a request as received.
fn request_target(view: &View<'_>) -> String {
    with_query(view.path, view.query)
}

/// `path` followed by `query`, if there is one.
fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// The answer to a CORS preflight from an allowed origin (ingress-nginx answers every OPTIONS
/// request of such an origin itself).
fn preflight(cors: &table::Cors, origin: HeaderValue) -> Local {
    let mut headers = cors.headers(origin);
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain charset=UTF-8"),
    ));
    Local {
        status: StatusCode::NO_CONTENT,
        headers,
        body: false,
    }
}

fn has_ready(backend: &Backend) -> bool {
    match &backend.target {
        BackendTarget::Endpoints { ready, .. } => !ready.is_empty(),
        BackendTarget::ExternalName { .. } => true,
        BackendTarget::Unavailable { .. } => false,
    }
}

/// The first endpoint for a request to `backend`.
fn pick(backend: &Backend, health: Option<&Health>) -> Result<Target, ProxyError> {
    match &backend.target {
        BackendTarget::Endpoints { .. } => pick_endpoint(backend, health, &[])
            .map(Target::Addr)
            .ok_or_else(|| ProxyError::NoEndpoint(backend.name.clone())),
        BackendTarget::ExternalName { host, port } => Ok(Target::Name(host.as_str().into(), *port)),
        BackendTarget::Unavailable { .. } => Err(ProxyError::NoEndpoint(backend.name.clone())),
    }
}

/// The ready endpoints of `backend` that `health` finds unusable — none when more than half
/// would be (a backend's every endpoint is never shut out: then health is ignored, as Envoy's
/// panic threshold does).
fn unusable(backend: &Backend, health: Option<&Health>) -> Vec<SocketAddr> {
    let Some(health) = health.filter(|h| h.any_trouble()) else {
        return Vec::new();
    };
    let ready = backend.ready();
    let out: Vec<SocketAddr> = ready
        .iter()
        .filter(|a| !health.usable(&backend.name, **a))
        .copied()
        .collect();
    if out.len() * 2 > ready.len() {
        return Vec::new();
    }
    out
}

/// The ready endpoints of `backend` a request may go to, as [`unusable`] judges them.
fn usable(backend: &Backend, health: Option<&Health>) -> Vec<SocketAddr> {
    let out = unusable(backend, health);
    backend
        .ready()
        .iter()
        .filter(|a| !out.contains(a))
        .copied()
        .collect()
}

/// The next ready endpoint of `backend` in round-robin order, not among `failed`, avoiding the
/// endpoints `health` finds unusable (see [`unusable`]).
fn pick_endpoint(
    backend: &Backend,
    health: Option<&Health>,
    failed: &[SocketAddr],
) -> Option<SocketAddr> {
    if !health.is_some_and(|h| h.any_trouble()) {
        return if failed.is_empty() {
            backend.pick()
        } else {
            backend.pick_excluding(failed)
        };
    }
    let mut exclude = unusable(backend, health);
    exclude.extend_from_slice(failed);
    backend
        .pick_excluding(&exclude)
        .or_else(|| backend.pick_excluding(failed))
}

/// The HTTPS URL for `host` (its port dropped) and `target` (path and query), naming `port`
/// unless it is the default.
pub(crate) fn redirect_location(host: &str, target: String, port: Option<u16>) -> String {
    let name = strip_port(host);
    match port {
        Some(p) if p != 443 => format!("https://{name}:{p}{target}"),
        _ => format!("https://{name}{target}"),
    }
}

/// A host without its `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Why an attempt at an endpoint failed, for deciding whether to try another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// No connection could be made: nothing was sent.
    Connect,
    /// Connecting took longer than the connect timeout: nothing was sent.
    ConnectTimeout,
    /// The connection broke before a response head.
    Broken,
    /// No response head within the read timeout.
    Timeout,
    /// The response head was invalid.
    Invalid,
    /// The upstream answered with this status.
    Status(u16),
}

/// The attempts of one exchange: which endpoints failed, and whether another may be tried.
pub(crate) struct Attempts {
    failed: Vec<SocketAddr>,
    /// When the first attempt failed (the retry budget runs from there; reading the clock for
    /// every request that never fails would cost them all).
    first_failure: Option<Instant>,
    count: u32,
}

impl Attempts {
    pub(crate) fn new() -> Self {
        Attempts {
            failed: Vec::new(),
            first_failure: None,
            count: 1,
        }
    }

    /// After `target` failed with `why`: the endpoint to try next, if the retry rules allow one.
    /// `resendable` says whether the whole request can be sent again (nothing of it was lost
    /// with the failed attempt).
    pub(crate) fn next(
        &mut self,
        proxy: &Proxy,
        forward: &Forward,
        target: &Target,
        why: Failed,
        method: &Method,
        resendable: bool,
    ) -> Option<Target> {
        if let Target::Addr(addr) = target {
            if !matches!(why, Failed::Status(_)) {
                proxy.health.failure(&forward.backend.name, *addr);
            }
        }
        if matches!(why, Failed::Connect | Failed::ConnectTimeout) {
            proxy
                .stats
                .backend(&forward.backend.name)
                .connect_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let retry = forward
            .rules
            .as_ref()
            .and_then(|p| p.retry)
            .unwrap_or_default();
        let condition = match why {
            Failed::Connect | Failed::Broken => retry.has(RetryOn::Error),
            Failed::ConnectTimeout | Failed::Timeout => retry.has(RetryOn::Timeout),
            Failed::Invalid => retry.has(RetryOn::InvalidHeader),
            Failed::Status(status) => retry.on_status(status),
        };
        let nothing_sent = matches!(why, Failed::Connect | Failed::ConnectTimeout);
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        ) || retry.has(RetryOn::NonIdempotent);
        if !condition || !(nothing_sent || (resendable && idempotent)) {
            return None;
        }
        if retry.tries > 0 && self.count >= retry.tries {
            return None;
        }
        let first = *self.first_failure.get_or_insert_with(Instant::now);
        if retry.timeout.is_some_and(|t| first.elapsed() >= t) {
            return None;
        }
        if let Target::Addr(addr) = target {
            self.failed.push(*addr);
        }
        let next = if forward.measures_latency() {
            let mut usable = usable(&forward.backend, Some(&proxy.health));
            usable.retain(|a| !self.failed.contains(a));
            proxy.latencies.pick(&usable)
        } else {
            None
        };
        let next =
            next.or_else(|| pick_endpoint(&forward.backend, Some(&proxy.health), &self.failed))?;
        self.count += 1;
        proxy
            .stats
            .backend(&forward.backend.name)
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Target::Addr(next))
    }
}

impl Forward {
    /// Records how the upstream answered: a 5xx counts against the endpoint's health; for an
    /// EWMA route, the time since `since` (the attempt's start) goes into its average.
    pub(crate) fn answered(
        &self,
        proxy: &Proxy,
        target: &Target,
        status: u16,
        since: Option<Instant>,
    ) {
        if let Target::Addr(addr) = target {
            if let Some(at) = since {
                proxy.latencies.record(*addr, at.elapsed());
            }
            if status >= 500 {
                proxy.health.failure(&self.backend.name, *addr);
            } else {
                proxy.health.success(&self.backend.name, *addr);
            }
        }
    }

    /// Whether the route balances by response time (so attempts are timed).
    pub(crate) fn measures_latency(&self) -> bool {
        self.rules
            .as_ref()
            .and_then(|p| p.balance.as_ref())
            .is_some_and(|b| {
                b.algorithm == Algorithm::Ewma && b.hash_by.is_none() && b.affinity.is_none()
            })
    }

    /// The affinity cookie to set on the response from `target`: the one chosen with the
    /// first endpoint; after a retry, one naming the endpoint that answered when the request
    /// had no valid cookie or `session-cookie-change-on-failure` is set.
    pub(crate) fn set_cookie(&self, target: &Target) -> Option<HeaderValue> {
        let sticky = self.edits.as_ref()?.sticky.as_ref()?;
        if *target == self.target {
            return sticky.cookie.clone();
        }
        let balance = match &sticky.canary {
            Some(canary) => canary.balance.as_ref(),
            None => self.rules.as_ref()?.balance.as_ref(),
        };
        let affinity = balance?.affinity.as_ref()?;
        let Target::Addr(addr) = target else {
            return None;
        };
        if sticky.cookie.is_none() && !affinity.change_on_failure {
            return None;
        }
        balance::cookie_for(
            affinity,
            &self.backend,
            *addr,
            &sticky.path,
            sticky.legacy_agent,
        )
    }

    /// Timeouts, body limit and retry rules: the route's policy over the proxy's defaults.
    pub(crate) fn limits(&self, proxy: &Proxy) -> Limits {
        match &self.rules {
            None => proxy.limits,
            Some(p) => proxy.limits_of(p),
        }
    }

    /// The TLS configuration towards the upstream, when the connection is TLS.
    pub(crate) fn upstream_tls(&self) -> Option<&UpstreamTls> {
        if !self.tls {
            return None;
        }
        self.rules.as_ref()?.upstream_tls.as_ref()
    }

    /// The protocol spoken to the upstream.
    pub(crate) fn protocol(&self) -> Protocol {
        self.rules.as_ref().map_or(Protocol::Http, |p| p.protocol)
    }

    /// The `Host` header sent upstream instead of the client's (`upstream-vhost`).
    pub(crate) fn upstream_host(&self) -> Option<&HeaderValue> {
        self.rules.as_ref()?.upstream_host.as_ref()
    }

    /// The rewritten request target (path and query), when the path is rewritten.
    pub(crate) fn path(&self) -> Option<&str> {
        self.edits.as_ref()?.path.as_deref()
    }

    fn cors_origin(&self) -> Option<&HeaderValue> {
        self.edits.as_ref()?.cors_origin.as_ref()
    }

    /// Request fields the policy adds (`X-Forwarded-Prefix` with a rewrite).
    pub(crate) fn request_fields(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        let prefix = self
            .path()
            .and(self.rules.as_ref())
            .and_then(|p| p.x_forwarded_prefix.as_ref());
        prefix.map(|v| ("X-Forwarded-Prefix", v)).into_iter()
    }

    /// Whether the policy sets response fields (so writers check upstream fields against them).
    pub(crate) fn has_response_fields(&self) -> bool {
        self.cors_origin().is_some()
            || self
                .rules
                .as_ref()
                .is_some_and(|p| !p.response_headers.is_empty())
    }

    /// Response fields the policy sets, replacing upstream fields of the same name
    /// (`custom-headers`, then CORS).
    pub(crate) fn response_fields(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if let Some(p) = &self.rules {
            out.extend(p.response_headers.iter().cloned());
            if let (Some(cors), Some(origin)) = (&p.cors, self.cors_origin()) {
                out.extend(cors.headers(origin.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_path_and_query_and_drop_the_port() {
        assert_eq!(
            redirect_location("Example.com:8080", "/a//b?x=1&y".into(), None),
            "https://Example.com/a//b?x=1&y"
        );
        assert_eq!(
            redirect_location("[::1]:8080", "/a".into(), Some(8443)),
            "https://[::1]:8443/a"
        );
        assert_eq!(strip_port("plain"), "plain");
    }
}
