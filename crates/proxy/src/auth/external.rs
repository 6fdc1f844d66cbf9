//! `auth-url`: a bodiless sub-request to an authentication service carrying the original
//! request's fields and ingress-nginx's `X-Original-*` fields; 2xx admits, 401 and 403 are the
//! client's answer (401 becomes a redirect to `auth-signin` when one is set), anything else — or
//! no answer in time — is 500. Answers may be kept for a while (`auth-cache-key`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use table::auth::{ExternalAuth, Template, TemplatePiece, Variable};

use super::Granted;
use crate::decide::{Limits, Local, View};
use crate::upstream::{RequestBody, Route, Target};
use crate::Proxy;

/// Most cached answers at once (all routes together).
const CACHED: usize = 4096;
/// Largest answer body read (and dropped) so the connection can be used again.
const BODY_LIMIT: usize = 64 * 1024;

/// What an authentication service answered, as far as the request needs it.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    fields: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<HeaderValue>,
    challenge: Option<HeaderValue>,
}

/// Answers kept by `auth-cache-key`, with when each stops being used.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    inner: Mutex<HashMap<(u64, String), (Instant, Answer)>>,
}

impl Answers {
    fn get(&self, key: &(u64, String)) -> Option<Answer> {
        let map = self.inner.lock().ok()?;
        let (until, answer) = map.get(key)?;
        (Instant::now() < *until).then(|| answer.clone())
    }

    fn put(&self, key: (u64, String), until: Instant, answer: Answer) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        if map.len() >= CACHED {
            let now = Instant::now();
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= CACHED {
                map.clear();
            }
        }
        map.insert(key, (until, answer));
    }
}

/// Asks the service about the request; `Ok` carries what the upstream request and the
/// response get from the answer.
pub(super) async fn check(
    proxy: &Proxy,
    service: &ExternalAuth,
    view: &View<'_>,
    limits: &Limits,
) -> Result<Granted, Local> {
    let cache = service
        .cache
        .as_ref()
        .map(|c| (c, (c.id, format!("{}{}", view.host, render(&c.key, view)))));
    let cached = cache
        .as_ref()
        .and_then(|(_, key)| proxy.auth.answers.get(key));
    let answer = match cached {
        Some(answer) => answer,
        None => {
            let answer = ask(proxy, service, view, limits).await.map_err(|why| {
                tracing::warn!(url = %service.url, %why, "authentication service failed");
                Local::status(StatusCode::INTERNAL_SERVER_ERROR)
            })?;
            if let Some((c, key)) = cache {
                if let Some(d) = c.duration_for(answer.status) {
                    proxy
                        .auth
                        .answers
                        .put(key, Instant::now() + d, answer.clone());
                }
            }
            answer
        }
    };
    conclude(service, view, answer)
}

