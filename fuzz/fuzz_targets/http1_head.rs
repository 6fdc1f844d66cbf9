//! HTTP/1.1 request and response heads parsed from any bytes. Nothing may panic; a parsed head
//! is no longer than the input and every range it reports lies within it; parsing the same
//! bytes again, or only the head's own bytes, gives the same result; a head is incomplete one
//! byte before its end, so a head split across reads parses as it does in one piece. A request
//! is accepted only with unambiguous framing and one Host (RFC 9112 §3.2, §6.3): never both
//! Transfer-Encoding and Content-Length, Transfer-Encoding only with chunked last, every
//! Content-Length element the same number; no field value holds CR, LF or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::fuzzing::{parse_request, parse_response, BodyFraming, Head, HeadResult};

fn check(data: &[u8], parse: impl Fn(&[u8]) -> HeadResult) -> Option<Head> {
    let result = parse(data);
    assert_eq!(parse(data), result, "parsing again differs");
    let head = result.ok()??;
    assert!(
        head.len > 0 && head.len <= data.len(),
        "head of {} bytes in {}",
        head.len,
        data.len()
    );
    for range in &head.ranges {
        assert!(
            range.start <= range.end && range.end <= head.len,
            "{range:?} outside the head"
        );
    }
    for (inner, outer) in &head.nested {
        assert!(
            outer.start <= inner.start && inner.end <= outer.end,
            "{inner:?} not in {outer:?}"
        );
    }
    assert!(head.minor_version <= 1);
    assert_eq!(
        parse(&data[..head.len]).ok().flatten().as_ref(),
        Some(&head),
        "head alone differs"
    );
    assert_eq!(
        parse(&data[..head.len - 1]),
        Ok(None),
        "complete one byte early"
    );
    Some(head)
}

/// The values of the fields called `name`.
fn values<'a>(data: &'a [u8], head: &'a Head, name: &'a str) -> Vec<&'a [u8]> {
    head.fields
        .iter()
        .filter(|(n, _)| data[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| &data[v.clone()])
        .collect()
}

/// The comma-separated elements of a field value, without surrounding whitespace.
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|e| e.trim_ascii())
}

fn check_request_framing(data: &[u8], head: &Head) {
    let te = values(data, head, "transfer-encoding");
    let cl = values(data, head, "content-length");
    assert!(
        te.is_empty() || cl.is_empty(),
        "Transfer-Encoding with Content-Length accepted"
    );
    match head.framing {
        BodyFraming::Chunked => {
            let last = te
                .iter()
                .flat_map(|v| elements(v))
                .filter(|e| !e.is_empty())
                .last();
            assert!(
                last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")),
                "chunked not last"
            );
        }
        BodyFraming::Length(n) => {
            assert!(te.is_empty() && !cl.is_empty());
            for element in cl.iter().flat_map(|v| elements(v)) {
                let digits = std::str::from_utf8(element)
                    .ok()
                    .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
                assert_eq!(
                    digits.and_then(|d| d.parse::<u64>().ok()),
                    Some(n),
                    "Content-Length {element:?} read as {n}"
                );
            }
        }
        BodyFraming::None => assert!(te.is_empty() && cl.is_empty(), "framing fields ignored"),
        BodyFraming::Close => panic!("a request body cannot run to the close"),
    }
    let hosts = values(data, head, "host");
    assert!(hosts.len() <= 1, "several Host fields accepted");
    if head.minor_version == 1 {
        assert!(
            hosts.first().is_some_and(|h| !h.is_empty()),
            "HTTP/1.1 without a Host accepted"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let request = check(data, parse_request);
    let response = check(data, |b| parse_response(b, false));
    for head in request.iter().chain(response.iter()) {
        for (_, value) in &head.fields {
            let value = &data[value.clone()];
            assert!(
                !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "{value:?}"
            );
        }
    }
    if let Some(head) = &request {
        check_request_framing(data, head);
        if head.framing == BodyFraming::Chunked {
            assert_eq!(head.minor_version, 1, "chunked is HTTP/1.1 only");
        }
    }
    if let Some(head) = check(data, |b| parse_response(b, true)) {
        assert_eq!(
            head.framing,
            BodyFraming::None,
            "a response to HEAD has no body"
        );
        assert_eq!(response.map(|r| r.len), Some(head.len));
    }
});
