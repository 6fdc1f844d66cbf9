use super::*;
use crate::frame::{flag, kind};

/// A client's side of the wire, written by hand.
struct Client {
    enc: hpack::Encoder,
    wire: BytesMut,
}

impl Client {
    /// The preface and an empty SETTINGS.
    fn new() -> Self {
        Client::with_settings(&[])
    }

    fn with_settings(values: &[(u16, u32)]) -> Self {
        let mut wire = BytesMut::from(PREFACE);
        frame::put_settings(&mut wire, values);
        Client {
            enc: hpack::Encoder::default(),
            wire,
        }
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> BytesMut {
        let mut block = BytesMut::new();
        for (n, v) in fields {
            self.enc
                .field(n.as_bytes(), v.as_bytes(), false, &mut block);
        }
        block
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let block = self.block(fields);
        frame::put_headers(&mut self.wire, stream, &block, end_stream, 16_384);
    }

    fn get(&mut self, stream: u32, path: &str) {
        self.headers(stream, &get(path), true);
    }

    fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        frame::put_data(&mut self.wire, stream, data, end_stream);
    }
}

fn get(path: &str) -> Vec<(&'static str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a.example"),
        (":path", path),
    ]
}

/// Feeds what the client wrote; returns the events, or the connection error.
fn feed(conn: &mut Connection, client: &mut Client) -> Result<Vec<Event>, Reason> {
    let mut events = Vec::new();
    conn.receive(&mut client.wire, &mut events).map(|()| events)
}

/// Every frame in the connection's output, which is taken.
fn sent(conn: &mut Connection) -> Vec<Frame> {
    let mut out = std::mem::take(conn.output());
    let mut frames = Vec::new();
    while let Some(f) = frame::read(&mut out, (1 << 24) - 1).unwrap() {
        frames.push(f);
    }
    assert!(out.is_empty());
    frames
}

/// A connection past its handshake, with its opening frames taken from the output.
fn open(config: Config, client: &mut Client) -> Connection {
    let mut conn = Connection::new(config);
    assert_eq!(feed(&mut conn, client), Ok(vec![Event::Window]));
    let frames = sent(&mut conn);
    assert!(matches!(frames[0], Frame::Settings { ack: false, .. }));
    assert!(frames.contains(&Frame::Settings {
        ack: true,
        values: vec![]
    }));
    conn
}

fn decode_block(block: &Bytes) -> Vec<(String, String)> {
    let mut out = Vec::new();
    hpack::Decoder::default()
        .decode(block, usize::MAX, |f| {
            out.push((
                String::from_utf8(f.name.to_vec()).unwrap(),
                String::from_utf8(f.value.to_vec()).unwrap(),
            ))
        })
        .unwrap();
    out
}

#[test]
fn a_request_is_read_and_its_answer_written() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    client.get(1, "/hello");
    let events = feed(&mut conn, &mut client).unwrap();
    let [Event::Request {
        stream: 1,
        head,
        end_stream: true,
    }] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(&head.method[..], b"GET");
    assert_eq!(head.path.as_deref(), Some(&b"/hello"[..]));
    assert_eq!(head.authority.as_deref(), Some(&b"a.example"[..]));
    conn.send_head(
        1,
        200,
        [(&b"content-type"[..], &b"text/plain"[..], false)].into_iter(),
        false,
    );
    let mut body = Bytes::from_static(b"hi");
    assert!(conn.send_data(1, &mut body, true));
    let frames = sent(&mut conn);
    let Frame::Headers {
        stream: 1,
        end_stream: false,
        end_headers: true,
        block,
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(
        decode_block(block),
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "text/plain".into())
        ]
    );
    assert_eq!(
        frames[1],
        Frame::Data {
            stream: 1,
            end_stream: true,
            data: Bytes::from_static(b"hi"),
            flow: 2
        }
    );
    assert_eq!(conn.open_streams(), 0);
}

