//! The chunked transfer coding (RFC 9112 §7.1): an incremental, strict state machine that scans,
//! decodes or re-frames a chunked body, and the writers of Portcullis's own chunk framing.
//!
//! A body relayed chunked leaves with framing of Portcullis's own: chunk extensions are dropped,
//! chunk sizes are written afresh, and of the trailer section only fields that neither frame,
//! route nor authorise the message are kept, so that nothing a peer put into the framing reaches
//! the other side for it to read differently.

use std::fmt;

use super::codec::{is_tchar, MAX_HEAD};

/// Largest accepted chunk-size line or trailer field line, CRLF included.
const MAX_CHUNK_LINE: usize = 4096;
/// Most hex digits accepted in a chunk size; sixteen always fit in a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;
/// Most bytes of chunk extensions (after each `;`, up to the CR) over a whole body.
pub(crate) const MAX_EXTENSIONS: usize = 16 * 1024;
/// Room left in front of re-framed data for its chunk-size line: 16 hex digits and CRLF.
const SIZE_LINE_ROOM: usize = 18;

/// A malformed chunked body; the text names the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError(pub(crate) &'static str);

impl ChunkError {
    /// The body's data grew past the limit the decoder was given.
    pub(crate) const TOO_LARGE: ChunkError = ChunkError("body larger than the limit");
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Before the first digit of a chunk size.
    #[default]
    SizeStart,
    /// Within the hex digits of a chunk size.
    Size,
    /// Within chunk extensions, after ';'.
    Extension,
    /// After the CR that ends a chunk-size line.
    SizeLf,
    /// Within chunk data; `Chunked::remaining` bytes are left.
    Data,
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data and CR, expecting LF.
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerStart,
    /// Within a trailer field name.
    TrailerName,
    /// Within a trailer field value, after ':'.
    TrailerValue,
    /// After the CR that ends a trailer field line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
    /// The body has ended.
    Done,
    /// The body was malformed; every later call reports the same error.
    Failed(&'static str),
}

/// Incremental chunked-body state machine (RFC 9112 §7.1).
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunked {
    state: State,
    /// The chunk size being read, then the data bytes still to come.
    remaining: u64,
    /// Hex digits read of the current chunk size.
    digits: u8,
    /// Bytes read of the current chunk-size or trailer line.
    line: usize,
    /// Bytes read of the trailer section.
    trailer: usize,
    /// Bytes of chunk extensions read so far.
    extensions: usize,
    /// Data bytes announced so far.
    total: u64,
    /// Largest total allowed (0 = unlimited).
    limit: u64,
    /// The trailer section as received, kept only by a decoder that re-frames.
    trailers: Option<Vec<u8>>,
}

impl Chunked {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A decoder that fails with [`ChunkError::TOO_LARGE`] as soon as a chunk size line takes
    /// the body's data past `limit` bytes (0 = unlimited), before any byte of that chunk.
    pub(crate) fn with_limit(limit: u64) -> Self {
        Chunked {
            limit,
            ..Self::default()
        }
    }

