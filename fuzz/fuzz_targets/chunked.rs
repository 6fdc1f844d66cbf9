//! The chunked-body decoder fed any bytes, in one piece and split at arbitrary points. Nothing
//! may panic; how the bytes are split changes neither the body nor the verdict (ended after n
//! bytes, still going, or refused with the same error); scanning agrees with decoding; a decoder
//! that has ended or failed stays so.
//!
//! Input layout: byte 0 = number of cut points (low 4 bits) and the size limit (bits 4-5:
//! none, 1, 16, 4096 bytes); then 2 bytes per cut point (big-endian offsets into the body);
//! the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::fuzzing::Chunked;

/// (bytes consumed, body, verdict): Ok(true) ended, Ok(false) wants more, Err refused.
type Outcome = (usize, Vec<u8>, Result<bool, String>);

fn decode(limit: u64, pieces: &[&[u8]]) -> Outcome {
    let mut chunked = Chunked::with_limit(limit);
    let mut body = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        match chunked.decode(piece, &mut body) {
            Ok((n, done)) => {
                assert!(n <= piece.len());
                consumed += n;
                if done {
                    assert_eq!(chunked.decode(b"0\r\n\r\n", &mut body), Ok((0, true)));
                    return (consumed, body, Ok(true));
                }
                assert_eq!(n, piece.len(), "stopped early without ending");
            }
            Err(e) => {
                assert_eq!(chunked.decode(b"0\r\n\r\n", &mut body), Err(e.clone()));
                return (consumed, body, Err(e));
            }
        }
    }
    (consumed, body, Ok(false))
}

fn scan(limit: u64, input: &[u8]) -> Result<(usize, bool), String> {
    Chunked::with_limit(limit).scan(input)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(control & 0x0f);
    let limit = [0, 1, 16, 4096][usize::from(control >> 4) & 3];
    let (cut_bytes, body) = rest.split_at((cuts * 2).min(rest.len()));
    let mut points: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        pieces.push(&body[start..point]);
        start = point;
    }
    pieces.push(&body[start..]);

    let whole = decode(limit, &[body]);
    let split = decode(limit, &pieces);
    assert_eq!(whole.1, split.1, "the body depends on how it was split");
    assert_eq!(whole.2, split.2, "the verdict depends on how it was split");
    if whole.2.is_ok() {
        assert_eq!(
            whole.0, split.0,
            "the body's end depends on how it was split"
        );
    }
    assert!(whole.1.len() <= body.len());
    if limit > 0 {
        assert!(whole.1.len() as u64 <= limit, "the body outgrew the limit");
    }
    match (&whole.2, scan(limit, body)) {
        (Ok(done), Ok((n, scanned))) => assert_eq!((whole.0, *done), (n, scanned)),
        (Err(e), Err(scanned)) => assert_eq!(e, &scanned),
        (decoded, scanned) => panic!("decode gave {decoded:?}, scan {scanned:?}"),
    }
});
