//! Writing HTTP/1.x heads: the upstream request head with the decision's edits applied, the
//! client response head from the upstream's, and the responses Portcullis makes itself.

use std::ops::Range;

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;

use super::codec::{Field, Framing, Kind, RequestHead, ResponseHead};
use super::push_date;
use crate::decide::{Forward, Local};
use crate::error::{local_body, LOCAL_CONTENT_TYPE};
use crate::forward::ConnInfo;

pub(super) fn find_field<'f>(raw: &[u8], fields: &'f [Field], name: &[u8]) -> Option<&'f Field> {
    fields
        .iter()
        .find(|f| raw[f.name.clone()].eq_ignore_ascii_case(name))
}

pub(super) fn push_field(out: &mut Vec<u8>, raw: &[u8], f: &Field) {
    out.extend_from_slice(&raw[f.name.clone()]);
    out.extend_from_slice(b": ");
    out.extend_from_slice(&raw[f.value.clone()]);
    out.extend_from_slice(b"\r\n");
}

/// Copies the field lines a head passes on. Lines that follow one another in the received head
/// go out as one copy of the received bytes (from the first name to the last value, CRLFs
/// between them included); each run ends with a CRLF of ours.
pub(super) struct FieldRun<'r> {
    raw: &'r [u8],
    run: Option<Range<usize>>,
}

impl<'r> FieldRun<'r> {
    pub(super) fn new(raw: &'r [u8]) -> Self {
        FieldRun { raw, run: None }
    }

    pub(super) fn keep(&mut self, out: &mut Vec<u8>, f: &Field) {
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

    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(run) = self.run.take() {
            out.extend_from_slice(&self.raw[run]);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Whether the bytes between one field value and the next field name are only trailing
/// whitespace and one CRLF (a bare LF or anything else ends the run, and the copy gets a CRLF).
pub(super) fn joins(gap: &[u8]) -> bool {
    match gap.strip_suffix(b"\r\n") {
        Some(ows) => ows.iter().all(|&b| b == b' ' || b == b'\t'),
        None => false,
    }
}

pub(super) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
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

pub(super) fn push_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
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
/// when the upstream sent none; fields in `set` replace upstream fields of the same name.
/// Framing and connection fields are the caller's.
pub(super) fn push_response_start(
    out: &mut Vec<u8>,
    raw: &[u8],
    head: &ResponseHead,
    head_request: bool,
    set: &[(HeaderName, HeaderValue)],
) {
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
        if !set.is_empty() {
            let name = &raw[f.name.clone()];
            if set
                .iter()
                .any(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
            {
                continue;
            }
        }
        kept.keep(out, f);
    }
    kept.finish(out);
    for (name, value) in set {
        push_pair(out, name.as_str().as_bytes(), value.as_bytes());
    }
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

/// One field line.
pub(super) fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response Portcullis makes itself (errors, redirects, CORS preflight answers).
pub(super) fn push_local(
    out: &mut Vec<u8>,
    local: &Local,
    minor: u8,
    keep_alive: bool,
    head_request: bool,
) {
    let status = local.status;
    let reason = status.canonical_reason().unwrap_or("");
    push_status_line(out, status.as_u16(), reason.as_bytes());
    out.extend_from_slice(b"Server: portcullis\r\nDate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n");
    let body = if local.body {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(LOCAL_CONTENT_TYPE.as_bytes());
        out.extend_from_slice(b"\r\n");
        local_body(status)
    } else {
        Vec::new()
    };
    if status != StatusCode::NO_CONTENT {
        push_content_length(out, body.len() as u64);
    }
    for (name, value) in &local.headers {
        push_pair(out, name.as_str().as_bytes(), value.as_bytes());
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

/// What the upstream request line and `Host` are made of.
pub(super) struct RequestLine<'a> {
    /// The client's host (sent as `X-Forwarded-Host`, and as `Host` unless the policy names
    /// another).
    pub(super) host: &'a str,
    /// The request target as received (path and query; `/` when empty).
    pub(super) target: &'a [u8],
    /// The request id to send, when the client sent none.
    pub(super) new_id: Option<&'a [u8]>,
    /// The address trusted forwarded headers named, when not the connection's (`X-Real-IP`).
    pub(super) real_ip: Option<&'a str>,
    /// Whether the client is a trusted proxy: its `X-Forwarded-Proto`, `-Host` and `-Port` are
    /// passed on instead of replaced.
    pub(super) pass_on: bool,
}

/// The upstream request head: origin-form target (rewritten when the decision says so), the
/// client's fields minus hop-by-hop and forwarding ones, then ours and the policy's.
pub(super) fn push_request(
    out: &mut Vec<u8>,
    raw: &[u8],
    head: &RequestHead,
    line: &RequestLine<'_>,
    info: &ConnInfo,
    forward: &Forward,
) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    match forward.path() {
        Some(path) => out.extend_from_slice(path.as_bytes()),
        None => out.extend_from_slice(line.target),
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    match forward.upstream_host() {
        Some(host) => out.extend_from_slice(host.as_bytes()),
        None => out.extend_from_slice(line.host.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let mut kept = FieldRun::new(raw);
    let admitted = forward.needs_admission();
    for f in &head.fields {
        match f.kind {
            Kind::Other => {
                if head.expect_continue && raw[f.name.clone()].eq_ignore_ascii_case(b"expect") {
                    continue;
                }
                if admitted && forward.strips(&raw[f.name.clone()]) {
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
    out.extend_from_slice(line.real_ip.map_or(client_ip, str::as_bytes));
    // A trusted proxy's own fields go on as it sent them.
    let passed = |name: &[u8]| {
        line.pass_on
            .then(|| {
                head.fields.iter().find(|f| {
                    f.kind == Kind::Forwarded && raw[f.name.clone()].eq_ignore_ascii_case(name)
                })
            })
            .flatten()
            .map(|f| &raw[f.value.clone()])
    };
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(passed(b"x-forwarded-proto").unwrap_or(info.scheme.as_bytes()));
    out.extend_from_slice(b"\r\nX-Forwarded-Host: ");
    out.extend_from_slice(
        passed(b"x-forwarded-host").map_or(line.host.as_bytes(), crate::headers::first_item_bytes),
    );
    out.extend_from_slice(b"\r\nX-Forwarded-Port: ");
    out.extend_from_slice(passed(b"x-forwarded-port").unwrap_or(info.local_port.as_bytes()));
    out.extend_from_slice(b"\r\n");
    if let Some(id) = line.new_id {
        push_pair(out, b"X-Request-ID", id);
    }
    for (name, value) in forward.request_fields() {
        push_pair(out, name.as_bytes(), value.as_bytes());
    }
    if admitted {
        for (name, value) in forward.granted_fields() {
            push_pair(out, name.as_str().as_bytes(), value.as_bytes());
        }
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