    /// A decoder for [`Chunked::reframe`], limited like [`Chunked::with_limit`].
    pub(crate) fn forwarding(limit: u64) -> Self {
        Chunked {
            limit,
            trailers: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// Scans the next bytes of a chunked body without copying. Returns (n, done): the first n
    /// bytes of `input` belong to the body (n == input.len() unless done), and done is true once
    /// the last chunk, trailer section and final CRLF have been consumed.
    pub(crate) fn scan(&mut self, input: &[u8]) -> Result<(usize, bool), ChunkError> {
        self.run(input, None)
    }

    /// Same as [`Chunked::scan`], but appends the chunk data (nothing else) to `out`.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), ChunkError> {
        self.run(input, Some(out))
    }

    /// Same as [`Chunked::scan`], but writes into `out` (emptied first) the body's next bytes
    /// in Portcullis's own framing: the data of `input` as one chunk without extensions, and
    /// once the body has ended the last chunk with the trailer fields that may be forwarded.
    /// Returns (n, done, start): the bytes to send are `out[start..]` (none when `start` is
    /// `out.len()`). Trailers are kept only by a decoder made with [`Chunked::forwarding`].
    pub(crate) fn reframe(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool, usize), ChunkError> {
        out.clear();
        out.resize(SIZE_LINE_ROOM, 0);
        let (n, done) = self.run(input, Some(out))?;
        let data = out.len() - SIZE_LINE_ROOM;
        let mut start = SIZE_LINE_ROOM;
        if data > 0 {
            let (line, len) = size_line(data);
            start -= len;
            out[start..SIZE_LINE_ROOM].copy_from_slice(&line[..len]);
            out.extend_from_slice(b"\r\n");
        }
        if done {
            out.extend_from_slice(b"0\r\n");
            if let Some(section) = self.trailers.take() {
                push_forwardable_trailers(&section, out);
            }
            out.extend_from_slice(b"\r\n");
        }
        Ok((n, done, start))
    }

    #[cfg(test)]
    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn run(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), ChunkError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Failed(why) => return Err(ChunkError(why)),
                State::Done => return Ok((pos, true)),
                _ if pos == input.len() => return Ok((pos, false)),
                State::Data => {
                    let available = input.len() - pos;
                    let take =
                        usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&input[pos..pos + take]);
                    }
                    pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let byte = input[pos];
                    pos += 1;
                    if let Err(why) = self.step(byte) {
                        self.state = State::Failed(why);
                        return Err(ChunkError(why));
                    }
                }
            }
        }
    }

    /// Counts one framing byte against the line, trailer and extension limits (and keeps it
    /// when it belongs to a trailer section being kept).
    fn count(&mut self, b: u8) -> Result<(), &'static str> {
        match self.state {
            State::SizeStart | State::Size | State::Extension | State::SizeLf => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err("chunk-size line too long");
                }
                if self.state == State::Extension && b != b'\r' {
                    self.extensions += 1;
                    if self.extensions > MAX_EXTENSIONS {
                        return Err("chunk extensions too large");
                    }
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::FinalLf => {
                self.line += 1;
                self.trailer += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err("trailer line too long");
                }
                if self.trailer > MAX_HEAD {
                    return Err("trailer section too large");
                }
                if let Some(section) = self.trailers.as_mut() {
                    section.push(b);
                }
            }
            State::Data | State::DataCr | State::DataLf | State::Done | State::Failed(_) => {}
        }
        Ok(())
    }

    /// Consumes one framing byte.
    fn step(&mut self, b: u8) -> Result<(), &'static str> {
        self.count(b)?;
        if b == b'\n'
            && !matches!(
                self.state,
                State::SizeLf | State::DataLf | State::TrailerLf | State::FinalLf
            )
        {
            return Err("bare LF");
        }
        self.state = match self.state {
            State::SizeStart => {
                let digit = hex_value(b).ok_or("invalid chunk size")?;
                self.remaining = u64::from(digit);
                self.digits = 1;
                State::Size
            }
            State::Size => match b {
                b'\r' => State::SizeLf,
                b';' => State::Extension,
                _ => {
                    let digit = hex_value(b).ok_or("invalid chunk size")?;
                    self.digits += 1;
                    if self.digits > MAX_SIZE_DIGITS {
                        return Err("chunk size too large");
                    }
                    self.remaining = self
                        .remaining
                        .checked_mul(16)
                        .and_then(|n| n.checked_add(u64::from(digit)))
                        .ok_or("chunk size too large")?;
                    State::Size
                }
            },
            State::Extension => match b {
                b'\r' => State::SizeLf,
                b'\t' | b' '..=b'~' => State::Extension,
                _ => return Err("invalid chunk extension"),
            },
            State::SizeLf => self.size_line_end(b)?,
            State::DataCr => {
                if b != b'\r' {
                    return Err("chunk data not followed by CRLF");
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err("chunk data not followed by CRLF");
                }
                State::SizeStart
            }
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                _ if is_tchar(b) => State::TrailerName,
                _ => return Err("invalid trailer field"),
            },
            State::TrailerName => match b {
                b':' => State::TrailerValue,
                _ if is_tchar(b) => State::TrailerName,
                _ => return Err("invalid trailer field"),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::TrailerValue,
                _ => return Err("invalid trailer field"),
            },
            State::TrailerLf => {
                if b != b'\n' {
                    return Err("CR without LF");
                }
                self.line = 0;
                State::TrailerStart
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err("CR without LF");
                }
                State::Done
            }
            State::Data | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }

    /// The LF that ends a chunk-size line: on to the chunk's data, or to the trailer section
    /// after the last chunk.
    fn size_line_end(&mut self, b: u8) -> Result<State, &'static str> {
        if b != b'\n' {
            return Err("CR without LF");
        }
        self.line = 0;
        self.total = self.total.saturating_add(self.remaining);
        if self.limit > 0 && self.total > self.limit {
            return Err(ChunkError::TOO_LARGE.0);
        }
        Ok(if self.remaining == 0 {
            self.trailer = 0;
            State::TrailerStart
        } else {
            State::Data
        })
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a trailer field may be forwarded. Fields that frame the message, route it, manage
/// the connection, authenticate, or that Portcullis sets itself are dropped: a recipient that
/// merged them into the head (RFC 9110 §6.5.1 forbids it, not every implementation obeys) would
/// read a message other than the one Portcullis checked.
fn forwardable_trailer(name: &[u8]) -> bool {
    const DROPPED: &[&[u8]] = &[
        b"age",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-type",
        b"cookie",
        b"date",
        b"expect",
        b"expires",
        b"forwarded",
        b"host",
        b"keep-alive",
        b"location",
        b"max-forwards",
        b"pragma",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"range",
        b"retry-after",
        b"server",
        b"set-cookie",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"vary",
        b"www-authenticate",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"x-request-id",
    ];
    let conditional = name.len() > 3 && name[..3].eq_ignore_ascii_case(b"if-");
    !conditional && !DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// Appends the field lines of a received trailer section (validated: CRLF-terminated lines of
/// `name:value`) that may be forwarded, each as received.
fn push_forwardable_trailers(section: &[u8], out: &mut Vec<u8>) {
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if forwardable_trailer(&line[..colon]) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The chunk-size line for `len` bytes ("{len:x}\r\n") and its length.
fn size_line(len: usize) -> ([u8; SIZE_LINE_ROOM], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; SIZE_LINE_ROOM];
    let mut start = SIZE_LINE_ROOM - 2;
    let mut n = len;
    loop {
        start -= 1;
        digits[start] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    digits[SIZE_LINE_ROOM - 2..].copy_from_slice(b"\r\n");
    let used = SIZE_LINE_ROOM - start;
    digits.copy_within(start.., 0);
    (digits, used)
}

/// Appends the framing for one chunk of `len` bytes ("{len:x}\r\n"). `len` must not be 0, which
/// would end the body; use [`push_last_chunk`] for that.
pub(crate) fn push_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a chunk of 0 bytes ends the body");
    let (line, used) = size_line(len);
    out.extend_from_slice(&line[..used]);
}

/// Appends the last chunk and an empty trailer section: "0\r\n\r\n".
pub(crate) fn push_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(body: &[u8]) -> Result<(usize, bool, Vec<u8>), ChunkError> {
        let mut chunked = Chunked::new();
        let mut out = Vec::new();
        let (n, done) = chunked.decode(body, &mut out)?;
        assert_eq!(chunked.is_done(), done);
        Ok((n, done, out))
    }

    fn chunk_error(body: &[u8]) -> ChunkError {
        let whole = decode_all(body);
        // Byte-by-byte feeding must fail the same way.
        let mut chunked = Chunked::new();
        let mut last = Ok((0, false));
        for b in body {
            last = chunked.scan(std::slice::from_ref(b));
            if last.is_err() {
                break;
            }
        }
        match (whole, last) {
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{:?}", String::from_utf8_lossy(body));
                a
            }
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn chunked_basic() {
        let body =
            b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nGET /next";
        let (n, done, out) = decode_all(body).unwrap();
        assert!(done);
        assert_eq!(n, body.len() - "GET /next".len());
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");

        let body = b"0\r\nExpires: never\r\nX-Sum:\t abc \r\n\r\n";
        let (n, done, out) = decode_all(body).unwrap();
        assert_eq!((n, done, out.len()), (body.len(), true, 0));

        let body = b"A;a=\"q s\";b\t\r\n0123456789\r\n00000000;x\r\n\r\n";
        let (_, done, out) = decode_all(body).unwrap();
        assert!(done);
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn chunked_incomplete_and_after_done() {
        let mut chunked = Chunked::new();
        assert_eq!(chunked.scan(b""), Ok((0, false)));
        assert_eq!(chunked.scan(b"5\r\nab"), Ok((5, false)));
        assert_eq!(chunked.scan(b"cde\r"), Ok((4, false)));
        assert_eq!(chunked.scan(b"\n0\r\n\r"), Ok((5, false)));
        assert!(!chunked.is_done());
        assert_eq!(chunked.scan(b"\nnext"), Ok((1, true)));
        assert!(chunked.is_done());
        assert_eq!(chunked.scan(b"next"), Ok((0, true)));
        assert_eq!(chunked.scan(b""), Ok((0, true)));
    }

    #[test]
    fn chunked_errors() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"\t5\r\n",
            b"+5\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b";a\r\n",
            b"5\rhello",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\rX",
            b"5\r\nhello\r\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"5;a\x01\r\n",
            b"5;a\xff\r\n",
            b"5;a\0\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nbad name: x\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
            b"0\r\n\rX",
            b"0\r\nX: y\rZ",
        ] {
            chunk_error(body);
        }
        for body in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5;ext\nhello\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\n\r\n",
            b"\n",
        ] {
            assert_eq!(chunk_error(body), ChunkError("bare LF"), "{body:?}");
        }
    }

    #[test]
    fn chunk_size_limits() {
        let body = b"ffffffffffffffff\r\nabc";
        let mut chunked = Chunked::new();
        assert_eq!(chunked.scan(body), Ok((body.len(), false)));
        let body = b"0000000000000003\r\nabc\r\n0\r\n\r\n";
        assert_eq!(decode_all(body).unwrap().2, b"abc");
        assert_eq!(
            chunk_error(b"10000000000000000\r\n"),
            ChunkError("chunk size too large")
        );
        assert_eq!(
            chunk_error(b"00000000000000001\r\n"),
            ChunkError("chunk size too large")
        );

        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE - 2, b'x');
        line.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(decode_all(&line).unwrap().2, b"a");
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE - 1, b'x');
        line.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(chunk_error(&line), ChunkError("chunk-size line too long"));
    }

    #[test]
    fn trailer_limits() {
        let mut body = b"0\r\nX: ".to_vec();
        body.resize(3 + MAX_CHUNK_LINE - 2, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        assert!(decode_all(&body).unwrap().1);
        let mut body = b"0\r\nX: ".to_vec();
        body.resize(3 + MAX_CHUNK_LINE - 1, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        assert_eq!(chunk_error(&body), ChunkError("trailer line too long"));

        let mut body = b"0\r\n".to_vec();
        let line = format!("X: {}\r\n", "v".repeat(1000));
        while body.len() < 3 + MAX_HEAD {
            body.extend_from_slice(line.as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        assert_eq!(chunk_error(&body), ChunkError("trailer section too large"));
    }

    #[test]
    fn extensions_are_bounded_over_the_whole_body() {
        let ext = format!(";{}", "e".repeat(1000));
        let mut body = Vec::new();
        for _ in 0..MAX_EXTENSIONS / 1000 {
            body.extend_from_slice(format!("1{ext}\r\na\r\n").as_bytes());
        }
        let mut ok = body.clone();
        ok.extend_from_slice(b"0\r\n\r\n");
        assert!(decode_all(&ok).unwrap().1);
        body.extend_from_slice(format!("1{ext}\r\na\r\n").as_bytes());
        assert_eq!(chunk_error(&body), ChunkError("chunk extensions too large"));
    }

    /// Re-frames `body` fed in `piece`-byte pieces; returns what would be sent.
    fn reframed(body: &[u8], piece: usize) -> Vec<u8> {
        let mut chunked = Chunked::forwarding(0);
        let mut sent = Vec::new();
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            let (n, done, start) = chunked.reframe(part, &mut out).unwrap();
            sent.extend_from_slice(&out[start..]);
            if done {
                assert_eq!(n, part.len());
                break;
            }
        }
        sent
    }

    #[test]
    fn reframing_drops_extensions_and_framing_trailers() {
        let body = b"5;name=value\r\nhello\r\n0006\r\n world\r\n0;last\r\nX-Sum: 1\r\nContent-Length: 5\r\nhost:evil\r\nTrailer: X\r\nTransfer-Encoding: chunked\r\nIf-Match: x\r\nX-Other:two words\r\n\r\n";
        let expected = "b\r\nhello world\r\n0\r\nX-Sum: 1\r\nX-Other:two words\r\n\r\n";
        assert_eq!(
            String::from_utf8(reframed(body, body.len())).unwrap(),
            expected
        );
        // Fed byte by byte, each data byte becomes a chunk of its own; the trailers are the same.
        let one = String::from_utf8(reframed(body, 1)).unwrap();
        assert!(one.starts_with("1\r\nh\r\n1\r\ne\r\n"), "{one}");
        assert!(
            one.ends_with("1\r\nd\r\n0\r\nX-Sum: 1\r\nX-Other:two words\r\n\r\n"),
            "{one}"
        );
        assert_eq!(reframed(b"0\r\n\r\n", 3), b"0\r\n\r\n");
        // A plain decoder keeps no trailers.
        let mut out = Vec::new();
        let mut plain = Chunked::with_limit(0);
        let (_, done, start) = plain.reframe(b"0\r\nX: y\r\n\r\n", &mut out).unwrap();
        assert!(done);
        assert_eq!(&out[start..], b"0\r\n\r\n");
    }

    #[test]
    fn trailer_names_that_frame_route_or_authorise_are_not_forwarded() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "HOST",
            "Trailer",
            "Connection",
            "TE",
            "Upgrade",
            "Authorization",
            "Set-Cookie",
            "Content-Type",
            "X-Forwarded-For",
            "If-None-Match",
            "Keep-Alive",
        ] {
            assert!(!forwardable_trailer(name.as_bytes()), "{name}");
        }
        for name in ["X-Checksum", "Server-Timing", "grpc-status", "Digest", "If"] {
            assert!(forwardable_trailer(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut chunked = Chunked::new();
        assert!(chunked.scan(b"z").is_err());
        assert_eq!(
            chunked.scan(b"0\r\n\r\n"),
            Err(ChunkError("invalid chunk size"))
        );
        assert_eq!(chunked.scan(b""), Err(ChunkError("invalid chunk size")));
        assert_eq!(
            ChunkError("bare LF").to_string(),
            "malformed chunked body: bare LF"
        );
    }

    #[test]
    fn chunk_framing_writers() {
        let mut out = Vec::new();
        push_chunk_header(1, &mut out);
        push_chunk_header(0xabc, &mut out);
        push_chunk_header(16, &mut out);
        push_chunk_header(usize::MAX, &mut out);
        push_last_chunk(&mut out);
        let expected = format!("1\r\nabc\r\n10\r\n{:x}\r\n0\r\n\r\n", usize::MAX);
        assert_eq!(out, expected.as_bytes());

        let mut body = Vec::new();
        for piece in [&b"hello"[..], b" ", b"world"] {
            push_chunk_header(piece.len(), &mut body);
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        push_last_chunk(&mut body);
        let (n, done, out) = decode_all(&body).unwrap();
        assert_eq!((n, done), (body.len(), true));
        assert_eq!(out, b"hello world");
    }

    /// A chunked encoding of `data` whose chunk boundaries, size spellings, extensions and
    /// trailers vary.
    #[derive(Debug, Clone)]
    struct Encoding {
        sizes: Vec<usize>,
        upper: bool,
        zero_pad: usize,
        extensions: Vec<Option<String>>,
        trailers: Vec<(String, String)>,
    }

    fn encoding() -> impl Strategy<Value = Encoding> {
        (
            prop::collection::vec(1usize..300, 1..12),
            any::<bool>(),
            0usize..6,
            prop::collection::vec(
                prop::option::of("(;[a-z]{1,5}(=[a-z0-9]{1,5}|=\"[ a-z;]{0,6}\")?){1,3}"),
                1..6,
            ),
            prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,30}"), 0..4),
        )
            .prop_map(|(sizes, upper, zero_pad, extensions, trailers)| Encoding {
                sizes,
                upper,
                zero_pad,
                extensions,
                trailers,
            })
    }

    fn encode(data: &[u8], e: &Encoding) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        let size_line = |size: usize, out: &mut Vec<u8>, i: usize| {
            let hex = if e.upper {
                format!("{size:X}")
            } else {
                format!("{size:x}")
            };
            let pad = e.zero_pad.min(16 - hex.len());
            out.extend_from_slice("0".repeat(pad).as_bytes());
            out.extend_from_slice(hex.as_bytes());
            if let Some(ext) = &e.extensions[i % e.extensions.len()] {
                out.extend_from_slice(ext.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        };
        while !rest.is_empty() {
            let size = e.sizes[i % e.sizes.len()].min(rest.len());
            size_line(size, &mut out, i);
            out.extend_from_slice(&rest[..size]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[size..];
            i += 1;
        }
        size_line(0, &mut out, i);
        for (name, value) in &e.trailers {
            out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Feeds `pieces` in order; returns the bytes consumed, whether the body ended and the data.
    fn feed(pieces: &[&[u8]], decode: bool) -> (usize, bool, Vec<u8>) {
        let mut chunked = Chunked::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let (n, done) = if decode {
                chunked.decode(piece, &mut out).unwrap()
            } else {
                chunked.scan(piece).unwrap()
            };
            consumed += n;
            if done {
                assert!(chunked.is_done());
                return (consumed, true, out);
            }
            assert_eq!(n, piece.len());
        }
        (consumed, false, out)
    }

    fn split_at_points<'a>(bytes: &'a [u8], points: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts {
            pieces.push(&bytes[start..cut]);
            start = cut;
        }
        pieces.push(&bytes[start..]);
        pieces
    }

    proptest! {
        #[test]
        fn chunked_round_trip(
            data in prop::collection::vec(any::<u8>(), 0..1500),
            e in encoding(),
            trailing in prop::collection::vec(any::<u8>(), 0..20),
            points in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let encoded = encode(&data, &e);
            let mut full = encoded.clone();
            full.extend_from_slice(&trailing);

            let pieces = split_at_points(&full, &points);
            for decode in [false, true] {
                let (n, done, out) = feed(&pieces, decode);
                prop_assert!(done);
                prop_assert_eq!(n, encoded.len());
                if decode {
                    prop_assert_eq!(&out, &data);
                }
            }

            let bytes: Vec<&[u8]> = full.chunks(1).collect();
            let (n, done, out) = feed(&bytes, true);
            prop_assert!(done);
            prop_assert_eq!(n, encoded.len());
            prop_assert_eq!(&out, &data);

            // Every proper prefix leaves the body unfinished.
            let cut = points.first().map_or(0, |p| p.index(encoded.len()));
            let (n, done, _) = feed(&[&encoded[..cut]], false);
            prop_assert!(!done);
            prop_assert_eq!(n, cut);
        }
    }
}
