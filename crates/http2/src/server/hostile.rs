//! Any frames a client could send, in any order and cut anywhere: the connection never panics,
//! its output always reads back as whole frames, and once it has failed it stays failed.

use proptest::prelude::*;

use super::*;

/// One frame of any type, flags and (small) stream id, with a short payload.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..11,
        any::<u8>(),
        0u32..8,
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(kind, flags, stream, payload)| {
            let mut b = BytesMut::new();
            frame::put_header(&mut b, payload.len(), kind, flags, stream);
            b.extend_from_slice(&payload);
            b.to_vec()
        })
}

/// A request head on a stream, so that streams do open among the random frames.
fn request_frame() -> impl Strategy<Value = Vec<u8>> {
    (0u32..5, any::<bool>()).prop_map(|(n, end)| {
        let mut block = BytesMut::new();
        let mut enc = hpack::Encoder::default();
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":path", "/")] {
            enc.field(name.as_bytes(), value.as_bytes(), false, &mut block);
        }
        let mut b = BytesMut::new();
        frame::put_headers(&mut b, 2 * n + 1, &block, end, 16_384);
        b.to_vec()
    })
}

proptest! {
    #[test]
    fn hostile_input_never_panics(
        frames in prop::collection::vec(prop_oneof![any_frame(), request_frame()], 0..40),
        cut in 1usize..64,
    ) {
        let mut wire = PREFACE.to_vec();
        let mut settings = BytesMut::new();
        frame::put_settings(&mut settings, &[]);
        wire.extend_from_slice(&settings);
        for f in &frames {
            wire.extend_from_slice(f);
        }
        let mut conn = Connection::new(Config { stream_window: 64, ..Config::default() });
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut failed = false;
        for piece in wire.chunks(cut) {
            buf.extend_from_slice(piece);
            if conn.receive(&mut buf, &mut events).is_err() {
                failed = true;
                break;
            }
            for event in events.drain(..) {
                match event {
                    Event::Request { stream, .. } => {
                        conn.send_head(stream, 200, std::iter::empty(), false);
                        conn.send_data(stream, &mut Bytes::from_static(b"answer"), true);
                    }
                    Event::Data { stream, data, .. } => conn.release(stream, data.len() as u32),
                    _ => {}
                }
            }
        }
        let mut out = std::mem::take(conn.output());
        while let Some(_frame) = frame::read(&mut out, (1 << 24) - 1).expect("output reads back") {}
        prop_assert!(out.is_empty(), "output ends on a frame boundary");
        if failed {
            prop_assert!(conn.is_done());
        }
    }
}
