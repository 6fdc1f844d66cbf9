//! Per-route behaviour compiled from an Ingress's annotations: typed values, built once by
//! `translate` and shared (behind an `Arc`) by every route of that Ingress and by every table that
//! keeps the Ingress unchanged. The proxy reads it in one place per request; a route without
//! annotations has none and pays nothing for it.

pub mod auth;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Serialize, Serializer};

/// What an Ingress's annotations ask of its routes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `rewrite-target`: the path sent upstream, built from the route's regex captures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteTarget>,
    /// `x-forwarded-prefix`: sent upstream as `X-Forwarded-Prefix` when the path is rewritten.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_header_value"
    )]
    pub x_forwarded_prefix: Option<HeaderValue>,
    /// `app-root`: requests for `/` on the route's host are redirected here (302).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    /// `from-to-www-redirect`: the `www.` twin of the route's host (or the host without `www.`)
    /// redirects to it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_to_www: bool,
    /// `permanent-redirect` / `temporal-redirect`: answered by Portcullis, never forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// `enable-cors` and its options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// `upstream-vhost`: the `Host` header sent upstream.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_header_value"
    )]
    pub upstream_host: Option<HeaderValue>,
    /// `backend-protocol`.
    #[serde(skip_serializing_if = "Protocol::is_default")]
    pub protocol: Protocol,
    /// TLS towards the upstream (`backend-protocol: HTTPS`/`GRPCS` and the `proxy-ssl-*` options).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTls>,
    /// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout`.
    #[serde(skip_serializing_if = "Timeouts::is_default")]
    pub timeouts: Timeouts,
    /// `proxy-next-upstream`, `-tries`, `-timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// `proxy-body-size` in bytes; `Some(0)` means unlimited, `None` the controller default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_limit: Option<u64>,
    /// `custom-headers`: response headers set on every response (replacing the upstream's).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "header_pairs")]
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// `allowlist-source-range` / `whitelist-source-range` and `denylist-source-range`: who may
    /// use the route at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRanges>,
    /// `portcullis.io/health-check-*`: active HTTP checks of every endpoint of the route's
    /// backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// `affinity`, `upstream-hash-by`, `load-balance`: how endpoints are chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<crate::Balance>,
    /// `auth-type`/`auth-secret`, `auth-url` and `satisfy`: who may use the route, checked
    /// after the source lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<auth::Auth>,
    /// Why the route is answered with 503 instead of being served (an annotation that could not
    /// be honoured and must not be ignored, such as `custom-headers` naming a missing ConfigMap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
    /// `limit-rps`, `limit-rpm`, `limit-connections`, `limit-burst-multiplier` and
    /// `limit-allowlist` / `limit-whitelist`: per-client limits (the state lives in the proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Per-client-address limits of an Ingress's routes, as ingress-nginx's `limit_req` (`nodelay`)
/// and `limit_conn`: what a client sends beyond the rate and its burst is refused at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RateLimit {
    /// Whose limits these are (`namespace/name` of the Ingress): every route of the Ingress
    /// shares one count per client, as ingress-nginx's zones do.
    pub zone: String,
    /// Requests per second (`limit-rps`); `None`: no such limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    /// Requests per minute (`limit-rpm`); `None`: no such limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Requests in flight at once (`limit-connections`); `None`: no such limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Requests beyond the rate a client may send at once: the rate times this
    /// (`limit-burst-multiplier`, default 5).
    pub burst_multiplier: u32,
    /// Networks exempt from the limits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<crate::Cidr>,
}

impl RateLimit {
    /// Whether a client at `ip` is exempt from the limits.
    pub fn exempts(&self, ip: std::net::IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(ip))
    }
}

/// The protocol spoken to the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// gRPC: HTTP/2 over TCP (prior knowledge).
    Grpc,
    /// gRPC over TLS (ALPN `h2`).
    Grpcs,
    /// HTTP/2 over TCP for any HTTP/2 upstream (a Portcullis extension).
    H2c,
    /// HTTPS when the client came over HTTPS, else HTTP (ingress-nginx's `AUTO_HTTP`).
    AutoHttp,
}

