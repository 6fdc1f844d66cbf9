//! One request: route lookup, endpoint choice, header rewriting, forwarding, upgrade tunnelling.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use table::BackendTarget;

use crate::error::{ResBody, SERVER};
use crate::headers::{self, X_REQUEST_ID};
use crate::log::{AccessLog, Entry};
use crate::upstream::{SendError, Target};
use crate::{Proxy, ProxyError};

/// What the proxy knows about the client connection a request arrived on, with the header
/// values derived from it computed once per connection rather than once per request.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub(crate) client_ip: HeaderValue,
    pub(crate) local_port: HeaderValue,
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
        }
    }
}

/// What the access log records about a request beyond its status.
struct Logged {
    start: Instant,
    method: http::Method,
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
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let mut logged = (proxy.config.access_log != AccessLog::Off).then(|| Logged {
        start: Instant::now(),
        method: req.method().clone(),
        version: req.version(),
        host: request_host(&req).to_string(),
        path: req.uri().path().to_string(),
        upstream: None,
        backend: None,
    });
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(headers::request_id);

    let response = match forward(&proxy, &conn, req, &request_id, logged.as_mut()).await {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ProxyError::Upstream { .. } | ProxyError::Timeout(_)) {
                tracing::warn!(%error, "upstream failure");
            }
            error.to_response()
        }
    };
    if let Some(l) = logged {
        proxy.config.access_log.write(&Entry {
            client: conn.client,
            method: &l.method,
            host: &l.host,
            path: &l.path,
            version: l.version,
            status: response.status(),
            upstream: l.upstream.as_deref(),
            backend: l.backend.as_deref(),
            duration: l.start.elapsed(),
            request_id: request_id.to_str().unwrap_or("-"),
        });
    }
    Ok(response)
}

/// The host a request is for: the URI authority (HTTP/2 `:authority`, HTTP/1.1 absolute-form),
/// else the Host header.
fn request_host(req: &Request<Incoming>) -> &str {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

async fn forward(
    proxy: &Proxy,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    request_id: &HeaderValue,
    logged: Option<&mut Logged>,
) -> Result<Response<ResBody>, ProxyError> {
    // The host as a header value: a cheap clone of the Host header, or a copy of the URI authority
    // for HTTP/2 and absolute-form requests.
    let host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest("host"))?,
        None => req
            .headers()
            .get(header::HOST)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("")),
    };
    let host_str = host.to_str().map_err(|_| ProxyError::BadRequest("host"))?;

    // Everything that needs the table happens here, without holding it across an await.
    let mut backend_name = None;
    let target = match route(
        proxy,
        conn.scheme,
        host_str,
        req.uri().path(),
        logged.is_some().then_some(&mut backend_name),
    )? {
        Routed::Redirect => {
            return Ok(https_redirect(
                host_str,
                req.uri(),
                proxy.config.https_redirect_port,
            ))
        }
        Routed::Upstream(target) => target,
    };
    if let Some(l) = logged {
        l.backend = backend_name;
        l.upstream = Some(target.to_string());
    }

    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    if parts.uri.authority().is_some() {
        // HTTP/2 and absolute-form requests carry the host in the URI; HTTP/1.1 upstreams need Host.
        parts.headers.insert(header::HOST, host.clone());
    }
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(
        &mut parts.headers,
        &conn.client_ip,
        host,
        conn.scheme,
        &conn.local_port,
    );
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    parts.version = Version::HTTP_11;
    // HTTP/1.1 upstreams get the origin form; the host travels in the Host header.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    let upstream_req = Request::from_parts(parts, body);
    let upstream_label = target.to_string();

    let exchange = async {
        let mut target = target;
        let mut req = upstream_req;
        let mut failed: Vec<SocketAddr> = Vec::new();
        loop {
            match proxy.pool.send(target.clone(), req).await {
                Ok(response) => return Ok(response),
                // Nothing reached this endpoint: like nginx's proxy_next_upstream, try another
                // ready endpoint of the route (looked up again in the current table).
                Err(SendError::NotSent(source, unsent)) => {
                    if let Target::Addr(addr) = target {
                        failed.push(addr);
                    }
                    match next_endpoint(proxy, host_str_of(&unsent), unsent.uri().path(), &failed) {
                        Some(next) if failed.len() < MAX_ATTEMPTS => {
                            tracing::debug!(%source, failed = %target, next = %next, "trying another endpoint");
                            target = Target::Addr(next);
                            req = *unsent;
                        }
                        _ => {
                            return Err(ProxyError::Upstream {
                                addr: target.to_string(),
                                source,
                            })
                        }
                    }
                }
                Err(SendError::Failed(source)) => {
                    return Err(ProxyError::Upstream {
                        addr: target.to_string(),
                        source,
                    })
                }
            }
        }
    };
    let timeout_target = upstream_label;
    let mut response =
        match tokio::time::timeout(proxy.config.response_header_timeout, exchange).await {
            Err(_) => return Err(ProxyError::Timeout(timeout_target)),
            Ok(result) => result?,
        };

    match client_upgrade {
        Some(client_upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            headers::strip_hop_by_hop(response.headers_mut(), true);
        }
        _ => headers::strip_hop_by_hop(response.headers_mut(), false),
    }
    response
        .headers_mut()
        .entry(header::SERVER)
        .or_insert(SERVER);
    Ok(response.map(Either::Left))
}

