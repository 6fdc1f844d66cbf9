//! HTTP/1.1 message heads and how their bodies are framed.
//!
//! Everything here is pure: heads are parsed in place with `httparse`, every header is classified
//! once, and body framing is derived per RFC 9112 §6 (the chunked coding itself is in
//! [`super::chunked`]). The parsers face untrusted peers, so anything that could let two HTTP
//! implementations disagree about where a message ends is rejected rather than repaired.
//!
//! Lines may end in a bare LF instead of CRLF within a head, as nginx accepts them
//! (RFC 9112 §2.2 allows it); heads are always forwarded with CRLF, so the next hop never sees
//! one.

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Range;

use http::{Method, StatusCode};

pub(crate) use super::chunked::{push_chunk_header, push_last_chunk, ChunkError, Chunked};

/// Largest accepted head: start line, header fields and the empty line that ends them.
pub(crate) const MAX_HEAD: usize = 32 * 1024;
/// Largest accepted number of header fields in one head.
pub(crate) const MAX_HEADERS: usize = 100;

/// Most decimal digits accepted in a Content-Length; nineteen always fit in a `u64`.
const MAX_LENGTH_DIGITS: usize = 19;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Head larger than MAX_HEAD bytes (complete or not).
    TooLarge,
    /// A request line that does not end within MAX_HEAD bytes.
    TargetTooLong,
    /// More than MAX_HEADERS header fields.
    TooManyHeaders,
    /// Well-formed, but asks for something Portcullis does not implement (a transfer coding
    /// other than chunked); the text names it.
    Unsupported(&'static str),
    /// Malformed or unacceptable; the text names the problem.
    Invalid(&'static str),
}

impl HeadError {
    /// The status a client is answered with for a refused request head: 431 (too large), 414
    /// (request line too long), 501 (unsupported) or 400.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::TargetTooLong => StatusCode::URI_TOO_LONG,
            HeadError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            HeadError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "message head larger than {MAX_HEAD} bytes"),
            HeadError::TargetTooLong => write!(f, "request line longer than {MAX_HEAD} bytes"),
            HeadError::TooManyHeaders => write!(f, "more than {MAX_HEADERS} header fields"),
            HeadError::Unsupported(what) => write!(f, "not implemented: {what}"),
            HeadError::Invalid(what) => write!(f, "malformed message head: {what}"),
        }
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}

/// What a header is to the proxy, decided once while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Forwarded as is.
    Other,
    /// Hop-by-hop: a fixed set of names plus any name listed in a Connection header.
    Hop,
    /// Content-Length or Transfer-Encoding; the proxy emits framing itself.
    Framing,
    /// Host (requests only).
    Host,
    /// X-Forwarded-For (requests only).
    XForwardedFor,
    /// X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port, X-Real-IP (requests only).
    Forwarded,
    /// X-Request-Id (requests only).
    XRequestId,
    /// Server (responses only).
    Server,
    /// Date (responses only).
    Date,
}

/// One header field as byte ranges into the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: Range<usize>,
    /// Without surrounding whitespace.
    pub(crate) value: Range<usize>,
    pub(crate) kind: Kind,
}

/// A parsed request head. Ranges index the buffer given to [`parse_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// Bytes of the head including the final empty line (and any empty lines before it).
    pub(crate) len: usize,
    pub(crate) method: Method,
    /// 0 or 1.
    pub(crate) minor_version: u8,
    /// The request-target exactly as sent.
    pub(crate) target: Range<usize>,
    /// What an origin-form upstream request line carries; empty means "/".
    pub(crate) path_and_query: Range<usize>,
    /// `path_and_query` up to the first '?'.
    pub(crate) path: Range<usize>,
    /// The absolute-form authority if present, else the Host header value.
    pub(crate) host: Option<Range<usize>>,
    pub(crate) fields: Vec<Field>,
    /// Never `Close` for requests.
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
    pub(crate) expect_continue: bool,
}

/// A parsed response head. Ranges index the buffer given to [`parse_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) minor_version: u8,
    pub(crate) status: u16,
    pub(crate) reason: Range<usize>,
    pub(crate) fields: Vec<Field>,
    pub(crate) framing: Framing,
    /// Whether the upstream allows reusing the connection after this response.
    pub(crate) keep_alive: bool,
}

/// Header names the codec cares about, recognised case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Unknown,
    Connection,
    Upgrade,
    /// Keep-Alive, Proxy-Connection, TE, Trailer, Proxy-Authenticate, Proxy-Authorization.
    Hop,
    ContentLength,
    TransferEncoding,
    Host,
    XForwardedFor,
    /// X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port, X-Real-IP.
    Forwarded,
    XRequestId,
    Server,
    Date,
    Expect,
}