impl Protocol {
    fn is_default(&self) -> bool {
        *self == Protocol::default()
    }

    /// Whether the upstream speaks HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::Grpcs | Protocol::H2c)
    }

    /// Whether the upstream connection is TLS, for a client that came over HTTPS or not.
    pub fn is_tls(self, client_https: bool) -> bool {
        match self {
            Protocol::Https | Protocol::Grpcs => true,
            Protocol::AutoHttp => client_https,
            Protocol::Http | Protocol::Grpc | Protocol::H2c => false,
        }
    }
}

/// A `rewrite-target` template: literal text and `$n` capture references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteTarget {
    /// The template as written.
    pub written: String,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Capture(usize),
}

impl Serialize for RewriteTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

impl RewriteTarget {
    /// Parses a template: `$1`…`$99` name capture groups; any other `$` is an error.
    pub fn parse(written: &str) -> Result<RewriteTarget, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let bytes = written.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return Err(format!(
                        "has a \"$\" at byte {i} that is not followed by a capture group number; only $1…$99 are supported (nginx variables are not)"
                    ));
                }
                if digits > 2 {
                    return Err(format!("has a capture group number at byte {i} above 99"));
                }
                let n: usize = written[i + 1..i + 1 + digits]
                    .parse()
                    .map_err(|_| format!("has a bad capture group number at byte {i}"))?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Capture(n));
                i += 1 + digits;
            } else {
                let len = written[i..].chars().next().map_or(1, char::len_utf8);
                text.push_str(&written[i..i + len]);
                i += len;
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(RewriteTarget {
            written: written.to_string(),
            pieces,
        })
    }

    /// The highest capture group the template names (0 when it names none).
    pub fn max_capture(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Capture(n) => *n,
                Piece::Text(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// The upstream request target for a request: the template with captures filled in from
    /// `captures` (missing groups are empty), then the request's query, as nginx's `rewrite …
    /// break` does (the original arguments are appended).
    pub fn apply(&self, captures: Option<&regex::Captures<'_>>, query: Option<&str>) -> String {
        let mut out = String::with_capacity(self.written.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Capture(n) => {
                    if let Some(m) = captures.and_then(|c| c.get(*n)) {
                        out.push_str(m.as_str());
                    }
                }
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// A redirect answered instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The `Location`.
    pub location: String,
    /// The status code (3xx).
    pub status: u16,
}

/// CORS answers and headers (`enable-cors`, `cors-*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// Which `Origin`s get CORS headers.
    pub origins: CorsOrigins,
    /// `Access-Control-Allow-Methods`.
    #[serde(serialize_with = "header_value")]
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`.
    #[serde(serialize_with = "header_value")]
    pub allow_headers: HeaderValue,
    /// `Access-Control-Expose-Headers`, when set.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_header_value"
    )]
    pub expose_headers: Option<HeaderValue>,
    /// Whether `Access-Control-Allow-Credentials: true` is sent.
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age: u64,
}

/// The origins CORS is enabled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorsOrigins {
    /// `*`: every request gets `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (lower-case `scheme://host[:port]`, a leading `*.` standing for one label),
    /// or `null`; a matching `Origin` is echoed back.
    List(Vec<String>),
}

/// `Access-Control-Allow-Origin`.
pub static ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
/// `Access-Control-Allow-Credentials`.
pub static ALLOW_CREDENTIALS: HeaderName =
    HeaderName::from_static("access-control-allow-credentials");
/// `Access-Control-Allow-Methods`.
pub static ALLOW_METHODS: HeaderName = HeaderName::from_static("access-control-allow-methods");
/// `Access-Control-Allow-Headers`.
pub static ALLOW_HEADERS: HeaderName = HeaderName::from_static("access-control-allow-headers");
/// `Access-Control-Expose-Headers`.
pub static EXPOSE_HEADERS: HeaderName = HeaderName::from_static("access-control-expose-headers");
/// `Access-Control-Max-Age`.
pub static MAX_AGE: HeaderName = HeaderName::from_static("access-control-max-age");

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request with this `Origin` header, or `None`
    /// when the request gets no CORS headers.
    pub fn allow_origin(&self, origin: Option<&[u8]>) -> Option<HeaderValue> {
        match &self.origins {
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List(list) => {
                let origin = origin?;
                let text = std::str::from_utf8(origin).ok()?.trim();
                let lower = text.to_ascii_lowercase();
                list.iter()
                    .any(|allowed| origin_matches(allowed, &lower))
                    .then(|| HeaderValue::from_str(text).ok())
                    .flatten()
            }
        }
    }

    /// The CORS response headers for an allowed origin, in the order nginx sends them.
    pub fn headers(&self, allow_origin: HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(6);
        out.push((ALLOW_ORIGIN.clone(), allow_origin));
        if self.allow_credentials {
            out.push((ALLOW_CREDENTIALS.clone(), HeaderValue::from_static("true")));
        }
        out.push((ALLOW_METHODS.clone(), self.allow_methods.clone()));
        out.push((ALLOW_HEADERS.clone(), self.allow_headers.clone()));
        if let Some(expose) = &self.expose_headers {
            out.push((EXPOSE_HEADERS.clone(), expose.clone()));
        }
        out.push((MAX_AGE.clone(), HeaderValue::from(self.max_age)));
        out
    }
}

/// Whether a lower-case origin matches an allowed origin pattern (`*.` = exactly one label of
/// letters, digits and `-`). The whole origin must match, not just its end.
pub fn origin_matches(allowed: &str, origin: &str) -> bool {
    match allowed.split_once("*.") {
        None => allowed == origin,
        Some((scheme, rest)) => {
            let Some(tail) = origin.strip_prefix(scheme) else {
                return false;
            };
            let Some(label) = tail.strip_suffix(rest).and_then(|l| l.strip_suffix('.')) else {
                return false;
            };
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
    }
}

/// TLS towards an upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The client configuration (roots or no verification, client certificate, ALPN).
    pub config: Arc<rustls::ClientConfig>,
    /// Whether the name is sent as SNI (`proxy-ssl-server-name`).
    pub sni: bool,
    /// The name the upstream's certificate is checked against and sent as SNI
    /// (`proxy-ssl-name`); `None`: the backend Service's DNS name (`service.namespace.svc`).
    pub name: Option<String>,
    /// Whether the certificate is verified (`proxy-ssl-verify`).
    pub verify: bool,
    /// Where the client certificate and trusted CAs came from (`proxy-ssl-secret`), if anywhere.
    pub secret: Option<String>,
    /// Identifies this configuration among pooled connections.
    pub id: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("name", &self.name)
            .field("verify", &self.verify)
            .field("secret", &self.secret)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for UpstreamTls {}

impl Serialize for UpstreamTls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::new();
        let _ = write!(
            text,
            "verify={} name={} sni={}",
            self.verify,
            self.name.as_deref().unwrap_or("(service DNS name)"),
            self.sni
        );
        if let Some(secret) = &self.secret {
            let _ = write!(text, " secret={secret}");
        }
        s.serialize_str(&text)
    }
}