/// Where the table sends a request.
pub(crate) enum Routed {
    /// To the same host and path over HTTPS.
    Redirect,
    /// To this upstream.
    Upstream(Target),
}

/// Looks up the route for `host` and `path` and picks its upstream, or says the request goes to
/// HTTPS. `backend_name`, when given, receives the backend's name (for the access log). The
/// table is not held beyond this call.
pub(crate) fn route(
    proxy: &Proxy,
    scheme: &str,
    host: &str,
    path: &str,
    backend_name: Option<&mut Option<String>>,
) -> Result<Routed, ProxyError> {
    let table = proxy.published.load();
    let found = table.lookup(host, path).ok_or(ProxyError::NoRoute)?;
    if found.route.policy.https_redirect && scheme == "http" {
        return Ok(Routed::Redirect);
    }
    let backend = table.backend(found.route.backend);
    let target = match &backend.target {
        BackendTarget::Endpoints { .. } => backend
            .pick()
            .map(Target::Addr)
            .ok_or_else(|| ProxyError::NoEndpoint(backend.name.clone()))?,
        BackendTarget::ExternalName { host, port } => Target::Name(host.as_str().into(), *port),
        BackendTarget::Unavailable { .. } => {
            return Err(ProxyError::NoEndpoint(backend.name.clone()))
        }
    };
    if let Some(name) = backend_name {
        *name = Some(backend.name.clone());
    }
    Ok(Routed::Upstream(target))
}

/// The 308 that sends a plain-HTTP request to the same host, path and query over HTTPS.
fn https_redirect(host: &str, uri: &Uri, port: Option<u16>) -> Response<ResBody> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = redirect_location(host, target, port);
    crate::error::redirect_response(StatusCode::PERMANENT_REDIRECT, &location)
}

/// The HTTPS URL for `host` (its port dropped) and `target` (path and query), naming `port`
/// unless it is the default.
pub(crate) fn redirect_location(host: &str, target: &str, port: Option<u16>) -> String {
    let name = strip_port(host);
    match port {
        Some(p) if p != 443 => format!("https://{name}:{p}{target}"),
        _ => format!("https://{name}{target}"),
    }
}

/// How many endpoints one request may try when connections are refused.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// The Host header of a request being forwarded (always set by then).
fn host_str_of(req: &Request<Incoming>) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// Another ready endpoint for the request's route, not among `failed`.
pub(crate) fn next_endpoint(
    proxy: &Proxy,
    host: &str,
    path: &str,
    failed: &[SocketAddr],
) -> Option<SocketAddr> {
    let table = proxy.published.load();
    let found = table.lookup(host, path)?;
    table.backend(found.route.backend).pick_excluding(failed)
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

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut http::HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_path_and_query_and_drops_port() {
        let uri: Uri = "/a//b?x=1&y".parse().unwrap();
        let r = https_redirect("Example.com:8080", &uri, None);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://Example.com/a//b?x=1&y"
        );
        let r = https_redirect("[::1]:8080", &uri, Some(8443));
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://[::1]:8443/a//b?x=1&y"
        );
        assert_eq!(strip_port("plain"), "plain");
    }
}
