//! The server side of one HTTP/2 connection as a state machine with no I/O: bytes read from
//! the client go in ([`Connection::receive`]), what happened comes out as [`Event`]s, answers go
//! in as calls ([`Connection::send_head`], [`Connection::send_data`], …), and the bytes to write
//! to the client collect in one buffer ([`Connection::output`]).
//!
//! It keeps the connection's and every stream's flow-control windows in both directions, the
//! HPACK tables, and the stream states of RFC 9113 §5.1; it checks request heads (§8.3) and
//! body lengths (§8.1.1); and it bounds what a misbehaving client can make it do.

mod head;

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{self, setting, Error, Frame, Reason, MAX_WINDOW};
use crate::hpack::{self, Field};

pub use head::{Head, Malformed};

/// What a client must send first (§3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much room the output buffer takes at once.
const OUT_CHUNK: usize = 16 * 1024;

/// The output buffer `out`, with room for a burst of frames if it had none.
fn room(out: &mut BytesMut) -> &mut BytesMut {
    if out.capacity() == 0 {
        out.reserve(OUT_CHUNK);
    }
    out
}

/// The window every stream and the connection start with (§6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// How this end runs the connection; sent to the client as its SETTINGS.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Streams the client may have open at once.
    pub max_concurrent_streams: u32,
    /// The receive window of each stream.
    pub stream_window: u32,
    /// The receive window of the whole connection.
    pub connection_window: u32,
    /// The largest frame the client may send.
    pub max_frame_size: u32,
    /// The largest header list (§6.5.2) a request may have; a larger one is answered 431.
    pub max_header_list: u32,
    /// Streams this end may reset for the client's mistakes before it closes the connection.
    pub max_local_resets: u32,
    /// Frames of one header block (HEADERS and CONTINUATION) a client may send.
    pub max_block_frames: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: 128,
            stream_window: 1 << 20,
            connection_window: 1 << 20,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list: 64 << 10,
            max_local_resets: 256,
            max_block_frames: 64,
        }
    }
}

/// What the client did, in the order it did it; `stream` is the stream it happened on.
#[allow(missing_docs)]
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A new request. `end_stream`: it has no body.
    Request {
        stream: u32,
        head: Head,
        end_stream: bool,
    },
    /// A piece of a request body; the last one has `end_stream`. Its bytes count against the
    /// windows until they are handed back with [`Connection::release`].
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
    },
    /// The trailer section that ends a request body.
    Trailers { stream: u32, fields: Vec<Field> },
    /// The stream is over before its exchange: reset by the client, or by this end for what
    /// the client sent on it. Nothing more is sent on it.
    Reset { stream: u32, reason: Reason },
    /// The client's windows grew: response bodies waiting for room may go on.
    Window,
    /// The client answered a PING this end sent.
    Pong,
    /// The client is going away; streams above `last_stream` will not be answered by it.
    GoAway { last_stream: u32, reason: Reason },
}

/// A stream this end has not finished with.
#[derive(Debug)]
struct Stream {
    /// What this end may still send.
    send_window: i64,
    /// What the client may still send.
    recv_window: i64,
    /// Body bytes taken by the application but not yet given back to the client.
    unreleased: u32,
    /// The client has ended its side.
    recv_closed: bool,
    /// The declared request body length, and what has arrived of it.
    declared: Option<u64>,
    received: u64,
}

/// A header block being received across CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: BytesMut,
    frames: u32,
}

/// One server connection.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    /// The preface and the client's first SETTINGS have arrived.
    preface_seen: bool,
    settings_seen: bool,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    /// The client's settings that matter to a server.
    peer_window: u32,
    peer_max_frame: u32,
    streams: HashMap<u32, Stream>,
    /// The highest stream the client opened.
    last_stream: u32,
    send_window: i64,
    recv_window: i64,
    unreleased: u32,
    block: Option<Block>,
    /// The last stream a GOAWAY of this end promised to handle.
    going_away: Option<u32>,
    local_resets: u32,
    out: BytesMut,
}