/// Client address lists: an address in `deny` is refused; otherwise, when `allow` is not
/// empty, only an address in it is admitted (nginx's `deny` rules, then `allow`, then `deny all`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceRanges {
    /// Networks admitted (empty: every address not denied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<crate::Cidr>,
    /// Networks refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<crate::Cidr>,
}

impl SourceRanges {
    /// Whether a client at `ip` may use the route.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip)))
    }
}

/// Active health checks: an HTTP/1.1 `GET` of `path` to each endpoint every `interval`; an
/// endpoint is taken out after `unhealthy_threshold` failed checks in a row (no answer within
/// `timeout`, or a status other than 2xx/3xx) and back in after `healthy_threshold` good ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HealthCheck {
    /// The path (and query) requested.
    pub path: String,
    /// Time between two checks of one endpoint.
    #[serde(serialize_with = "seconds")]
    pub interval: Duration,
    /// How long a check may take.
    #[serde(serialize_with = "seconds")]
    pub timeout: Duration,
    /// Good checks in a row that bring an endpoint back.
    pub healthy_threshold: u32,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    /// Checks of `path` with the defaults: every 10 s, 2 s timeout, 2 good to come back, 3
    /// failed to go.
    pub fn new(path: impl Into<String>) -> Self {
        HealthCheck {
            path: path.into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Upstream timeouts; `None` keeps the controller's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Establishing the upstream connection.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_seconds"
    )]
    pub connect: Option<Duration>,
    /// Between two successful writes of the request to the upstream.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_seconds"
    )]
    pub send: Option<Duration>,
    /// Waiting for the response head, and between two reads of the response body.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_seconds"
    )]
    pub read: Option<Duration>,
}

