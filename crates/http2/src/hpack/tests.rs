use super::*;

fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn decode_all(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let decoded = d
        .decode(&hex(block), usize::MAX, |f| {
            out.push((
                String::from_utf8(f.name.to_vec()).unwrap(),
                String::from_utf8(f.value.to_vec()).unwrap(),
            ))
        })
        .unwrap();
    assert!(!decoded.oversize);
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// RFC 7541 C.3 (raw strings) and C.4 (the same requests Huffman-coded): three requests on one
/// connection, each reusing what the one before added to the table.
#[test]
fn the_rfc_request_examples_decode_with_their_table() {
    for blocks in [
        [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ],
        [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ],
    ] {
        let mut d = Decoder::default();
        assert_eq!(
            decode_all(&mut d, blocks[0]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!((d.table.len(), d.table.size()), (1, 57));
        assert_eq!(
            decode_all(&mut d, blocks[1]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!((d.table.len(), d.table.size()), (2, 110));
        assert_eq!(
            decode_all(&mut d, blocks[2]),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!((d.table.len(), d.table.size()), (3, 164));
    }
}

/// RFC 7541 C.5: responses through a 256-byte table, which evicts its oldest entries.
#[test]
fn the_rfc_response_examples_evict_the_oldest_entries() {
    let mut d = Decoder::new(256);
    assert_eq!(
        decode_all(
            &mut d,
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d"
        ),
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!((d.table.len(), d.table.size()), (4, 222));
    assert_eq!(
        decode_all(&mut d, "4803 3330 37c1 c0bf"),
        pairs(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ])
    );
    assert_eq!((d.table.len(), d.table.size()), (4, 222));
    assert_eq!(
        decode_all(
            &mut d,
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31"
        ),
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
            ),
        ])
    );
    assert_eq!((d.table.len(), d.table.size()), (3, 215));
}

#[test]
fn broken_blocks_are_compression_errors() {
    let cases: [(&str, DecodeError); 9] = [
        // Index 0, and one past the (empty) dynamic table.
        ("80", DecodeError::Index(0)),
        ("be", DecodeError::Index(62)),
        // A literal whose value runs past the block.
        ("04 05 6162", DecodeError::Truncated),
        // A name index with its continuation byte missing.
        ("0f", DecodeError::Truncated),
        // An integer of many continuation bytes.
        ("0fff ffff ffff ff01", DecodeError::Integer),
        // An integer padded with continuation bytes that add nothing.
        ("0f80 8080 8080 8080 8080 8001", DecodeError::Integer),
        // Huffman-coded 'a' padded with zeros.
        ("04 81 18", DecodeError::Huffman),
        // A table size update above the 4096 allowed, and one after a field.
        ("3fe2 1f", DecodeError::TableSize(4096 + 1)),
        ("82 20", DecodeError::LateTableSize),
    ];
    for (block, want) in cases {
        let got = Decoder::default().decode(&hex(block), usize::MAX, |_| {});
        assert_eq!(got, Err(want), "{block}");
    }
}

#[test]
fn a_table_size_update_shrinks_the_table_and_may_be_zero() {
    let mut d = Decoder::default();
    decode_all(&mut d, "4004 6e61 6d65 0576 616c 7565");
    assert_eq!(d.table.len(), 1);
    // Size 0 first (it empties the table), then back to 4096, then an indexed static field.
    assert_eq!(
        decode_all(&mut d, "20 3fe1 1f 82"),
        pairs(&[(":method", "GET")])
    );
    assert_eq!((d.table.len(), d.table_size()), (0, 4096));
}

#[test]
fn a_list_over_the_limit_is_decoded_but_not_handed_on() {
    let mut d = Decoder::default();
    let mut names = Vec::new();
    // `:method: GET` is 42 bytes as a list entry, `name: value` adds 41 to the table.
    let block = hex("82 4004 6e61 6d65 0576 616c 7565 84");
    let got = d.decode(&block, 50, |f| names.push(f.name)).unwrap();
    assert!(got.oversize);
    assert_eq!(names, vec![Bytes::from_static(b":method")]);
    // The table still took the literal: the next block may refer to it.
    assert_eq!(decode_all(&mut d, "be"), pairs(&[("name", "value")]));
}

#[test]
fn never_indexed_literals_are_marked_sensitive() {
    let mut d = Decoder::default();
    let mut seen = Vec::new();
    // `authorization` (static 23) never indexed, then `cookie` (32) without indexing.
    d.decode(&hex("1f08 0373 6563 0f11 0161"), usize::MAX, |f| {
        seen.push((f.name, f.sensitive))
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            (Bytes::from_static(b"authorization"), true),
            (Bytes::from_static(b"cookie"), false)
        ]
    );
}

#[test]
fn what_the_encoder_writes_decodes_to_the_same_fields() {
    let mut e = Encoder::default();
    let mut block = BytesMut::new();
    for status in [200, 204, 206, 304, 400, 404, 500, 101, 302, 503] {
        e.status(status, &mut block);
    }
    e.field(b"content-type", b"text/plain", false, &mut block);
    e.field(
        b"x-long-name-that-is-not-static",
        &[b'v'; 300],
        false,
        &mut block,
    );
    e.field(b"set-cookie", b"a=b", true, &mut block);
    let mut d = Decoder::default();
    let mut out = Vec::new();
    d.decode(&block.freeze(), usize::MAX, |f| out.push(f))
        .unwrap();
    let statuses: Vec<_> = out[..10].iter().map(|f| f.value.clone()).collect();
    assert_eq!(
        statuses,
        ["200", "204", "206", "304", "400", "404", "500", "101", "302", "503"]
            .map(|s| Bytes::from_static(s.as_bytes()))
    );
    assert!(out[..10].iter().all(|f| &f.name[..] == b":status"));
    assert_eq!(&out[10].value[..], b"text/plain");
    assert_eq!(&out[11].name[..], b"x-long-name-that-is-not-static");
    assert_eq!(out[11].value.len(), 300);
    assert!(out[12].sensitive && !out[11].sensitive);
    // Nothing was added to the table.
    assert_eq!(d.table.len(), 0);
}