impl Name {
    fn of(name: &[u8]) -> Name {
        let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
        match name.len() {
            2 if is(b"te") => Name::Hop,
            4 if is(b"host") => Name::Host,
            4 if is(b"date") => Name::Date,
            6 if is(b"server") => Name::Server,
            6 if is(b"expect") => Name::Expect,
            7 if is(b"upgrade") => Name::Upgrade,
            7 if is(b"trailer") => Name::Hop,
            9 if is(b"x-real-ip") => Name::Forwarded,
            10 if is(b"connection") => Name::Connection,
            10 if is(b"keep-alive") => Name::Hop,
            12 if is(b"x-request-id") => Name::XRequestId,
            14 if is(b"content-length") => Name::ContentLength,
            15 if is(b"x-forwarded-for") => Name::XForwardedFor,
            16 if is(b"proxy-connection") => Name::Hop,
            16 if is(b"x-forwarded-host") || is(b"x-forwarded-port") => Name::Forwarded,
            17 if is(b"transfer-encoding") => Name::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Name::Forwarded,
            18 if is(b"proxy-authenticate") => Name::Hop,
            19 if is(b"proxy-authorization") => Name::Hop,
            _ => Name::Unknown,
        }
    }

    fn kind(self, request: bool) -> Kind {
        match self {
            Name::Connection | Name::Upgrade | Name::Hop => Kind::Hop,
            Name::ContentLength | Name::TransferEncoding => Kind::Framing,
            Name::Host if request => Kind::Host,
            Name::XForwardedFor if request => Kind::XForwardedFor,
            Name::Forwarded if request => Kind::Forwarded,
            Name::XRequestId if request => Kind::XRequestId,
            Name::Server if !request => Kind::Server,
            Name::Date if !request => Kind::Date,
            _ => Kind::Other,
        }
    }
}

/// Whether a Connection token naming a field of this kind turns it into `Kind::Hop`.
fn nominable(kind: Kind, request: bool) -> bool {
    match kind {
        Kind::Hop | Kind::Framing => false,
        Kind::Host => !request,
        _ => true,
    }
}

/// What one pass over the header fields found.
struct Summary {
    fields: Vec<Field>,
    /// Connection tokens.
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// A Connection token may name a field that is not hop-by-hop yet.
    nominates: bool,
    upgrade_header: bool,
    te_present: bool,
    /// Non-empty transfer codings over all Transfer-Encoding fields.
    te_codings: usize,
    te_last_chunked: bool,
    /// How many of the codings are chunked.
    te_chunked: usize,
    cl_present: bool,
    cl_invalid: bool,
    /// Content-Length values over all fields (a list counts each element).
    cl_values: usize,
    cl: Option<u64>,
    hosts: usize,
    host_invalid: bool,
    host: Option<Range<usize>>,
    expect_continue: bool,
}