impl Timeouts {
    fn is_default(&self) -> bool {
        *self == Timeouts::default()
    }
}

/// When a failed attempt is tried again on another endpoint (`proxy-next-upstream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// The conditions, as a set of [`RetryOn`] bits.
    #[serde(serialize_with = "retry_conditions")]
    pub on: u16,
    /// Attempts in all, the first included (`proxy-next-upstream-tries`; 0 = no limit beyond the
    /// number of endpoints).
    pub tries: u32,
    /// Time budget for all attempts (`proxy-next-upstream-timeout`; `None` = no limit).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_seconds"
    )]
    pub timeout: Option<Duration>,
}

/// One `proxy-next-upstream` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RetryOn {
    /// The connection could not be made or broke before a response head.
    Error = 1,
    /// Connecting or waiting for the response head timed out.
    Timeout = 2,
    /// The response head was invalid.
    InvalidHeader = 4,
    /// The upstream answered 500.
    Http500 = 8,
    /// 502.
    Http502 = 16,
    /// 503.
    Http503 = 32,
    /// 504.
    Http504 = 64,
    /// 403.
    Http403 = 128,
    /// 404.
    Http404 = 256,
    /// 429.
    Http429 = 512,
    /// Retry non-idempotent requests (POST, PATCH, …) too.
    NonIdempotent = 1024,
}

impl RetryOn {
    /// Every condition with its `proxy-next-upstream` spelling.
    pub const ALL: [(RetryOn, &'static str); 11] = [
        (RetryOn::Error, "error"),
        (RetryOn::Timeout, "timeout"),
        (RetryOn::InvalidHeader, "invalid_header"),
        (RetryOn::Http500, "http_500"),
        (RetryOn::Http502, "http_502"),
        (RetryOn::Http503, "http_503"),
        (RetryOn::Http504, "http_504"),
        (RetryOn::Http403, "http_403"),
        (RetryOn::Http404, "http_404"),
        (RetryOn::Http429, "http_429"),
        (RetryOn::NonIdempotent, "non_idempotent"),
    ];
}

impl Retry {
    /// ingress-nginx's default: `error timeout`, 3 tries, no time limit.
    pub const DEFAULT: Retry = Retry {
        on: RetryOn::Error as u16 | RetryOn::Timeout as u16,
        tries: 3,
        timeout: None,
    };

    /// Whether `condition` is among the conditions.
    pub fn has(&self, condition: RetryOn) -> bool {
        self.on & condition as u16 != 0
    }

    /// Whether an upstream answer with `status` counts as a failure to retry.
    pub fn on_status(&self, status: u16) -> bool {
        let condition = match status {
            500 => RetryOn::Http500,
            502 => RetryOn::Http502,
            503 => RetryOn::Http503,
            504 => RetryOn::Http504,
            403 => RetryOn::Http403,
            404 => RetryOn::Http404,
            429 => RetryOn::Http429,
            _ => return false,
        };
        self.has(condition)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry::DEFAULT
    }
}

fn opt_seconds<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn retry_conditions<S: Serializer>(on: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        RetryOn::ALL
            .iter()
            .filter(|(c, _)| on & *c as u16 != 0)
            .map(|(_, name)| *name),
    )
}

