//! The HTTP/2 server connection fed any frames after a valid preface and SETTINGS, in one piece
//! and cut into pieces of one size. Nothing may panic; how the bytes are cut changes neither
//! the events nor the bytes written; the output always reads back as whole frames; a connection
//! that failed is done; answering every request keeps all of that true.
//!
//! Input layout: byte 0 = piece size (low 6 bits, plus 1) and whether requests are answered
//! (bit 7); the rest follows the client's preface and empty SETTINGS.
#![no_main]

use bytes::{Bytes, BytesMut};
use http2::frame;
use http2::server::{Config, Connection, Event, PREFACE};
use libfuzzer_sys::fuzz_target;

/// Everything the connection did with `wire` fed in pieces of `piece` bytes.
fn run(wire: &[u8], piece: usize, answer: bool) -> (Vec<String>, Vec<u8>, bool) {
    let config = Config {
        stream_window: 64,
        connection_window: 128,
        max_header_list: 512,
        ..Config::default()
    };
    let mut conn = Connection::new(config);
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let mut failed = false;
    for part in wire.chunks(piece) {
        buf.extend_from_slice(part);
        if conn.receive(&mut buf, &mut events).is_err() {
            failed = true;
            break;
        }
        // Events are acted on once all the input is in, so that the cut cannot change when an
        // answer goes out relative to the frames.
    }
    for event in &events {
        seen.push(format!("{event:?}"));
    }
    if answer && !failed {
        for event in events {
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
    let out = conn.output().to_vec();
    let mut check = BytesMut::from(&out[..]);
    while let Some(_frame) = frame::read(&mut check, (1 << 24) - 1).expect("output reads back") {}
    assert!(check.is_empty(), "output ends on a frame boundary");
    if failed {
        assert!(conn.is_done(), "a failed connection is done");
    }
    (seen, out, failed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(control & 0x3f) + 1;
    let answer = control & 0x80 != 0;
    let mut wire = PREFACE.to_vec();
    let mut settings = BytesMut::new();
    frame::put_settings(&mut settings, &[]);
    wire.extend_from_slice(&settings);
    wire.extend_from_slice(rest);
    let whole = run(&wire, wire.len().max(1), answer);
    let cut = run(&wire, piece, answer);
    assert_eq!(
        whole, cut,
        "cutting the input changed what the connection did"
    );
});
