//! The HTTP/1.1 head parsers and the chunked decoder, reachable from outside the crate for the
//! fuzz targets in `fuzz/` (feature `fuzzing`). Nothing here is part of the proxy's API: each
//! function calls the codec the data plane uses and reports what it found in plain types.

use std::ops::Range;

use crate::h1::codec::{self, Framing};

/// How a parsed head says its body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes.
    Close,
}

impl From<Framing> for BodyFraming {
    fn from(framing: Framing) -> Self {
        match framing {
            Framing::None => BodyFraming::None,
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked,
            Framing::Close => BodyFraming::Close,
        }
    }
}

/// What parsing a head found, as ranges into the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, final empty line included.
    pub len: usize,
    /// 0 or 1.
    pub minor_version: u8,
    /// Body framing.
    pub framing: BodyFraming,
    /// Whether the connection may be reused afterwards.
    pub keep_alive: bool,
    /// Every range the head points at (target, path, host, reason, field names and values).
    pub ranges: Vec<Range<usize>>,
    /// The header fields: name and value (without surrounding whitespace).
    pub fields: Vec<(Range<usize>, Range<usize>)>,
    /// Request heads: the request-target as sent.
    pub target: Option<Range<usize>>,
    /// Request heads: the path lies within the origin-form target, which lies within the head.
    pub nested: Vec<(Range<usize>, Range<usize>)>,
    /// The whole parsed head, for comparing two parses.
    pub debug: String,
}

/// Why a head was not parsed: incomplete, or refused with the text the proxy would log.
pub type HeadResult = Result<Option<Head>, String>;

fn field_ranges(fields: &[codec::Field]) -> impl Iterator<Item = Range<usize>> + '_ {
    fields
        .iter()
        .flat_map(|f| [f.name.clone(), f.value.clone()])
}

fn name_values(fields: &[codec::Field]) -> Vec<(Range<usize>, Range<usize>)> {
    fields
        .iter()
        .map(|f| (f.name.clone(), f.value.clone()))
        .collect()
}

/// Parses a request head at the start of `buf` with the proxy's parser.
pub fn parse_request(buf: &[u8]) -> HeadResult {
    match codec::parse_request(buf) {
        Ok(Some(head)) => {
            let mut ranges = vec![
                head.target.clone(),
                head.path_and_query.clone(),
                head.path.clone(),
            ];
            ranges.extend(head.host.clone());
            ranges.extend(field_ranges(&head.fields));
            let nested = vec![
                (head.path.clone(), head.path_and_query.clone()),
                (head.path_and_query.clone(), head.target.clone()),
                (head.target.clone(), 0..head.len),
            ];
            Ok(Some(Head {
                len: head.len,
                minor_version: head.minor_version,
                framing: head.framing.into(),
                keep_alive: head.keep_alive,
                ranges,
                fields: name_values(&head.fields),
                target: Some(head.target.clone()),
                nested,
                debug: format!("{head:?}"),
            }))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a response head at the start of `buf`; `head_request`: the request was HEAD.
pub fn parse_response(buf: &[u8], head_request: bool) -> HeadResult {
    match codec::parse_response(buf, head_request) {
        Ok(Some(head)) => {
            let mut ranges = vec![head.reason.clone()];
            ranges.extend(field_ranges(&head.fields));
            Ok(Some(Head {
                len: head.len,
                minor_version: head.minor_version,
                framing: head.framing.into(),
                keep_alive: head.keep_alive,
                ranges,
                fields: name_values(&head.fields),
                target: None,
                nested: vec![(head.reason.clone(), 0..head.len)],
                debug: format!("{head:?}"),
            }))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The proxy's incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct Chunked(codec::Chunked);

impl Chunked {
    /// A decoder that refuses bodies whose data exceeds `limit` bytes (0 = unlimited).
    pub fn with_limit(limit: u64) -> Self {
        Chunked(codec::Chunked::with_limit(limit))
    }

    /// Decodes the next bytes, appending chunk data to `out`: (bytes of `input` that belong to
    /// the body, whether the body ended), or the error text.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), String> {
        self.0.decode(input, out).map_err(|e| e.to_string())
    }

    /// Like [`Chunked::decode`] without copying the data out.
    pub fn scan(&mut self, input: &[u8]) -> Result<(usize, bool), String> {
        self.0.scan(input).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_report_ranges_within_the_head() {
        let text = b"GET /a?b HTTP/1.1\r\nHost: h\r\n\r\nbody";
        let head = parse_request(text).unwrap().unwrap();
        assert_eq!(head.len, text.len() - 4);
        assert_eq!(head.framing, BodyFraming::None);
        assert!(head.ranges.iter().all(|r| r.end <= head.len));
        assert_eq!(&text[head.nested[0].0.clone()], b"/a");
        assert_eq!(&text[head.target.clone().unwrap()], b"/a?b");
        let (name, value) = head.fields[0].clone();
        assert_eq!((&text[name], &text[value]), (&b"Host"[..], &b"h"[..]));
        assert_eq!(parse_request(&text[..10]), Ok(None));
        assert!(parse_request(b"GET / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn response_heads_and_chunks() {
        let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false);
        assert_eq!(head.unwrap().unwrap().framing, BodyFraming::Length(2));
        let mut out = Vec::new();
        let mut chunked = Chunked::with_limit(0);
        assert_eq!(
            chunked.decode(b"2\r\nab\r\n0\r\n\r\nx", &mut out),
            Ok((12, true))
        );
        assert_eq!(out, b"ab");
        assert!(Chunked::with_limit(1).scan(b"2\r\n").is_err());
    }
}