#[test]
fn a_request_body_arrives_and_its_window_is_given_back_when_taken() {
    let mut client = Client::new();
    let config = Config {
        stream_window: 100,
        connection_window: 100,
        ..Config::default()
    };
    let mut conn = open(config, &mut client);
    let mut head = get("/up");
    head[0].1 = "POST";
    head.push(("content-length", "60"));
    client.headers(1, &head, false);
    client.data(1, &[b'x'; 60], false);
    let events = feed(&mut conn, &mut client).unwrap();
    assert!(
        matches!(events[1], Event::Data { stream: 1, ref data, end_stream: false } if data.len() == 60)
    );
    // Nothing is given back before it is taken; half a window taken is given back.
    assert!(sent(&mut conn).is_empty());
    conn.release(1, 60);
    let updates = sent(&mut conn);
    assert!(updates.contains(&Frame::WindowUpdate {
        stream: 1,
        increment: 60
    }));
    client.data(1, b"", true);
    let events = feed(&mut conn, &mut client).unwrap();
    assert_eq!(
        events,
        vec![Event::Data {
            stream: 1,
            data: Bytes::new(),
            end_stream: true
        }]
    );
}

#[test]
fn a_client_sending_past_its_window_has_its_stream_reset() {
    let mut client = Client::new();
    let config = Config {
        stream_window: 10,
        ..Config::default()
    };
    let mut conn = open(config, &mut client);
    let mut head = get("/up");
    head[0].1 = "POST";
    client.headers(1, &head, false);
    client.data(1, &[0; 11], false);
    let events = feed(&mut conn, &mut client).unwrap();
    assert_eq!(
        events[1],
        Event::Reset {
            stream: 1,
            reason: Reason::FLOW_CONTROL_ERROR
        }
    );
    assert!(sent(&mut conn).contains(&Frame::Reset {
        stream: 1,
        reason: Reason::FLOW_CONTROL_ERROR
    }));
}

#[test]
fn a_response_body_waits_for_the_clients_window() {
    let mut client = Client::with_settings(&[(setting::INITIAL_WINDOW_SIZE, 10)]);
    let mut conn = open(Config::default(), &mut client);
    client.get(1, "/");
    feed(&mut conn, &mut client).unwrap();
    conn.send_head(1, 200, std::iter::empty(), false);
    let mut body = Bytes::from_static(b"0123456789abcdefghijklmno");
    assert!(!conn.send_data(1, &mut body, true));
    assert_eq!(&body[..], b"abcdefghijklmno");
    assert_eq!(conn.capacity(1), 0);
    frame::put_window_update(&mut client.wire, 1, 5);
    assert_eq!(feed(&mut conn, &mut client), Ok(vec![Event::Window]));
    assert!(!conn.send_data(1, &mut body, true));
    // A larger initial window applies to the open stream too.
    frame::put_settings(&mut client.wire, &[(setting::INITIAL_WINDOW_SIZE, 1000)]);
    feed(&mut conn, &mut client).unwrap();
    assert!(conn.send_data(1, &mut body, true));
    let data: Vec<_> = sent(&mut conn)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Data {
                data, end_stream, ..
            } => Some((data, end_stream)),
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        vec![
            (Bytes::from_static(b"0123456789"), false),
            (Bytes::from_static(b"abcde"), false),
            (Bytes::from_static(b"fghijklmno"), true),
        ]
    );
}

#[test]
fn streams_past_the_limit_are_refused() {
    let mut client = Client::new();
    let config = Config {
        max_concurrent_streams: 1,
        ..Config::default()
    };
    let mut conn = open(config, &mut client);
    client.get(1, "/a");
    client.get(3, "/b");
    let events = feed(&mut conn, &mut client).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        sent(&mut conn),
        vec![Frame::Reset {
            stream: 3,
            reason: Reason::REFUSED_STREAM
        }]
    );
}

#[test]
fn malformed_requests_are_reset_and_never_seen() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    client.headers(1, &[(":method", "GET"), (":path", "/")], true);
    let mut head = get("/");
    head.push(("connection", "close"));
    client.headers(3, &head, true);
    let mut head = get("/");
    head.push(("content-length", "5"));
    client.headers(5, &head, true);
    assert_eq!(feed(&mut conn, &mut client), Ok(vec![]));
    let resets: Vec<_> = sent(&mut conn);
    assert_eq!(
        resets,
        [1, 3, 5]
            .map(|stream| Frame::Reset {
                stream,
                reason: Reason::PROTOCOL_ERROR
            })
            .to_vec()
    );
}