fn summarize(buf: &[u8], headers: &[httparse::Header<'_>], request: bool) -> Summary {
    let mut s = Summary {
        fields: Vec::with_capacity(headers.len()),
        close: false,
        keep_alive: false,
        upgrade: false,
        nominates: false,
        upgrade_header: false,
        te_present: false,
        te_codings: 0,
        te_last_chunked: false,
        te_chunked: 0,
        cl_present: false,
        cl_invalid: false,
        cl_values: 0,
        cl: None,
        hosts: 0,
        host_invalid: false,
        host: None,
        expect_continue: false,
    };
    for header in headers {
        let name = range_in(buf, header.name.as_bytes());
        let value = trim_range(buf, range_in(buf, header.value));
        let bytes = &buf[value.clone()];
        let known = Name::of(header.name.as_bytes());
        match known {
            Name::Connection => {
                for token in list(bytes) {
                    if token.eq_ignore_ascii_case(b"close") {
                        s.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        s.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        s.upgrade = true;
                    }
                    if nominable(Name::of(token).kind(request), request) {
                        s.nominates = true;
                    }
                }
            }
            Name::Upgrade => s.upgrade_header = true,
            Name::TransferEncoding => {
                s.te_present = true;
                for coding in list(bytes) {
                    s.te_codings += 1;
                    s.te_last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                    s.te_chunked += usize::from(s.te_last_chunked);
                }
            }
            Name::ContentLength => {
                s.cl_present = true;
                for element in bytes.split(|&b| b == b',') {
                    s.cl_values += 1;
                    match parse_length(trim(element)) {
                        Some(n) if s.cl.is_none_or(|m| m == n) => s.cl = Some(n),
                        _ => s.cl_invalid = true,
                    }
                }
            }
            Name::Host if request => {
                s.hosts += 1;
                if !bytes.iter().all(|&b| is_host_byte(b)) {
                    s.host_invalid = true;
                }
                s.host = Some(value.clone());
            }
            Name::Expect if bytes.eq_ignore_ascii_case(b"100-continue") => {
                s.expect_continue = true;
            }
            _ => {}
        }
        s.fields.push(Field {
            name,
            value,
            kind: known.kind(request),
        });
    }
    if s.nominates {
        mark_nominated(buf, &mut s.fields, request);
    }
    s
}

/// Turns every field named by a Connection token into `Kind::Hop` (Framing, and Host in a
/// request, stay as they are).
fn mark_nominated(buf: &[u8], fields: &mut [Field], request: bool) {
    for i in 0..fields.len() {
        if fields[i].kind != Kind::Hop
            || !buf[fields[i].name.clone()].eq_ignore_ascii_case(b"connection")
        {
            continue;
        }
        let value = fields[i].value.clone();
        for token in list(&buf[value]) {
            for field in fields.iter_mut() {
                if nominable(field.kind, request)
                    && buf[field.name.clone()].eq_ignore_ascii_case(token)
                {
                    field.kind = Kind::Hop;
                }
            }
        }
    }
}

/// The non-empty, OWS-trimmed elements of a comma-separated list.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|e| !e.is_empty())
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_ows(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_ows(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

fn trim_range(buf: &[u8], range: Range<usize>) -> Range<usize> {
    let (mut start, mut end) = (range.start, range.end);
    while start < end && is_ows(buf[start]) {
        start += 1;
    }
    while end > start && is_ows(buf[end - 1]) {
        end -= 1;
    }
    start..end
}

/// The position of `part`, a subslice of `buf`, within `buf`.
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    debug_assert!(start <= buf.len() && part.len() <= buf.len() - start);
    start..start + part.len()
}

/// A Content-Length element: 1 to 19 ASCII digits.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_LENGTH_DIGITS {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Bytes allowed in a Host value or an absolute-form authority: unreserved, sub-delims, ':',
/// '[' and ']' for IP literals, and '%' for percent-encoding.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(&b)
}

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Keep-alive as the version and Connection tokens say.
fn persistent(minor_version: u8, close: bool, keep_alive: bool) -> bool {
    !close && (minor_version == 1 || keep_alive)
}

/// Where the parts of a request-target are.
struct Target {
    path_and_query: Range<usize>,
    path: Range<usize>,
    authority: Option<Range<usize>>,
}

fn split_target(buf: &[u8], target: Range<usize>, method: &Method) -> Result<Target, HeadError> {
    const BAD: HeadError = HeadError::Invalid("request-target");
    let t = &buf[target.clone()];
    if t.contains(&b'#') {
        return Err(BAD);
    }
    let (path_and_query, authority) = match t {
        [b'/', ..] => (target.clone(), None),
        b"*" if method == Method::OPTIONS => (target.clone(), None),
        _ => {
            let scheme = if t.len() >= 7 && t[..7].eq_ignore_ascii_case(b"http://") {
                7
            } else if t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"https://") {
                8
            } else {
                return Err(BAD);
            };
            let rest = &t[scheme..];
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            if authority.is_empty() || authority.contains(&b'@') {
                return Err(BAD);
            }
            if !authority.iter().all(|&b| is_host_byte(b)) {
                return Err(HeadError::Invalid("host"));
            }
            // A query right after the authority has no origin-form equivalent without
            // rewriting the target, so it is refused.
            if rest.get(end) == Some(&b'?') {
                return Err(BAD);
            }
            let authority_start = target.start + scheme;
            let authority_end = authority_start + end;
            (
                authority_end..target.end,
                Some(authority_start..authority_end),
            )
        }
    };
    let path_end = buf[path_and_query.clone()]
        .iter()
        .position(|&b| b == b'?')
        .map_or(path_and_query.end, |i| path_and_query.start + i);
    Ok(Target {
        path: path_and_query.start..path_end,
        path_and_query,
        authority,
    })
}

