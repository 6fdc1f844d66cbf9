//! Request heads: the fields of a decoded header block checked against RFC 9113 §8.2 and
//! §8.3.1, pseudo-fields taken apart from the rest.

use bytes::Bytes;

use crate::hpack::Field;

/// A request head as a client sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// `:method`.
    pub method: Bytes,
    /// `:scheme`, absent only for CONNECT.
    pub scheme: Option<Bytes>,
    /// `:authority`, when sent.
    pub authority: Option<Bytes>,
    /// `:path`, absent only for CONNECT.
    pub path: Option<Bytes>,
    /// The regular fields, in order.
    pub fields: Vec<Field>,
    /// The value of `content-length`, when the request has one valid value (equal repeats
    /// allowed).
    pub content_length: Option<u64>,
}

/// Why a header block is not a valid request head or trailer section; the stream is reset
/// with `PROTOCOL_ERROR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A pseudo-field this end does not know, repeated, after a regular field, or missing.
    Pseudo,
    /// A field name with upper case or characters no token has.
    Name,
    /// A field that HTTP/2 forbids: connection-specific, or `te` other than `trailers`.
    ConnectionSpecific,
    /// Several `content-length` values that disagree, or one that is not a number.
    ContentLength,
}

/// Whether `name` is a valid HTTP/2 field name: token characters, no upper case.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\''
                | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
        })
}

/// Checks one regular field; returns whether it is `content-length`.
fn check_regular(f: &Field) -> Result<bool, Malformed> {
    if !valid_name(&f.name) {
        return Err(Malformed::Name);
    }
    match &f.name[..] {
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
            Err(Malformed::ConnectionSpecific)
        }
        b"te" if !f.value.eq_ignore_ascii_case(b"trailers") => Err(Malformed::ConnectionSpecific),
        b"content-length" => Ok(true),
        _ => Ok(false),
    }
}

/// Folds a `content-length` value into what was seen before.
fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, Malformed> {
    let mut found = seen;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Malformed::ContentLength);
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(Malformed::ContentLength);
        }
        found = Some(n);
    }
    found.ok_or(Malformed::ContentLength)
}

/// Takes a request head apart from its decoded fields (which become its regular fields).
pub(crate) fn request(mut fields: Vec<Field>) -> Result<Head, Malformed> {
    let mut head = Head::default();
    let mut method = None;
    // §8.3: the pseudo-fields come first.
    let pseudo = fields
        .iter()
        .position(|f| f.name.first() != Some(&b':'))
        .unwrap_or(fields.len());
    for f in fields.drain(..pseudo) {
        let slot = match &f.name[..] {
            b":method" => &mut method,
            b":scheme" => &mut head.scheme,
            b":authority" => &mut head.authority,
            b":path" => &mut head.path,
            _ => return Err(Malformed::Pseudo),
        };
        if slot.replace(f.value).is_some() {
            return Err(Malformed::Pseudo);
        }
    }
    for f in &fields {
        if f.name.first() == Some(&b':') {
            return Err(Malformed::Pseudo);
        }
        if check_regular(f)? {
            head.content_length = Some(content_length(&f.value, head.content_length)?);
        }
    }
    head.fields = fields;
    head.method = method.ok_or(Malformed::Pseudo)?;
    if &head.method[..] == b"CONNECT" {
        // §8.5: authority only.
        if head.authority.is_none() || head.scheme.is_some() || head.path.is_some() {
            return Err(Malformed::Pseudo);
        }
    } else if head.scheme.is_none() || head.path.as_ref().is_none_or(|p| p.is_empty()) {
        return Err(Malformed::Pseudo);
    }
    Ok(head)
}

/// Checks a trailer section: regular fields only.
pub(crate) fn trailers(fields: &[Field]) -> Result<(), Malformed> {
    for f in fields {
        if f.name.first() == Some(&b':') {
            return Err(Malformed::Pseudo);
        }
        check_regular(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &'static str, value: &'static str) -> Field {
        Field {
            name: Bytes::from_static(name.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
            sensitive: false,
        }
    }

    fn get(extra: &[Field]) -> Vec<Field> {
        let mut v = vec![f(":method", "GET"), f(":scheme", "https"), f(":path", "/a")];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn a_valid_head_is_taken_apart() {
        let head = request(get(&[f("te", "trailers"), f(":authority", "x.example")]));
        assert_eq!(
            head,
            Err(Malformed::Pseudo),
            "a pseudo-field after a regular one"
        );
        let mut fields = get(&[]);
        fields.insert(0, f(":authority", "x.example"));
        fields.push(f("content-length", "3, 3"));
        fields.push(f("te", "trailers"));
        let head = request(fields).unwrap();
        assert_eq!(&head.method[..], b"GET");
        assert_eq!(head.authority.as_deref(), Some(&b"x.example"[..]));
        assert_eq!(head.path.as_deref(), Some(&b"/a"[..]));
        assert_eq!(head.content_length, Some(3));
        assert_eq!(head.fields.len(), 2);
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases: Vec<(Vec<Field>, Malformed)> = vec![
            (
                vec![f(":scheme", "https"), f(":path", "/")],
                Malformed::Pseudo,
            ),
            (
                vec![f(":method", "GET"), f(":path", "/")],
                Malformed::Pseudo,
            ),
            (
                vec![f(":method", "GET"), f(":scheme", "http"), f(":path", "")],
                Malformed::Pseudo,
            ),
            (
                get(&[]).into_iter().chain([f(":path", "/b")]).collect(),
                Malformed::Pseudo,
            ),
            (
                [f(":status", "200")].into_iter().chain(get(&[])).collect(),
                Malformed::Pseudo,
            ),
            (get(&[f("Host", "x")]), Malformed::Name),
            (get(&[f("bad name", "x")]), Malformed::Name),
            (
                get(&[f("connection", "close")]),
                Malformed::ConnectionSpecific,
            ),
            (
                get(&[f("transfer-encoding", "chunked")]),
                Malformed::ConnectionSpecific,
            ),
            (get(&[f("te", "gzip")]), Malformed::ConnectionSpecific),
            (
                get(&[f("content-length", "1"), f("content-length", "2")]),
                Malformed::ContentLength,
            ),
            (get(&[f("content-length", "-1")]), Malformed::ContentLength),
            (
                vec![f(":method", "CONNECT"), f(":path", "/")],
                Malformed::Pseudo,
            ),
        ];
        for (fields, want) in cases {
            let shown: Vec<_> = fields.iter().map(|f| f.name.clone()).collect();
            assert_eq!(request(fields), Err(want), "{shown:?}");
        }
        let connect = request(vec![f(":method", "CONNECT"), f(":authority", "x:443")]).unwrap();
        assert!(connect.path.is_none() && connect.scheme.is_none());
    }

    #[test]
    fn trailers_carry_no_pseudo_fields() {
        assert_eq!(trailers(&[f("grpc-status", "0")]), Ok(()));
        assert_eq!(trailers(&[f(":path", "/")]), Err(Malformed::Pseudo));
        assert_eq!(trailers(&[f("Grpc-Status", "0")]), Err(Malformed::Name));
    }
}