#[test]
fn a_body_unlike_its_declared_length_resets_the_stream() {
    for (sent_len, end) in [(4, true), (6, false)] {
        let mut client = Client::new();
        let mut conn = open(Config::default(), &mut client);
        let mut head = get("/");
        head[0].1 = "PUT";
        head.push(("content-length", "5"));
        client.headers(1, &head, false);
        client.data(1, &vec![0; sent_len], end);
        let events = feed(&mut conn, &mut client).unwrap();
        assert_eq!(
            events.last(),
            Some(&Event::Reset {
                stream: 1,
                reason: Reason::PROTOCOL_ERROR
            }),
            "{sent_len} bytes"
        );
    }
}

#[test]
fn a_head_over_the_list_limit_is_answered_431() {
    let mut client = Client::new();
    let config = Config {
        max_header_list: 200,
        ..Config::default()
    };
    let mut conn = open(config, &mut client);
    let long = "v".repeat(300);
    let mut head = get("/");
    head.push(("x-long", &long));
    client.headers(1, &head, true);
    assert_eq!(feed(&mut conn, &mut client), Ok(vec![]));
    let frames = sent(&mut conn);
    let Frame::Headers {
        stream: 1,
        end_stream: true,
        block,
        ..
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(decode_block(block), vec![(":status".into(), "431".into())]);
}

#[test]
fn a_client_must_open_with_the_preface_and_settings() {
    let mut conn = Connection::new(Config::default());
    let mut wire = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    assert_eq!(
        conn.receive(&mut wire, &mut Vec::new()),
        Err(Reason::PROTOCOL_ERROR)
    );
    assert!(sent(&mut conn).contains(&Frame::GoAway {
        last_stream: 0,
        reason: Reason::PROTOCOL_ERROR
    }));
    let mut conn = Connection::new(Config::default());
    let mut wire = BytesMut::from(PREFACE);
    frame::put_ping(&mut wire, false, [0; 8]);
    assert_eq!(
        conn.receive(&mut wire, &mut Vec::new()),
        Err(Reason::PROTOCOL_ERROR)
    );
    // The preface may arrive a byte at a time.
    let mut conn = Connection::new(Config::default());
    let mut client = Client::new();
    let whole = std::mem::take(&mut client.wire);
    let mut events = Vec::new();
    let mut wire = BytesMut::new();
    for b in whole.iter() {
        wire.extend_from_slice(&[*b]);
        conn.receive(&mut wire, &mut events).unwrap();
    }
    assert_eq!(events, vec![Event::Window]);
}

#[test]
fn header_blocks_span_continuations_but_not_floods() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    let block = client.block(&get("/split"));
    let (a, b) = block.split_at(3);
    frame::put_header(
        &mut client.wire,
        a.len(),
        kind::HEADERS,
        flag::END_STREAM,
        1,
    );
    client.wire.extend_from_slice(a);
    frame::put_header(
        &mut client.wire,
        b.len(),
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
    );
    client.wire.extend_from_slice(b);
    let events = feed(&mut conn, &mut client).unwrap();
    assert!(matches!(events[..], [Event::Request { stream: 1, .. }]));
    // A block that never ends.
    frame::put_header(&mut client.wire, a.len(), kind::HEADERS, 0, 3);
    client.wire.extend_from_slice(a);
    for _ in 0..100 {
        frame::put_header(&mut client.wire, 0, kind::CONTINUATION, 0, 3);
    }
    assert_eq!(feed(&mut conn, &mut client), Err(Reason::ENHANCE_YOUR_CALM));
    // Another frame inside a block.
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    frame::put_header(&mut client.wire, a.len(), kind::HEADERS, 0, 1);
    client.wire.extend_from_slice(a);
    frame::put_ping(&mut client.wire, false, [0; 8]);
    assert_eq!(feed(&mut conn, &mut client), Err(Reason::PROTOCOL_ERROR));
}