/// The request's fate from the service's answer.
fn conclude(service: &ExternalAuth, view: &View<'_>, answer: Answer) -> Result<Granted, Local> {
    let always = service.always_set_cookie;
    if (200..300).contains(&answer.status) {
        return Ok(Granted {
            fields: answer.fields,
            cookies: answer.cookies,
            always,
        });
    }
    let mut local = match answer.status {
        401 => match &service.signin {
            Some(signin) => {
                Local::redirect(StatusCode::FOUND, &signin_location(service, signin, view))
            }
            None => {
                let mut local = Local::status(StatusCode::UNAUTHORIZED);
                if let Some(c) = answer.challenge {
                    local.headers.push((header::WWW_AUTHENTICATE, c));
                }
                local
            }
        },
        403 => Local::status(StatusCode::FORBIDDEN),
        other => {
            tracing::warn!(url = %service.url, status = other, "authentication service answered neither 2xx, 401 nor 403");
            Local::status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    // The sign-in redirect carries the cookies as nginx's `add_header` would (302 is among its
    // statuses); errors carry them only with `auth-always-set-cookie`.
    if always || local.status == StatusCode::FOUND {
        for c in answer.cookies {
            local.headers.push((header::SET_COOKIE, c));
        }
    }
    Err(local)
}

/// `auth-signin` with the original URL appended as the redirect parameter.
fn signin_location(service: &ExternalAuth, signin: &Template, view: &View<'_>) -> String {
    let mut location = render(signin, view);
    if let Some(param) = &service.redirect_param {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(param);
        location.push('=');
        location.push_str(scheme(view));
        location.push_str("://");
        location.push_str(view.host);
        escape_uri(&mut location, &request_uri(view));
    }
    location
}

fn scheme(view: &View<'_>) -> &'static str {
    if view.https {
        "https"
    } else {
        "http"
    }
}

fn request_uri(view: &View<'_>) -> String {
    match view.query {
        Some(q) => format!("{}?{q}", view.path),
        None => view.path.to_string(),
    }
}

/// Appends `text` escaped as nginx's `set_escape_uri` does: everything but letters, digits and
/// `-._~` as `%XX`.
fn escape_uri(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The host of the request without its port, lower case.
fn bare_host(view: &View<'_>) -> String {
    let host = view.host;
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    name.to_ascii_lowercase()
}

/// A template with the request's values filled in.
pub(super) fn render(t: &Template, view: &View<'_>) -> String {
    let mut out = String::new();
    for piece in &t.pieces {
        match piece {
            TemplatePiece::Text(s) => out.push_str(s),
            TemplatePiece::Var(v) => match v {
                Variable::Host => out.push_str(&bare_host(view)),
                Variable::HttpHost => out.push_str(view.host),
                Variable::Scheme => out.push_str(scheme(view)),
                Variable::RequestUri => out.push_str(&request_uri(view)),
                Variable::EscapedRequestUri => escape_uri(&mut out, &request_uri(view)),
                Variable::Uri => out.push_str(view.path),
                Variable::Args => out.push_str(view.query.unwrap_or("")),
                Variable::Method => out.push_str(view.method.as_str()),
                Variable::RemoteAddr => out.push_str(&view.client.to_string()),
                Variable::RemoteUser => {
                    let user = view
                        .headers
                        .get("authorization")
                        .and_then(super::basic::credentials)
                        .map(|(u, _)| u);
                    out.push_str(&String::from_utf8_lossy(user.as_deref().unwrap_or(b"")));
                }
                Variable::Header(name) => {
                    let v = view.headers.get(name.as_str()).unwrap_or(b"");
                    out.push_str(&String::from_utf8_lossy(v));
                }
                Variable::Cookie(name) => out.push_str(&cookie(view, name)),
            },
        }
    }
    out
}

fn cookie(view: &View<'_>, name: &str) -> String {
    let Some(header) = view.headers.get("cookie") else {
        return String::new();
    };
    String::from_utf8_lossy(header)
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// Fields of the original request not sent to the service (hop-by-hop and framing fields,
/// and those the sub-request sets itself).
const NOT_CARRIED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "x-original-url",
    "x-original-method",
    "x-original-uri",
    "x-scheme",
    "x-sent-from",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-auth-request-redirect",
];

/// The sub-request.
fn sub_request(
    service: &ExternalAuth,
    view: &View<'_>,
    host: &str,
) -> Result<Request<RequestBody>, String> {
    let method = match &service.method {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?,
        None => Method::GET,
    };
    let uri = render(&service.path, view);
    let mut req = Request::builder().method(method).uri(uri.as_str());
    let headers = req.headers_mut().ok_or("bad sub-request")?;
    let set_by_config = |name: &[u8]| {
        service
            .set_headers
            .iter()
            .any(|(h, _)| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
    };
    view.headers.each(&mut |name, value| {
        let lower = name.to_ascii_lowercase();
        if NOT_CARRIED.iter().any(|n| n.as_bytes() == lower.as_slice()) || set_by_config(&lower) {
            return;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&lower),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    });
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    let uri_received = request_uri(view);
    set("host", host.to_string());
    set(
        "x-original-url",
        format!("{}://{}{uri_received}", scheme(view), view.host),
    );
    set("x-original-method", view.method.as_str().to_string());
    set("x-sent-from", "nginx-ingress-controller".into());
    set("x-real-ip", view.client.to_string());
    set("x-forwarded-for", view.client.to_string());
    set(
        "x-auth-request-redirect",
        service
            .request_redirect
            .clone()
            .unwrap_or_else(|| uri_received.clone()),
    );
    if service.method.is_some() {
        set("x-original-uri", uri_received);
        set("x-scheme", scheme(view).to_string());
    }
    for (name, value) in &service.set_headers {
        if let Ok(v) = HeaderValue::from_str(&render(value, view)) {
            headers.insert(name.clone(), v);
        }
    }
    req.body(RequestBody::empty()).map_err(|e| e.to_string())
}

/// Sends the sub-request and reads the answer (its body read to the end, within a bound, so
/// the connection goes back to the pool).
async fn ask(
    proxy: &Proxy,
    service: &ExternalAuth,
    view: &View<'_>,
    limits: &Limits,
) -> Result<Answer, String> {
    let host = match &service.host {
        Some(h) => h.clone(),
        None => bare_host(view),
    };
    let target = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => Target::Addr(SocketAddr::new(ip, service.port)),
        Err(_) => Target::Name(Arc::from(host.as_str()), service.port),
    };
    let host_field = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let req = sub_request(service, view, &host_field)?;
    let route = Route {
        h2: false,
        tls: service.tls.as_ref(),
        backend: &host,
        connect_timeout: limits.connect,
        stall: limits.read,
    };
    let exchange = async {
        let response = proxy
            .pool
            .send(target, req, route)
            .await
            .map_err(|e| match e {
                crate::upstream::SendError::NotSent(e, _)
                | crate::upstream::SendError::Failed(e) => e.to_string(),
            })?;
        let (parts, body) = response.into_parts();
        let _ = Limited::new(body, BODY_LIMIT).collect().await;
        Ok::<_, String>(parts)
    };
    let parts = tokio::time::timeout(limits.read, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())??;
    let fields = service
        .response_headers
        .iter()
        .filter_map(|name| Some((name.clone(), parts.headers.get(name)?.clone())))
        .collect();
    Ok(Answer {
        status: parts.status.as_u16(),
        fields,
        cookies: parts
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect(),
        challenge: parts.headers.get(header::WWW_AUTHENTICATE).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uris_are_escaped_as_set_escape_uri_does() {
        let mut out = String::new();
        escape_uri(&mut out, "/a b/c?x=1&y=~");
        assert_eq!(out, "%2Fa%20b%2Fc%3Fx%3D1%26y%3D~");
    }
}
