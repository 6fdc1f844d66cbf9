use super::*;

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    put_header(&mut b, payload.len(), kind, flags, stream);
    b.extend_from_slice(payload);
    b
}

fn one(mut b: BytesMut) -> Result<Option<Frame>, Error> {
    read(&mut b, DEFAULT_MAX_FRAME_SIZE)
}

#[test]
fn written_frames_read_back() {
    let mut b = BytesMut::new();
    put_settings(&mut b, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
    put_settings_ack(&mut b);
    put_ping(&mut b, true, *b"12345678");
    put_window_update(&mut b, 3, 1000);
    put_reset(&mut b, 5, Reason::CANCEL);
    put_goaway(&mut b, 7, Reason::ENHANCE_YOUR_CALM);
    put_data(&mut b, 9, b"body", true);
    let max = DEFAULT_MAX_FRAME_SIZE;
    let want = [
        Frame::Settings {
            ack: false,
            values: vec![(setting::MAX_CONCURRENT_STREAMS, 100)],
        },
        Frame::Settings {
            ack: true,
            values: vec![],
        },
        Frame::Ping {
            ack: true,
            payload: *b"12345678",
        },
        Frame::WindowUpdate {
            stream: 3,
            increment: 1000,
        },
        Frame::Reset {
            stream: 5,
            reason: Reason::CANCEL,
        },
        Frame::GoAway {
            last_stream: 7,
            reason: Reason::ENHANCE_YOUR_CALM,
        },
        Frame::Data {
            stream: 9,
            end_stream: true,
            data: Bytes::from_static(b"body"),
            flow: 4,
        },
    ];
    for w in want {
        assert_eq!(read(&mut b, max), Ok(Some(w)));
    }
    assert_eq!(read(&mut b, max), Ok(None));
}

#[test]
fn a_long_header_block_is_split_into_continuations() {
    let block: Vec<u8> = (0..40u8).collect();
    let mut b = BytesMut::new();
    put_headers(&mut b, 1, &block, true, 16);
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some(f) = read(&mut b, 16).unwrap() {
        frames += 1;
        match f {
            Frame::Headers {
                stream: 1,
                end_stream: true,
                end_headers: false,
                block,
            } => got.extend_from_slice(&block),
            Frame::Continuation {
                stream: 1,
                end_headers,
                block,
            } => {
                got.extend_from_slice(&block);
                assert_eq!(end_headers, frames == 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((frames, got), (3, block));
}

#[test]
fn a_partial_frame_waits_for_the_rest() {
    let whole = raw(kind::PING, 0, 0, b"abcdefgh");
    for cut in [0, 5, 9, 16] {
        let mut part = BytesMut::from(&whole[..cut]);
        assert_eq!(read(&mut part, DEFAULT_MAX_FRAME_SIZE), Ok(None), "{cut}");
        assert_eq!(part.len(), cut, "nothing is taken from a partial frame");
    }
}

#[test]
fn padding_and_priority_are_taken_off() {
    // Padded DATA: pad length 3, "hi", three bytes of padding.
    let got = one(raw(kind::DATA, flag::PADDED, 1, b"\x03hi\0\0\0"));
    assert_eq!(
        got,
        Ok(Some(Frame::Data {
            stream: 1,
            end_stream: false,
            data: Bytes::from_static(b"hi"),
            flow: 6,
        }))
    );
    // HEADERS with padding and priority.
    let got = one(raw(
        kind::HEADERS,
        flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
        3,
        b"\x01\x00\x00\x00\x01\x10\x82\0",
    ));
    assert_eq!(
        got,
        Ok(Some(Frame::Headers {
            stream: 3,
            end_stream: false,
            end_headers: true,
            block: Bytes::from_static(b"\x82"),
        }))
    );
}

#[test]
fn malformed_frames_are_the_errors_the_rfc_names() {
    use Reason as R;
    let conn = Error::Connection;
    let cases: Vec<(BytesMut, Error)> = vec![
        (raw(kind::DATA, 0, 0, b"x"), conn(R::PROTOCOL_ERROR)),
        (
            raw(kind::DATA, flag::PADDED, 1, b"\x05ab"),
            conn(R::PROTOCOL_ERROR),
        ),
        (raw(kind::HEADERS, 0, 0, b""), conn(R::PROTOCOL_ERROR)),
        (
            raw(kind::HEADERS, flag::PRIORITY, 3, b"\0\0\0\x03\x10"),
            Error::Stream(3, R::PROTOCOL_ERROR),
        ),
        (
            raw(kind::PRIORITY, 0, 1, b"\0\0\0"),
            Error::Stream(1, R::FRAME_SIZE_ERROR),
        ),
        (
            raw(kind::RST_STREAM, 0, 1, b"\0\0"),
            conn(R::FRAME_SIZE_ERROR),
        ),
        (
            raw(kind::RST_STREAM, 0, 0, b"\0\0\0\0"),
            conn(R::PROTOCOL_ERROR),
        ),
        (raw(kind::SETTINGS, 0, 1, b""), conn(R::PROTOCOL_ERROR)),
        (
            raw(kind::SETTINGS, flag::ACK, 0, b"\0\x01\0\0\0\0"),
            conn(R::FRAME_SIZE_ERROR),
        ),
        (
            raw(kind::SETTINGS, 0, 0, b"\0\x01\0"),
            conn(R::FRAME_SIZE_ERROR),
        ),
        (
            raw(kind::SETTINGS, 0, 0, b"\0\x02\0\0\0\x02"),
            conn(R::PROTOCOL_ERROR),
        ),
        (
            raw(kind::SETTINGS, 0, 0, b"\0\x04\x80\0\0\0"),
            conn(R::FLOW_CONTROL_ERROR),
        ),
        (
            raw(kind::SETTINGS, 0, 0, b"\0\x05\0\0\x10\0"),
            conn(R::PROTOCOL_ERROR),
        ),
        (raw(kind::PING, 0, 0, b"short"), conn(R::FRAME_SIZE_ERROR)),
        (raw(kind::PING, 0, 1, b"12345678"), conn(R::PROTOCOL_ERROR)),
        (raw(kind::GOAWAY, 0, 0, b"1234"), conn(R::FRAME_SIZE_ERROR)),
        (
            raw(kind::WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
            conn(R::PROTOCOL_ERROR),
        ),
        (
            raw(kind::WINDOW_UPDATE, 0, 1, b"\0\0\0\0"),
            Error::Stream(1, R::PROTOCOL_ERROR),
        ),
        (raw(kind::CONTINUATION, 0, 0, b""), conn(R::PROTOCOL_ERROR)),
        (
            raw(kind::PING, 0, 0, &[0; 16_385]),
            conn(R::FRAME_SIZE_ERROR),
        ),
    ];
    for (frame, want) in cases {
        let head = format!("{:02x?}", &frame[..9.min(frame.len())]);
        assert_eq!(one(frame), Err(want), "{head}");
    }
}

#[test]
fn unknown_frame_types_are_read_and_skipped() {
    let mut b = raw(0xfa, 0xff, 1, b"whatever");
    b.extend_from_slice(&raw(kind::PING, 0, 0, b"12345678"));
    assert_eq!(
        read(&mut b, DEFAULT_MAX_FRAME_SIZE),
        Ok(Some(Frame::Unknown {
            kind: 0xfa,
            stream: 1
        }))
    );
    assert!(matches!(
        read(&mut b, DEFAULT_MAX_FRAME_SIZE),
        Ok(Some(Frame::Ping { ack: false, .. }))
    ));
}
