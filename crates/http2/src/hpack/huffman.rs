//! The Huffman code of HPACK (RFC 7541 §5.2 and Appendix B).
//!
//! The code is canonical: codes of one length are consecutive, in symbol order, and each
//! length's first code follows from the one before. So the bit length of every symbol is all
//! that is written down here; the codes, and the tables that decode them, are worked out from
//! the lengths when the crate is compiled.

/// The length in bits of the code of every byte value, then of end-of-string (256).
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  // 0..=15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  // 16..=31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  // 32..=47
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  // 48..=63
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  // 64..=79
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  // 80..=95
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  // 96..=111
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  // 112..=127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  // 128..=143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  // 144..=159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  // 160..=175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  // 176..=191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  // 192..=207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  // 208..=223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  // 224..=239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  // 240..=255
    30,  // 256..=256
];

/// The end-of-string symbol, which only ever appears as padding.
const EOS: u16 = 256;

/// The longest code.
const MAX_LEN: usize = 30;

/// The canonical code laid out for encoding and decoding.
struct Code {
    /// The code of each symbol (its low `LENGTHS[symbol]` bits).
    codes: [u32; 257],
    /// Per length: the first code of that length, how many codes it has, and where its
    /// symbols start in `symbols`.
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    start: [u16; MAX_LEN + 1],
    /// The symbols ordered by code.
    symbols: [u16; 257],
}

const fn layout() -> Code {
    let mut c = Code {
        codes: [0; 257],
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        start: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut next = 0u32;
    let mut placed = 0usize;
    let mut len = 1;
    while len <= MAX_LEN {
        c.first[len] = next;
        c.start[len] = placed as u16;
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                c.codes[sym] = next;
                c.symbols[placed] = sym as u16;
                c.count[len] += 1;
                placed += 1;
                next += 1;
            }
            sym += 1;
        }
        next <<= 1;
        len += 1;
    }
    c
}

static CODE: Code = layout();

/// A Huffman-coded string that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// Decodes `src` onto the end of `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Invalid> {
    let c = &CODE;
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in src {
        for shift in (0..8).rev() {
            code = code << 1 | u32::from(byte >> shift & 1);
            len += 1;
            let index = code.wrapping_sub(c.first[len]);
            if index < c.count[len] {
                let sym = c.symbols[usize::from(c.start[len]) + index as usize];
                if sym == EOS {
                    // §5.2: a decoder must treat an encoded end-of-string as an error.
                    return Err(Invalid);
                }
                dst.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                return Err(Invalid);
            }
        }
    }
    // What is left is padding: fewer than 8 bits, all ones (the start of end-of-string).
    if len > 7 || code != (1 << len) - 1 {
        return Err(Invalid);
    }
    Ok(())
}

/// How many bytes `src` takes Huffman-coded.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

/// Huffman-codes `src` onto the end of `dst`, padded with ones to a whole byte.
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut bits = 0u64;
    let mut held = 0u32;
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        bits = bits << len | u64::from(CODE.codes[usize::from(b)]);
        held += len;
        while held >= 8 {
            held -= 8;
            dst.push((bits >> held) as u8);
        }
        bits &= (1 << held) - 1;
    }
    if held > 0 {
        let pad = 8 - held;
        dst.push((bits << pad | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_laid_out_codes_are_those_of_the_rfc() {
        // A few codes from RFC 7541 Appendix B, short and long.
        assert_eq!(
            (CODE.codes[b'0' as usize], LENGTHS[b'0' as usize]),
            (0x0, 5)
        );
        assert_eq!(
            (CODE.codes[b'a' as usize], LENGTHS[b'a' as usize]),
            (0x3, 5)
        );
        assert_eq!(
            (CODE.codes[b' ' as usize], LENGTHS[b' ' as usize]),
            (0x14, 6)
        );
        assert_eq!(
            (CODE.codes[b'A' as usize], LENGTHS[b'A' as usize]),
            (0x21, 6)
        );
        assert_eq!((CODE.codes[0], LENGTHS[0]), (0x1ff8, 13));
        assert_eq!((CODE.codes[255], LENGTHS[255]), (0x3ffffee, 26));
        assert_eq!((CODE.codes[256], LENGTHS[256]), (0x3fffffff, 30));
        // Every code is used exactly once: the lengths fill the code space (Kraft's equality).
        let space: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - l as usize))
            .sum();
        assert_eq!(space, 1 << MAX_LEN);
    }

    #[test]
    fn the_rfc_examples_decode_and_encode() {
        // RFC 7541 C.4.1, C.4.3 and C.6.1.
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ];
        for (coded, text) in cases {
            let coded = hex(coded);
            let mut out = Vec::new();
            decode(&coded, &mut out).unwrap();
            assert_eq!(out, text.as_bytes(), "{text}");
            let mut back = Vec::new();
            encode(text.as_bytes(), &mut back);
            assert_eq!(back, coded, "{text}");
            assert_eq!(encoded_len(text.as_bytes()), coded.len(), "{text}");
        }
    }

    #[test]
    fn every_byte_value_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        encode(&all, &mut coded);
        let mut out = Vec::new();
        decode(&coded, &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_end_of_string_are_refused() {
        let mut out = Vec::new();
        // 'a' (00011) padded with zeros instead of ones.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(Invalid));
        // A whole byte of padding after a complete symbol.
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(Invalid));
        // The end-of-string code itself, in full.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xfc], &mut out), Err(Invalid));
        // Padding alone, up to 7 bits, is an empty string.
        out.clear();
        assert_eq!(decode(&[], &mut out), Ok(()));
        assert!(out.is_empty());
    }
}