impl Connection {
    /// A connection with `config`; this end's SETTINGS are the first bytes of its output.
    pub fn new(config: Config) -> Self {
        let mut out = BytesMut::with_capacity(OUT_CHUNK);
        frame::put_settings(
            &mut out,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_FRAME_SIZE, config.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        let extra = config.connection_window.saturating_sub(DEFAULT_WINDOW);
        if extra > 0 {
            frame::put_window_update(&mut out, 0, extra);
        }
        Connection {
            config,
            preface_seen: false,
            settings_seen: false,
            decoder: hpack::Decoder::default(),
            encoder: hpack::Encoder::default(),
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            streams: HashMap::new(),
            last_stream: 0,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(config.connection_window.max(DEFAULT_WINDOW)),
            unreleased: 0,
            block: None,
            going_away: None,
            local_resets: 0,
            out,
        }
    }

    /// The bytes waiting to be written to the client; the caller takes what it wrote.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Streams not yet finished.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether a GOAWAY went out and every stream it kept is finished: the connection may
    /// close once its output is written.
    pub fn is_done(&self) -> bool {
        self.going_away.is_some() && self.streams.is_empty()
    }

    /// Reads every whole frame in `buf`, leaving a partial one there. A connection error is
    /// returned after its GOAWAY has been put in the output; the connection is then over.
    pub fn receive(&mut self, buf: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), Reason> {
        match self.read_frames(buf, events) {
            Ok(()) => Ok(()),
            Err(reason) => {
                frame::put_goaway(room(&mut self.out), self.last_stream, reason);
                self.going_away = Some(self.last_stream);
                self.streams.clear();
                Err(reason)
            }
        }
    }

    fn read_frames(&mut self, buf: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), Reason> {
        if !self.preface_seen {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return Err(Reason::PROTOCOL_ERROR);
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            buf.advance(PREFACE.len());
            self.preface_seen = true;
        }
        loop {
            let frame = match frame::read(buf, self.config.max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(Error::Connection(reason)) => return Err(reason),
                Err(Error::Stream(stream, reason)) => {
                    self.stream_error(stream, reason, events)?;
                    continue;
                }
            };
            if !self.settings_seen && !matches!(frame, Frame::Settings { ack: false, .. }) {
                return Err(Reason::PROTOCOL_ERROR);
            }
            if self.block.is_some() && !matches!(frame, Frame::Continuation { .. }) {
                return Err(Reason::PROTOCOL_ERROR);
            }
            self.on_frame(frame, events)?;
        }
    }

    fn on_frame(&mut self, frame: Frame, events: &mut Vec<Event>) -> Result<(), Reason> {
        match frame {
            Frame::Settings { ack: true, .. } => {}
            Frame::Settings { ack: false, values } => {
                self.settings_seen = true;
                self.apply_settings(&values)?;
                frame::put_settings_ack(room(&mut self.out));
                events.push(Event::Window);
            }
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => self.on_headers(stream, end_stream, end_headers, block, events)?,
            Frame::Continuation {
                stream,
                end_headers,
                block,
            } => self.on_continuation(stream, end_headers, block, events)?,
            Frame::Data {
                stream,
                end_stream,
                data,
                flow,
            } => self.on_data(stream, end_stream, data, flow, events)?,
            Frame::Reset { stream, reason } => {
                if self.is_idle(stream) {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                if self.streams.remove(&stream).is_some() {
                    events.push(Event::Reset { stream, reason });
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                self.on_window_update(stream, increment, events)?
            }
            Frame::Ping {
                ack: false,
                payload,
            } => frame::put_ping(room(&mut self.out), true, payload),
            Frame::Ping { ack: true, .. } => events.push(Event::Pong),
            Frame::GoAway {
                last_stream,
                reason,
            } => events.push(Event::GoAway {
                last_stream,
                reason,
            }),
            // Servers cannot be pushed to (§8.4).
            Frame::PushPromise { .. } => return Err(Reason::PROTOCOL_ERROR),
            // Priorities are advisory (§5.3); unknown frames are ignored (§5.5).
            Frame::Priority { .. } | Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    /// The first frame of a header block: the whole block, or its start.
    fn on_headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        block: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        if end_headers {
            return self.on_block(stream, end_stream, block, events);
        }
        let mut bytes = BytesMut::with_capacity(block.len() * 2);
        bytes.extend_from_slice(&block);
        self.block = Some(Block {
            stream,
            end_stream,
            bytes,
            frames: 1,
        });
        Ok(())
    }

    /// More of the header block under way.
    fn on_continuation(
        &mut self,
        stream: u32,
        end_headers: bool,
        block: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        let Some(mut b) = self.block.take() else {
            return Err(Reason::PROTOCOL_ERROR);
        };
        if b.stream != stream {
            return Err(Reason::PROTOCOL_ERROR);
        }
        b.frames += 1;
        b.bytes.extend_from_slice(&block);
        // A block longer than the largest header list it could decode to, or in more frames
        // than a client needs, is a flood.
        if b.frames > self.config.max_block_frames
            || b.bytes.len() > self.config.max_header_list as usize * 2
        {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        if end_headers {
            self.on_block(b.stream, b.end_stream, b.bytes.freeze(), events)
        } else {
            self.block = Some(b);
            Ok(())
        }
    }

    /// The client's window for the connection (stream 0) or one stream grew.
    fn on_window_update(
        &mut self,
        stream: u32,
        increment: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        if stream == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(Reason::FLOW_CONTROL_ERROR);
            }
            events.push(Event::Window);
            return Ok(());
        }
        if self.is_idle(stream) {
            return Err(Reason::PROTOCOL_ERROR);
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send_window += i64::from(increment);
            if s.send_window > i64::from(MAX_WINDOW) {
                return self.stream_error(stream, Reason::FLOW_CONTROL_ERROR, events);
            }
            events.push(Event::Window);
        }
        Ok(())
    }

    /// A stream the client has not opened yet.
    fn is_idle(&self, stream: u32) -> bool {
        stream > self.last_stream
    }

    fn apply_settings(&mut self, values: &[(u16, u32)]) -> Result<(), Reason> {
        for &(id, value) in values {
            match id {
                setting::INITIAL_WINDOW_SIZE => {
                    // §6.9.2: the change applies to every open stream's window.
                    let delta = i64::from(value) - i64::from(self.peer_window);
                    self.peer_window = value;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > i64::from(MAX_WINDOW) {
                            return Err(Reason::FLOW_CONTROL_ERROR);
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => self.peer_max_frame = value,
                // The encoder adds nothing to the client's table, so any size will do; this
                // end pushes nothing and takes no notice of limits meant for pushes.
                _ => {}
            }
        }
        Ok(())
    }

    fn on_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        if stream.is_multiple_of(2) {
            return Err(Reason::PROTOCOL_ERROR);
        }
        // Room for a typical request; more than 1 KiB would miss the allocator's fast path.
        let mut fields = Vec::with_capacity(8);
        let limit = self.config.max_header_list as usize;
        let decoded = self
            .decoder
            .decode(&block, limit, |f| fields.push(f))
            .map_err(|_| Reason::COMPRESSION_ERROR)?;
        if !self.is_idle(stream) {
            return self.on_trailers(stream, end_stream, fields, events);
        }
        self.last_stream = stream;
        if self.going_away.is_some_and(|last| stream > last) {
            // Opened after this end said it would take no more: the client retries it elsewhere.
            return Ok(());
        }
        if self.streams.len() >= self.config.max_concurrent_streams as usize {
            frame::put_reset(room(&mut self.out), stream, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let mut open = Stream {
            send_window: i64::from(self.peer_window),
            recv_window: i64::from(self.config.stream_window),
            unreleased: 0,
            recv_closed: end_stream,
            declared: None,
            received: 0,
        };
        if decoded.oversize {
            // Answered 431, and no body taken from it.
            self.streams.insert(stream, open);
            self.send_head(stream, 431, std::iter::empty(), true);
            return Ok(());
        }
        let head = match head::request(fields) {
            Ok(head) if !(end_stream && head.content_length.is_some_and(|n| n > 0)) => head,
            _ => return self.stream_error(stream, Reason::PROTOCOL_ERROR, events),
        };
        open.declared = head.content_length;
        self.streams.insert(stream, open);
        events.push(Event::Request {
            stream,
            head,
            end_stream,
        });
        Ok(())
    }

    fn on_trailers(
        &mut self,
        stream: u32,
        end_stream: bool,
        fields: Vec<Field>,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream already over (reset by this end, say): what was in flight is ignored.
            return Ok(());
        };
        if s.recv_closed {
            return self.stream_error(stream, Reason::STREAM_CLOSED, events);
        }
        if !end_stream || head::trailers(&fields).is_err() {
            return self.stream_error(stream, Reason::PROTOCOL_ERROR, events);
        }
        if s.declared.is_some_and(|n| n != s.received) {
            return self.stream_error(stream, Reason::PROTOCOL_ERROR, events);
        }
        s.recv_closed = true;
        events.push(Event::Trailers { stream, fields });
        Ok(())
    }

    fn on_data(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow: u32,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        if self.is_idle(stream) {
            return Err(Reason::PROTOCOL_ERROR);
        }
        let flow64 = i64::from(flow);
        if flow64 > self.recv_window {
            return Err(Reason::FLOW_CONTROL_ERROR);
        }
        self.recv_window -= flow64;
        // Padding is handed back at once; the data when the application has taken it.
        let padding = flow - data.len() as u32;
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream already over: its bytes are given back to the connection and dropped.
            self.release_connection(flow);
            return Ok(());
        };
        if s.recv_closed {
            self.release_connection(flow);
            return self.stream_error(stream, Reason::STREAM_CLOSED, events);
        }
        if flow64 > s.recv_window {
            self.release_connection(flow);
            return self.stream_error(stream, Reason::FLOW_CONTROL_ERROR, events);
        }
        s.recv_window -= flow64;
        s.received += data.len() as u64;
        let too_long = s.declared.is_some_and(|n| s.received > n);
        let too_short = end_stream && s.declared.is_some_and(|n| s.received != n);
        if too_long || too_short {
            self.release_connection(flow);
            return self.stream_error(stream, Reason::PROTOCOL_ERROR, events);
        }
        s.recv_closed = end_stream;
        if padding > 0 {
            self.release(stream, padding);
        }
        events.push(Event::Data {
            stream,
            data,
            end_stream,
        });
        Ok(())
    }

    /// Resets `stream` for the client's mistake; too many of those close the connection.
    fn stream_error(
        &mut self,
        stream: u32,
        reason: Reason,
        events: &mut Vec<Event>,
    ) -> Result<(), Reason> {
        self.local_resets += 1;
        if self.local_resets > self.config.max_local_resets {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        frame::put_reset(room(&mut self.out), stream, reason);
        if self.streams.remove(&stream).is_some() {
            events.push(Event::Reset { stream, reason });
        }
        Ok(())
    }

    /// Hands `n` body bytes of `stream` back to the client's windows, once the application has
    /// taken them. Window updates go out once half a window has been taken.
    pub fn release(&mut self, stream: u32, n: u32) {
        self.release_connection(n);
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.unreleased += n;
        if !s.recv_closed && s.unreleased >= self.config.stream_window / 2 {
            frame::put_window_update(room(&mut self.out), stream, s.unreleased);
            s.recv_window += i64::from(s.unreleased);
            s.unreleased = 0;
        }
    }

    fn release_connection(&mut self, n: u32) {
        self.unreleased += n;
        if self.unreleased >= self.config.connection_window.max(DEFAULT_WINDOW) / 2 {
            frame::put_window_update(room(&mut self.out), 0, self.unreleased);
            self.recv_window += i64::from(self.unreleased);
            self.unreleased = 0;
        }
    }

    /// Sends the response head of `stream`: its status and `fields` (names in lower case,
    /// none connection-specific). `end_stream`: the response has no body.
    pub fn send_head<'a>(
        &mut self,
        stream: u32,
        status: u16,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8], bool)>,
        end_stream: bool,
    ) {
        if !self.streams.contains_key(&stream) {
            return;
        }
        self.write_block(stream, Some(status), fields, end_stream);
        if end_stream {
            self.finish(stream);
        }
    }

    /// Writes a header block (a response head with `status`, or trailers) straight into the
    /// output as one HEADERS frame, split into CONTINUATION frames only when it is larger
    /// than the client's frame size.
    fn write_block<'a>(
        &mut self,
        stream: u32,
        status: Option<u16>,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8], bool)>,
        end_stream: bool,
    ) {
        let out = room(&mut self.out);
        if out.capacity() - out.len() < 1024 {
            out.reserve(OUT_CHUNK);
        }
        let start = out.len();
        let mut flags = frame::flag::END_HEADERS;
        if end_stream {
            flags |= frame::flag::END_STREAM;
        }
        // The length is filled in once the block is written.
        frame::put_header(out, 0, frame::kind::HEADERS, flags, stream);
        if let Some(status) = status {
            self.encoder.status(status, out);
        }
        for (name, value, sensitive) in fields {
            self.encoder.field(name, value, sensitive, out);
        }
        let len = out.len() - start - frame::HEADER_LEN;
        if len <= self.peer_max_frame as usize {
            let be = (len as u32).to_be_bytes();
            out[start..start + 3].copy_from_slice(&be[1..]);
        } else {
            let block = out.split_off(start + frame::HEADER_LEN);
            out.truncate(start);
            frame::put_headers(out, stream, &block, end_stream, self.peer_max_frame);
        }
    }

    /// Sends as much of `data` as the windows allow, taking it from the front of `data`; with
    /// `end_stream`, the last of it ends the response. Returns whether all of it went.
    pub fn send_data(&mut self, stream: u32, data: &mut Bytes, end_stream: bool) -> bool {
        let max_frame = self.peer_max_frame as usize;
        loop {
            let Some(s) = self.streams.get_mut(&stream) else {
                // Reset meanwhile: nothing is left to send.
                data.clear();
                return true;
            };
            if data.is_empty() {
                if end_stream {
                    frame::put_data(room(&mut self.out), stream, &[], true);
                    self.finish(stream);
                }
                return true;
            }
            let window = s.send_window.min(self.send_window).max(0) as usize;
            let n = data.len().min(window).min(max_frame);
            if n == 0 {
                return false;
            }
            let last = end_stream && n == data.len();
            frame::put_data(room(&mut self.out), stream, &data[..n], last);
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            data.advance(n);
            if last {
                self.finish(stream);
                return true;
            }
        }
    }

    /// How many body bytes `stream` could send now.
    pub fn capacity(&self, stream: u32) -> usize {
        self.streams
            .get(&stream)
            .map_or(0, |s| s.send_window.min(self.send_window).max(0) as usize)
    }

    /// Ends the response of `stream` with a trailer section.
    pub fn send_trailers<'a>(
        &mut self,
        stream: u32,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8], bool)>,
    ) {
        if !self.streams.contains_key(&stream) {
            return;
        }
        self.write_block(stream, None, fields, true);
        self.finish(stream);
    }

    /// Resets `stream` from this end (the answer broke off, or is abandoned).
    pub fn reset(&mut self, stream: u32, reason: Reason) {
        if self.streams.remove(&stream).is_some() {
            frame::put_reset(room(&mut self.out), stream, reason);
        }
    }

    /// Whether `stream` is still open on this end.
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// The response of `stream` is sent in full. A client still sending its body is told to
    /// stop (§8.1: `NO_ERROR`), which also ends the stream.
    fn finish(&mut self, stream: u32) {
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        if !s.recv_closed {
            frame::put_reset(room(&mut self.out), stream, Reason::NO_ERROR);
        }
        self.streams.remove(&stream);
    }

    /// Sends a PING; its answer comes back as [`Event::Pong`].
    pub fn ping(&mut self, payload: [u8; 8]) {
        frame::put_ping(room(&mut self.out), false, payload);
    }

    /// Starts a graceful close: streams the client opened so far are answered, later ones not.
    pub fn go_away(&mut self, reason: Reason) {
        if self.going_away.is_none() {
            frame::put_goaway(room(&mut self.out), self.last_stream, reason);
            self.going_away = Some(self.last_stream);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hostile;