fn header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v.as_bytes()))
}

fn opt_header_value<S: Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => header_value(v, s),
        None => s.serialize_none(),
    }
}

fn header_pairs<S: Serializer>(v: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(v.len()))?;
    for (name, value) in v {
        map.serialize_entry(name.as_str(), &String::from_utf8_lossy(value.as_bytes()))?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_fills_captures_and_keeps_the_query() {
        let re = regex::Regex::new("(?i)^/api/?(.*)").unwrap();
        let t = RewriteTarget::parse("/$1").unwrap();
        let caps = re.captures("/api/values/all").unwrap();
        assert_eq!(t.apply(Some(&caps), None), "/values/all");
        assert_eq!(t.apply(Some(&caps), Some("x=1")), "/values/all?x=1");
        let caps = re.captures("/api").unwrap();
        assert_eq!(t.apply(Some(&caps), None), "/");
        let t = RewriteTarget::parse("/v2/$2/$1x").unwrap();
        let re = regex::Regex::new("^/(a)/(b)").unwrap();
        let caps = re.captures("/a/b").unwrap();
        assert_eq!(t.apply(Some(&caps), None), "/v2/b/ax");
        assert_eq!(t.max_capture(), 2);
        // A group the regex does not have expands to nothing.
        assert_eq!(
            RewriteTarget::parse("/$3")
                .unwrap()
                .apply(Some(&caps), None),
            "/"
        );
    }

    #[test]
    fn rewrite_rejects_variables() {
        assert!(RewriteTarget::parse("/$host").is_err());
        assert!(RewriteTarget::parse("/$").is_err());
        assert!(RewriteTarget::parse("/$123").is_err());
        assert_eq!(
            RewriteTarget::parse("static").unwrap().apply(None, None),
            "/static"
        );
    }

    #[test]
    fn origins_match_whole_and_wildcards_cover_one_label() {
        assert!(origin_matches("https://a.com", "https://a.com"));
        assert!(!origin_matches("https://a.com", "https://a.com.evil.net"));
        assert!(!origin_matches("https://a.com", "xhttps://a.com"));
        assert!(origin_matches("https://*.a.com", "https://x.a.com"));
        assert!(!origin_matches("https://*.a.com", "https://x.y.a.com"));
        assert!(!origin_matches("https://*.a.com", "https://.a.com"));
        assert!(!origin_matches("https://*.a.com", "http://x.a.com"));
        assert!(origin_matches(
            "http://*.a.com:8080",
            "http://b-1.a.com:8080"
        ));
    }

    #[test]
    fn cors_echoes_an_allowed_origin_only() {
        let cors = Cors {
            origins: CorsOrigins::List(vec!["https://app.example".into()]),
            allow_methods: HeaderValue::from_static("GET"),
            allow_headers: HeaderValue::from_static("X"),
            expose_headers: None,
            allow_credentials: true,
            max_age: 5,
        };
        assert_eq!(
            cors.allow_origin(Some(b"https://APP.example")).unwrap(),
            "https://APP.example"
        );
        assert!(cors.allow_origin(Some(b"https://other")).is_none());
        assert!(cors.allow_origin(None).is_none());
        let names: Vec<String> = cors
            .headers(HeaderValue::from_static("*"))
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-max-age"
            ]
        );
    }

    #[test]
    fn retry_conditions() {
        let r = Retry::DEFAULT;
        assert!(r.has(RetryOn::Error) && r.has(RetryOn::Timeout));
        assert!(!r.on_status(502));
        let r = Retry {
            on: RetryOn::Http502 as u16,
            ..Retry::DEFAULT
        };
        assert!(r.on_status(502) && !r.on_status(500) && !r.on_status(200));
    }
}
