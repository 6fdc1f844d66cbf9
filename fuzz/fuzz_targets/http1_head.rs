//! HTTP/1.1 request and response heads parsed from any bytes. Nothing may panic; a parsed head
//! is no longer than the input and every range it reports lies within it; parsing the same
//! bytes again, or only the head's own bytes, gives the same result; a head is incomplete one
//! byte before its end, so a head split across reads parses as it does in one piece.
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

fuzz_target!(|data: &[u8]| {
    if let Some(head) = check(data, parse_request) {
        assert_ne!(
            head.framing,
            BodyFraming::Close,
            "a request body cannot run to the close"
        );
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
    }
    check(data, |b| parse_response(b, false));
});