#[test]
fn a_client_reset_ends_the_stream_and_late_data_is_dropped() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    let mut head = get("/");
    head[0].1 = "POST";
    client.headers(1, &head, false);
    frame::put_reset(&mut client.wire, 1, Reason::CANCEL);
    client.data(1, b"late", true);
    let events = feed(&mut conn, &mut client).unwrap();
    assert_eq!(
        events[1..],
        [Event::Reset {
            stream: 1,
            reason: Reason::CANCEL
        }]
    );
    assert_eq!(conn.open_streams(), 0);
    // Answers to it go nowhere.
    conn.send_head(1, 200, std::iter::empty(), true);
    assert!(sent(&mut conn).is_empty());
}

#[test]
fn going_away_answers_open_streams_and_ignores_new_ones() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    client.get(1, "/");
    feed(&mut conn, &mut client).unwrap();
    conn.go_away(Reason::NO_ERROR);
    client.get(3, "/late");
    assert_eq!(feed(&mut conn, &mut client), Ok(vec![]));
    assert!(!conn.is_done());
    conn.send_head(1, 204, std::iter::empty(), true);
    assert!(conn.is_done());
    let frames = sent(&mut conn);
    assert_eq!(
        frames[0],
        Frame::GoAway {
            last_stream: 1,
            reason: Reason::NO_ERROR
        }
    );
}

#[test]
fn pings_are_answered_and_trailers_end_a_body() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    frame::put_ping(&mut client.wire, false, *b"pingpong");
    let mut head = get("/grpc");
    head[0].1 = "POST";
    head.push(("te", "trailers"));
    client.headers(1, &head, false);
    client.data(1, b"msg", false);
    client.headers(1, &[("grpc-timeout", "1S")], true);
    let events = feed(&mut conn, &mut client).unwrap();
    assert!(matches!(
        &events[2],
        Event::Trailers { stream: 1, fields } if &fields[0].name[..] == b"grpc-timeout"
    ));
    assert!(sent(&mut conn).contains(&Frame::Ping {
        ack: true,
        payload: *b"pingpong"
    }));
    conn.send_head(1, 200, std::iter::empty(), false);
    conn.send_trailers(1, [(&b"grpc-status"[..], &b"0"[..], false)].into_iter());
    let frames = sent(&mut conn);
    assert!(matches!(
        frames[1],
        Frame::Headers {
            end_stream: true,
            ..
        }
    ));
    assert_eq!(conn.open_streams(), 0);
}

#[test]
fn a_client_that_keeps_erring_loses_the_connection() {
    let mut client = Client::new();
    let config = Config {
        max_local_resets: 5,
        ..Config::default()
    };
    let mut conn = open(config, &mut client);
    for i in 0..6 {
        client.headers(1 + 2 * i, &[(":method", "GET")], true);
    }
    assert_eq!(feed(&mut conn, &mut client), Err(Reason::ENHANCE_YOUR_CALM));
}

#[test]
fn a_response_head_larger_than_a_frame_goes_out_in_continuations() {
    let mut client = Client::new();
    let mut conn = open(Config::default(), &mut client);
    client.get(1, "/");
    feed(&mut conn, &mut client).unwrap();
    let big = vec![b'v'; 40_000];
    conn.send_head(1, 200, [(&b"x-big"[..], &big[..], false)].into_iter(), true);
    let frames = sent(&mut conn);
    let mut block = BytesMut::new();
    for (i, f) in frames.iter().enumerate() {
        match f {
            Frame::Headers {
                end_headers: false,
                end_stream: true,
                block: b,
                ..
            } if i == 0 => block.extend_from_slice(b),
            Frame::Continuation {
                end_headers,
                block: b,
                ..
            } if i > 0 => {
                assert_eq!(*end_headers, i == frames.len() - 1);
                block.extend_from_slice(b);
            }
            other => panic!("frame {i}: {other:?}"),
        }
    }
    assert_eq!(frames.len(), 3);
    let fields = decode_block(&block.freeze());
    assert_eq!(fields[1].1.len(), 40_000);
}
