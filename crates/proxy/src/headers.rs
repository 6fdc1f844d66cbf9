//! Header handling between client and upstream: hop-by-hop removal, forwarding headers, request ids.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including those named in `Connection` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at every name first: most messages carry no hop-by-hop field, and looking each
    // one up by name costs a hash apiece.
    let upgrade = &header::UPGRADE;
    if !headers
        .keys()
        .any(|n| n == upgrade || HOP_BY_HOP.contains(n))
    {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Who a request is forwarded for.
pub struct Forwarding<'a> {
    /// The connection's client address (appended to `X-Forwarded-For`).
    pub client_ip: &'a HeaderValue,
    /// The address trusted forwarded headers named, when not the connection's (`X-Real-IP`).
    pub real_ip: Option<&'a HeaderValue>,
    /// Whether the client is a trusted proxy: its `X-Forwarded-Proto`, `-Host` and `-Port` are
    /// passed on instead of replaced.
    pub pass_on: bool,
}

/// Fields of a request on its way upstream, as the edits that set some of them see them.
pub trait Fields {
    /// The (first) value of `name`.
    fn field(&self, name: &HeaderName) -> Option<&HeaderValue>;
    /// Sets `name` to `value`, replacing any value it had.
    fn set(&mut self, name: HeaderName, value: HeaderValue);
}

impl Fields for HeaderMap {
    fn field(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.get(name)
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
}

/// The client's fields with the ones set on top of them kept apart, for a head written out
/// directly: the client's map is not grown (and rehashed) for a few fields of ours.
pub(crate) struct Staged<'a> {
    /// The client's fields (hop-by-hop ones already removed).
    pub(crate) received: &'a HeaderMap,
    /// The fields set, which replace the client's of the same name.
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> Staged<'a> {
    pub(crate) fn new(received: &'a HeaderMap) -> Self {
        Staged {
            received,
            set: Vec::with_capacity(8),
        }
    }

    /// Whether `name` is one of the fields set (so the client's value of it is not sent).
    pub(crate) fn replaces(&self, name: &HeaderName) -> bool {
        self.set.iter().any(|(n, _)| n == name)
    }
}

impl Fields for Staged<'_> {
    fn field(&self, name: &HeaderName) -> Option<&HeaderValue> {
        match self.set.iter().find(|(n, _)| n == name) {
            Some((_, v)) => Some(v),
            None => self.received.get(name),
        }
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self.set.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.set.push((name, value)),
        }
    }
}

/// Sets the forwarding headers a backend needs to see the original request. The connection's
/// values (`local_port`, the client address) are computed once per connection.
pub fn set_forwarded(
    headers: &mut impl Fields,
    by: &Forwarding<'_>,
    host: HeaderValue,
    scheme: &'static str,
    local_port: &HeaderValue,
) {
    let client_ip = by.client_ip;
    let xff = match headers.field(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prior) if !prior.trim_ascii().is_empty() => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + client_ip.len());
            joined.extend_from_slice(prior);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone())
        }
        _ => client_ip.clone(),
    };
    headers.set(X_FORWARDED_FOR.clone(), xff);
    headers.set(X_REAL_IP.clone(), by.real_ip.unwrap_or(client_ip).clone());
    if by.pass_on {
        if let Some(first) = headers.field(&X_FORWARDED_HOST).and_then(first_item) {
            headers.set(X_FORWARDED_HOST.clone(), first);
        }
        for (name, ours) in [
            (&X_FORWARDED_PROTO, HeaderValue::from_static(scheme)),
            (&X_FORWARDED_HOST, host),
            (&X_FORWARDED_PORT, local_port.clone()),
        ] {
            if headers.field(name).is_none() {
                headers.set(name.clone(), ours);
            }
        }
        return;
    }
    headers.set(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    headers.set(X_FORWARDED_HOST.clone(), host);
    headers.set(X_FORWARDED_PORT.clone(), local_port.clone());
}

/// The first item of a comma-separated value, trimmed (ingress-nginx passes on the first host
/// of a received `X-Forwarded-Host`).
fn first_item(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let first = bytes.split(|&b| b == b',').next()?.trim_ascii();
    HeaderValue::from_bytes(first).ok()
}

/// [`first_item`] over bytes, for the HTTP/1.x writer.
pub(crate) fn first_item_bytes(bytes: &[u8]) -> &[u8] {
    bytes
        .split(|&b| b == b',')
        .next()
        .unwrap_or(bytes)
        .trim_ascii()
}

thread_local! {
    static ID_STATE: Cell<(u64, u64)> = Cell::new({
        let seed = RandomState::new().build_hasher().finish();
        (seed, RandomState::new().build_hasher().finish())
    });
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh 32-hex-digit request id (unique, not secret).
pub fn request_id() -> HeaderValue {
    HeaderValue::from_bytes(&request_id_hex()).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A fresh request id as 32 lowercase hex digits.
pub fn request_id_hex() -> [u8; 32] {
    let (a, b) = ID_STATE.with(|s| {
        let (seed, counter) = s.get();
        s.set((seed, counter.wrapping_add(1)));
        (
            splitmix(seed ^ counter),
            splitmix(counter.wrapping_add(seed.rotate_left(17))),
        )
    });
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in a
        .to_be_bytes()
        .iter()
        .chain(b.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 15)];
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::USER_AGENT, HeaderValue::from_static("ua"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::USER_AGENT));
    }

    #[test]
    fn strips_a_protocol_switch() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        set_forwarded(
            &mut h,
            &Forwarding {
                client_ip: &HeaderValue::from_static("192.0.2.7"),
                real_ip: None,
                pass_on: false,
            },
            HeaderValue::from_static("a.example:8080"),
            "http",
            &HeaderValue::from(8080u16),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "a.example:8080");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn trusted_proxies_forwarded_fields_are_passed_on() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("a.example, b.example"),
        );
        let by = Forwarding {
            client_ip: &HeaderValue::from_static("10.0.0.2"),
            real_ip: Some(&HeaderValue::from_static("203.0.113.9")),
            pass_on: true,
        };
        set_forwarded(
            &mut h,
            &by,
            HeaderValue::from_static("inner.example"),
            "http",
            &HeaderValue::from(8080u16),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.2");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(first_item_bytes(b" x , y"), b"x");
    }

    #[test]
    fn request_ids_are_distinct_hex() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
