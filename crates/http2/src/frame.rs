//! HTTP/2 frames (RFC 9113 §4 and §6): read from a buffer and written into one.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The length of a frame header.
pub const HEADER_LEN: usize = 9;

/// The frame size every endpoint must accept, and the default limit (§4.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest window a flow-control window may reach (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame types (§6).
pub mod kind {
    #![allow(missing_docs)]
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    #![allow(missing_docs)]
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

#[allow(missing_docs)]
impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            Reason::NO_ERROR => "NO_ERROR",
            Reason::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Reason::INTERNAL_ERROR => "INTERNAL_ERROR",
            Reason::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Reason::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            Reason::STREAM_CLOSED => "STREAM_CLOSED",
            Reason::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            Reason::REFUSED_STREAM => "REFUSED_STREAM",
            Reason::CANCEL => "CANCEL",
            Reason::COMPRESSION_ERROR => "COMPRESSION_ERROR",
            Reason::CONNECT_ERROR => "CONNECT_ERROR",
            Reason::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            Reason::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            Reason::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            Reason(other) => return write!(f, "error code {other:#x}"),
        };
        f.write_str(name)
    }
}

/// A frame the peer got wrong: an error of the whole connection, or of one stream (§5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The connection is closed with GOAWAY and this code.
    Connection(Reason),
    /// The stream is reset with this code; the connection goes on.
    Stream(u32, Reason),
}

/// Settings identifiers (§6.5.2).
pub mod setting {
    #![allow(missing_docs)]
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// RFC 8441 §3: extended CONNECT.
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// One frame, as read; fields are named as in RFC 9113.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `flow` is what the frame counts against flow control: its whole payload, padding
    /// included.
    Data {
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow: u32,
    },
    /// The first fragment of a header block, padding and priority removed.
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        block: Bytes,
    },
    Priority {
        stream: u32,
    },
    Reset {
        stream: u32,
        reason: Reason,
    },
    /// The settings, in order; empty for an acknowledgement.
    Settings {
        ack: bool,
        values: Vec<(u16, u32)>,
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        block: Bytes,
    },
    /// A frame of a type this end does not know, which is ignored (§5.5).
    Unknown {
        kind: u8,
        stream: u32,
    },
}

/// Reads one frame from the front of `buf`, if a whole one is there. Frames longer than
/// `max_size` are a connection error.
pub fn read(buf: &mut BytesMut, max_size: u32) -> Result<Option<Frame>, Error> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
    if len > max_size {
        return Err(Error::Connection(Reason::FRAME_SIZE_ERROR));
    }
    if buf.len() < HEADER_LEN + len as usize {
        return Ok(None);
    }
    let kind = buf[3];
    let flags = buf[4];
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & MAX_WINDOW;
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len as usize).freeze();
    parse(kind, flags, stream, payload).map(Some)
}

/// A connection error with `PROTOCOL_ERROR`.
const PROTOCOL: Error = Error::Connection(Reason::PROTOCOL_ERROR);
/// A connection error with `FRAME_SIZE_ERROR`.
const SIZE: Error = Error::Connection(Reason::FRAME_SIZE_ERROR);

fn parse(kind: u8, flags: u8, stream: u32, payload: Bytes) -> Result<Frame, Error> {
    match kind {
        kind::DATA | kind::HEADERS | kind::PRIORITY | kind::RST_STREAM | kind::CONTINUATION => {
            parse_stream_frame(kind, flags, stream, payload)
        }
        _ => parse_connection_frame(kind, flags, stream, payload),
    }
}

/// The frames that belong to one stream.
fn parse_stream_frame(
    kind: u8,
    flags: u8,
    stream: u32,
    mut payload: Bytes,
) -> Result<Frame, Error> {
    let len = payload.len();
    Ok(match kind {
        kind::DATA => {
            if stream == 0 {
                return Err(PROTOCOL);
            }
            let data = unpad(flags, payload)?;
            Frame::Data {
                stream,
                end_stream: flags & flag::END_STREAM != 0,
                data,
                flow: len as u32,
            }
        }
        kind::HEADERS => {
            if stream == 0 {
                return Err(PROTOCOL);
            }
            let mut block = unpad(flags, payload)?;
            if flags & flag::PRIORITY != 0 {
                if block.len() < 5 {
                    return Err(SIZE);
                }
                let depends = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
                if depends & MAX_WINDOW == stream {
                    return Err(Error::Stream(stream, Reason::PROTOCOL_ERROR));
                }
                block.advance(5);
            }
            Frame::Headers {
                stream,
                end_stream: flags & flag::END_STREAM != 0,
                end_headers: flags & flag::END_HEADERS != 0,
                block,
            }
        }
        kind::PRIORITY => {
            if stream == 0 {
                return Err(PROTOCOL);
            }
            if len != 5 {
                return Err(Error::Stream(stream, Reason::FRAME_SIZE_ERROR));
            }
            let depends = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            if depends & MAX_WINDOW == stream {
                return Err(Error::Stream(stream, Reason::PROTOCOL_ERROR));
            }
            Frame::Priority { stream }
        }
        kind::RST_STREAM => {
            if stream == 0 {
                return Err(PROTOCOL);
            }
            if len != 4 {
                return Err(SIZE);
            }
            Frame::Reset {
                stream,
                reason: Reason(payload.get_u32()),
            }
        }
        kind::CONTINUATION => {
            if stream == 0 {
                return Err(PROTOCOL);
            }
            Frame::Continuation {
                stream,
                end_headers: flags & flag::END_HEADERS != 0,
                block: payload,
            }
        }
        kind => Frame::Unknown { kind, stream },
    })
}