/// Parses a request head at the start of `buf`.
///
/// Ok(None): incomplete (buf.len() < MAX_HEAD); Err(TooLarge) when buf holds MAX_HEAD bytes or
/// more without a complete head.
pub(crate) fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let limited = &buf[..buf.len().min(MAX_HEAD)];
    // Left uninitialised: httparse writes the fields it finds and hands back only those.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(limited, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(if request_line_ends(limited) {
                HeadError::TooLarge
            } else {
                HeadError::TargetTooLong
            });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Invalid("syntax")),
    };
    let (Some(method), Some(raw_target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Invalid("syntax"));
    };
    if minor_version > 1 {
        return Err(HeadError::Invalid("version"));
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Invalid("method"))?;
    if method == Method::CONNECT {
        return Err(HeadError::Invalid("CONNECT is not supported"));
    }
    let target = range_in(buf, raw_target.as_bytes());
    let parts = split_target(buf, target.clone(), &method)?;

    let s = summarize(buf, req.headers, true);
    let http11 = minor_version == 1;

    if s.hosts > 1 || s.host_invalid {
        return Err(HeadError::Invalid("host"));
    }
    let host_empty = s.host.as_ref().is_none_or(|h| h.is_empty());
    if http11 && host_empty {
        return Err(HeadError::Invalid("host"));
    }
    let framing = request_framing(&s, http11)?;
    let host = match parts.authority {
        Some(authority) => Some(authority),
        None if host_empty => None,
        None => s.host,
    };

    Ok(Some(RequestHead {
        len,
        method,
        minor_version,
        target,
        path_and_query: parts.path_and_query,
        path: parts.path,
        host,
        framing,
        keep_alive: persistent(minor_version, s.close, s.keep_alive),
        upgrade: http11 && s.upgrade && s.upgrade_header,
        expect_continue: http11 && s.expect_continue,
        fields: s.fields,
    }))
}

/// Whether the request line in `head` (after any empty lines before it) has ended.
fn request_line_ends(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    head[start..].contains(&b'\n')
}

/// How a request's body is framed (RFC 9112 §6.1–6.3), refusing every combination two
/// implementations could read differently: Transfer-Encoding in HTTP/1.0 or together with
/// Content-Length, chunked not last or applied twice (400), a coding before chunked that
/// Portcullis does not implement (501), and a Content-Length that is not exactly one number
/// (a list, even of equal values, or a repeated field, is refused as nginx refuses it).
fn request_framing(s: &Summary, http11: bool) -> Result<Framing, HeadError> {
    if s.te_present {
        if !http11 {
            return Err(HeadError::Invalid("transfer-encoding"));
        }
        if s.cl_present {
            return Err(HeadError::Invalid("content-length with transfer-encoding"));
        }
        if !s.te_last_chunked || s.te_chunked != 1 {
            return Err(HeadError::Invalid("transfer-encoding"));
        }
        if s.te_codings != 1 {
            return Err(HeadError::Unsupported("transfer coding other than chunked"));
        }
        return Ok(Framing::Chunked);
    }
    if s.cl_invalid || s.cl_values > 1 {
        return Err(HeadError::Invalid("content-length"));
    }
    Ok(s.cl.map_or(Framing::None, Framing::Length))
}

/// Parses a response head at the start of `buf`. `head_request`: the request was HEAD (then the
/// response has no body whatever its headers say).
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let limited = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        limited,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Invalid("syntax")),
    };
    let (Some(minor_version), Some(status)) = (res.version, res.code) else {
        return Err(HeadError::Invalid("syntax"));
    };
    if minor_version > 1 {
        return Err(HeadError::Invalid("version"));
    }
    if !(100..=999).contains(&status) {
        return Err(HeadError::Invalid("status"));
    }
    let reason = reason_range(buf, len);
    let s = summarize(buf, res.headers, false);
    let http11 = minor_version == 1;

    if s.te_present && !http11 {
        return Err(HeadError::Invalid("transfer-encoding"));
    }
    if !s.te_present && s.cl_invalid {
        return Err(HeadError::Invalid("content-length"));
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if s.te_present {
        if s.te_last_chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        s.cl.map_or(Framing::Close, Framing::Length)
    };
    // Both framings in one response may be an attempt at response splitting: the chunked
    // framing wins (RFC 9112 §6.3) and the connection is not used again.
    let keep_alive = status < 200
        || (framing != Framing::Close
            && persistent(minor_version, s.close, s.keep_alive)
            && !(s.te_present && s.cl_present));

    Ok(Some(ResponseHead {
        len,
        minor_version,
        status,
        reason,
        fields: s.fields,
        framing,
        keep_alive,
    }))
}

/// The reason phrase of a status line `httparse` accepted within `buf[..len]`. It is located
/// directly because `httparse` reports an empty phrase outside `buf` when the phrase is absent
/// or holds non-ASCII bytes.
fn reason_range(buf: &[u8], len: usize) -> Range<usize> {
    let head = &buf[..len];
    // Empty lines may precede the status line; "HTTP/1.x NNN" is 12 bytes.
    let line = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(len);
    let after_code = (line + 12).min(len);
    if head.get(after_code) != Some(&b' ') {
        return after_code..after_code;
    }
    let start = after_code + 1;
    let end = head[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(len, |i| start + i);
    start..end
}

#[cfg(test)]
mod tests;
