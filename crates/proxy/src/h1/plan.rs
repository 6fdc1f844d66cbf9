//! What happens to an HTTP/1.x request, decided from its head and the table: a local answer,
//! or the upstream head to send (written while the head's bytes are at hand) and what is kept
//! about the request for its answer and its access-log line.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode, Version};

use super::codec::{Field, Framing, Kind, RequestHead};
use super::head::{find_field, push_request, RequestLine};
use crate::decide::{Decision, Forward, Local, RequestHeaders, View};
use crate::forward::ConnInfo;
use crate::headers;
use crate::stats::RouteCounters;
use crate::Proxy;

/// What happens to a request, decided from its head and the table.
pub(super) enum Plan {
    Forward(Forward),
    Local(Local),
    /// Forwarded once admitted ([`admitted`]): the route authenticates. Carries the request id
    /// generated for it, if the client sent none.
    Admit(Forward, Option<[u8; 32]>),
}

/// What is kept about a request once its head bytes are consumed.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) minor: u8,
    pub(super) keep_alive: bool,
    pub(super) framing: Framing,
    pub(super) upgrade: bool,
    pub(super) expect_continue: bool,
    /// When the head was read.
    pub(super) start: Instant,
    /// The head's size plus the declared body's.
    pub(super) request_bytes: u64,
    /// The matched route's counters (`None`: no route; the proxy's unrouted counters).
    pub(super) counters: Option<Arc<RouteCounters>>,
    /// When the request went upstream, in nanoseconds after `start` plus one (0: it did not).
    pub(super) upstream_at: AtomicU64,
    /// Bytes of the response written to the client.
    pub(super) response_bytes: AtomicU64,
}

impl Req {
    pub(super) fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// What the access log needs beyond the status.
pub(super) struct Logged {
    /// The client address found for the request, when not the connection's.
    pub(super) client: Option<std::net::IpAddr>,
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) request_id: String,
    pub(super) backend: Option<String>,
    pub(super) upstream: Option<String>,
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

    fn values<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for field in self.fields {
            if self.raw[field.name.clone()].eq_ignore_ascii_case(name.as_bytes()) {
                f(&self.raw[field.value.clone()]);
            }
        }
    }

    fn each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for field in self.fields {
            f(
                &self.raw[field.name.clone()],
                &self.raw[field.value.clone()],
            );
        }
    }
}

/// The request's host as the decision reads it (empty when there is none).
fn host_of<'r>(raw: &'r [u8], head: &RequestHead) -> &'r str {
    head.host
        .clone()
        .and_then(|r| std::str::from_utf8(&raw[r]).ok())
        .unwrap_or("")
}

/// What the decision reads of a request line: `host`, path, query and the whole target;
/// `None` when the path or query is not UTF-8.
#[inline]
fn line_parts<'r>(
    raw: &'r [u8],
    head: &RequestHead,
    host: &'r str,
) -> Option<(&'r str, &'r str, Option<&'r str>, &'r [u8])> {
    let path_bytes: &[u8] = match &raw[head.path.clone()] {
        b"" => b"/",
        p => p,
    };
    let path = std::str::from_utf8(path_bytes).ok()?;
    let target = match &raw[head.path_and_query.clone()] {
        b"" => b"/".as_slice(),
        t => t,
    };
    // The query is read only as far as a rewrite or redirect needs it.
    let query = match target.iter().position(|&b| b == b'?') {
        None => None,
        Some(at) => Some(std::str::from_utf8(&target[at + 1..]).ok()?),
    };
    Some((host, path, query, target))
}

fn view_of<'r>(
    info: &ConnInfo,
    head: &'r RequestHead,
    parts: (&'r str, &'r str, Option<&'r str>),
    fields: &'r RawFields<'r>,
    client: std::net::IpAddr,
) -> View<'r> {
    let (host, path, query) = parts;
    View {
        https: info.https_of(fields),
        client,
        method: &head.method,
        host,
        path,
        query,
        content_length: match head.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        headers: fields,
    }
}

/// Admits a request to a route that authenticates ([`Proxy::admit`]) and, when it is, writes
/// its upstream head into `out`.
pub(super) async fn admitted(
    proxy: &Proxy,
    info: &ConnInfo,
    raw: &[u8],
    head: &RequestHead,
    mut forward: Forward,
    new_id: Option<[u8; 32]>,
    out: &mut Vec<u8>,
) -> Plan {
    let Some((host, path, query, target)) = line_parts(raw, head, host_of(raw, head)) else {
        return Plan::Local(Local::status(StatusCode::BAD_REQUEST));
    };
    let fields = RawFields {
        raw,
        fields: &head.fields,
    };
    let client = info.client_of(&proxy.config, &fields);
    let view = view_of(info, head, (host, path, query), &fields, client);
    if let Err(local) = proxy.admit(&view, &mut forward).await {
        return Plan::Local(local);
    }
    let real_ip = (client != info.client.ip()).then(|| client.to_string());
    let line = RequestLine {
        host,
        target,
        new_id: new_id.as_ref().map(|id| id.as_slice()),
        real_ip: real_ip.as_deref(),
        pass_on: info.trusted,
    };
    push_request(out, raw, head, &line, info, &forward);
    Plan::Forward(forward)
}

pub(super) fn has_body(framing: Framing) -> bool {
    !matches!(framing, Framing::None | Framing::Length(0))
}

/// Decides what happens to a request and, when it is forwarded, writes its upstream head into
/// `out`.
pub(super) fn plan(
    proxy: &Proxy,
    info: &ConnInfo,
    raw: &[u8],
    head: &RequestHead,
    out: &mut Vec<u8>,
    log: bool,
) -> (Plan, Req, Option<Box<Logged>>) {
    let host = host_of(raw, head);
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
            client: None,
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
    let Some((host, path, query, target)) = line_parts(raw, head, host) else {
        let local = Local::status(StatusCode::BAD_REQUEST);
        return (Plan::Local(local), req, logged);
    };
    let fields = RawFields {
        raw,
        fields: &head.fields,
    };
    let client = info.client_of(&proxy.config, &fields);
    if let Some(l) = logged.as_mut() {
        l.client = (client != info.client.ip()).then_some(client);
    };
    let view = view_of(info, head, (host, path, query), &fields, client);
    let (decision, counters) = proxy.decide(&view);
    req.counters = counters;
    let forward = match decision {
        Ok(Decision::Forward(forward)) => forward,
        Ok(Decision::Local(local)) => return (Plan::Local(local), req, logged),
        Err(error) => return (Plan::Local(Local::status(error.status())), req, logged),
    };
    // The address forwarded headers named, when not the connection's own.
    let real_ip = (client != info.client.ip()).then(|| client.to_string());
    if let Some(l) = logged.as_mut() {
        l.backend = Some(forward.backend.name.clone());
    }
    if forward.needs_admission() {
        let new_id = given_id
            .is_none()
            .then(|| <[u8; 32]>::try_from(request_id).ok())
            .flatten();
        return (Plan::Admit(forward, new_id), req, logged);
    }
    let line = RequestLine {
        host,
        target,
        new_id: given_id.is_none().then_some(request_id),
        real_ip: real_ip.as_deref(),
        pass_on: info.trusted,
    };
    push_request(out, raw, head, &line, info, &forward);
    (Plan::Forward(forward), req, logged)
}