/// The frames of the whole connection, and those of types this end does not know.
fn parse_connection_frame(
    kind: u8,
    flags: u8,
    stream: u32,
    mut payload: Bytes,
) -> Result<Frame, Error> {
    let len = payload.len();
    Ok(match kind {
        kind::SETTINGS => {
            if stream != 0 {
                return Err(PROTOCOL);
            }
            let ack = flags & flag::ACK != 0;
            if (ack && len != 0) || !len.is_multiple_of(6) {
                return Err(SIZE);
            }
            let mut values = Vec::with_capacity(len / 6);
            while payload.has_remaining() {
                let id = payload.get_u16();
                let value = payload.get_u32();
                check_setting(id, value)?;
                values.push((id, value));
            }
            Frame::Settings { ack, values }
        }
        kind::PUSH_PROMISE => Frame::PushPromise { stream },
        kind::PING => {
            if stream != 0 {
                return Err(PROTOCOL);
            }
            if len != 8 {
                return Err(SIZE);
            }
            let mut data = [0; 8];
            payload.copy_to_slice(&mut data);
            Frame::Ping {
                ack: flags & flag::ACK != 0,
                payload: data,
            }
        }
        kind::GOAWAY => {
            if stream != 0 {
                return Err(PROTOCOL);
            }
            if len < 8 {
                return Err(SIZE);
            }
            Frame::GoAway {
                last_stream: payload.get_u32() & MAX_WINDOW,
                reason: Reason(payload.get_u32()),
            }
        }
        kind::WINDOW_UPDATE => {
            if len != 4 {
                return Err(SIZE);
            }
            let increment = payload.get_u32() & MAX_WINDOW;
            if increment == 0 {
                return Err(if stream == 0 {
                    PROTOCOL
                } else {
                    Error::Stream(stream, Reason::PROTOCOL_ERROR)
                });
            }
            Frame::WindowUpdate { stream, increment }
        }
        kind => Frame::Unknown { kind, stream },
    })
}

/// The payload of a frame that may be padded, without its padding (§6.1, §6.2).
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, Error> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    if payload.is_empty() {
        return Err(SIZE);
    }
    let pad = usize::from(payload.get_u8());
    if pad > payload.len() {
        return Err(PROTOCOL);
    }
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

/// The bounds §6.5.2 puts on setting values.
fn check_setting(id: u16, value: u32) -> Result<(), Error> {
    match id {
        setting::ENABLE_PUSH | setting::ENABLE_CONNECT_PROTOCOL if value > 1 => Err(PROTOCOL),
        setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
            Err(Error::Connection(Reason::FLOW_CONTROL_ERROR))
        }
        setting::MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME_SIZE..=(1 << 24) - 1).contains(&value) => {
            Err(PROTOCOL)
        }
        _ => Ok(()),
    }
}

/// Writes a frame header.
pub fn put_header(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    let len = (len as u32).to_be_bytes();
    dst.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    dst.put_u32(stream & MAX_WINDOW);
}

/// Writes a SETTINGS frame.
pub fn put_settings(dst: &mut BytesMut, values: &[(u16, u32)]) {
    put_header(dst, values.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in values {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Writes the acknowledgement of the peer's SETTINGS.
pub fn put_settings_ack(dst: &mut BytesMut) {
    put_header(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Writes a PING, or the answer to one.
pub fn put_ping(dst: &mut BytesMut, ack: bool, payload: [u8; 8]) {
    put_header(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.extend_from_slice(&payload);
}

/// Writes a WINDOW_UPDATE.
pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_header(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & MAX_WINDOW);
}

/// Writes a RST_STREAM.
pub fn put_reset(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_header(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Writes a GOAWAY.
pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_header(dst, 8, kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream & MAX_WINDOW);
    dst.put_u32(reason.0);
}

/// Writes a header block as a HEADERS frame and as many CONTINUATION frames as `max_size`
/// requires.
pub fn put_headers(dst: &mut BytesMut, stream: u32, block: &[u8], end_stream: bool, max_size: u32) {
    let max = max_size as usize;
    let mut chunks = block.chunks(max.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let single = block.len() <= max;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if single {
        flags |= flag::END_HEADERS;
    }
    put_header(dst, first.len(), kind::HEADERS, flags, stream);
    dst.extend_from_slice(first);
    let mut rest = chunks.peekable();
    while let Some(chunk) = rest.next() {
        let last = rest.peek().is_none();
        let flags = if last { flag::END_HEADERS } else { 0 };
        put_header(dst, chunk.len(), kind::CONTINUATION, flags, stream);
        dst.extend_from_slice(chunk);
    }
}

/// Writes one DATA frame; `data` must fit the peer's frame size.
pub fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_header(dst, data.len(), kind::DATA, flags, stream);
    dst.extend_from_slice(data);
}

#[cfg(test)]
mod tests;
