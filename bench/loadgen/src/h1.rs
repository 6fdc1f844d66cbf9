//! The HTTP/1.1 client side of the `rate` mode: one pre-formatted `GET` written on a raw TCP
//! connection, and a small push parser for the response that follows (status line, header fields
//! up to the empty line, then a body delimited by `Content-Length`, chunked, or the end of the
//! connection). One read buffer per connection is reused for every response; a request allocates
//! nothing.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head (status line and header fields) accepted.
pub const MAX_HEAD: usize = 32 * 1024;
/// Longest chunk-size line or trailer field accepted.
pub const MAX_LINE: usize = 8 * 1024;
/// Read buffer per connection; larger than `MAX_HEAD` so a head that is too long is reported as
/// such instead of filling the buffer.
const BUF_SIZE: usize = 64 * 1024;
/// Unparsed bytes are moved to the front of the buffer when less than this is left behind them.
const MIN_READ: usize = 4 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    BadStatusLine,
    BadHeader,
    BadContentLength,
    HeadTooLarge,
    BadChunkSize,
    LineTooLong,
    MissingChunkCrlf,
    UnexpectedUpgrade,
    UnexpectedEof,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::BadStatusLine => "malformed status line",
            ParseError::BadHeader => "malformed header field",
            ParseError::BadContentLength => "invalid or conflicting Content-Length",
            ParseError::HeadTooLarge => "response head too large",
            ParseError::BadChunkSize => "invalid chunk size",
            ParseError::LineTooLong => "chunk-size or trailer line too long",
            ParseError::MissingChunkCrlf => "missing CRLF after chunk data",
            ParseError::UnexpectedUpgrade => "unexpected 101 Switching Protocols",
            ParseError::UnexpectedEof => "connection closed in the middle of a response",
        })
    }
}

impl std::error::Error for ParseError {}

/// What `ResponseParser::advance` made of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The response is not complete. The first `consumed` bytes are used up and must not be given
    /// again; the rest must be given again with more bytes appended.
    More { consumed: usize },
    /// The response ended after `consumed` bytes; anything after them belongs to the next one.
    /// `close` is set when the connection cannot be reused afterwards.
    Done {
        consumed: usize,
        status: u16,
        close: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    close: bool,
    body: Body,
}

/// Parses one response at a time from bytes handed to it in pieces of any size.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    status: u16,
    close: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new()
    }
}

impl ResponseParser {
    pub fn new() -> ResponseParser {
        ResponseParser {
            state: State::Head,
            status: 0,
            close: false,
        }
    }

    /// Consumes as much of `input` as it can.
    pub fn advance(&mut self, input: &[u8]) -> Result<Step, ParseError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Head => {
                    let Some(len) = find_head_end(rest) else {
                        if rest.len() >= MAX_HEAD {
                            return Err(ParseError::HeadTooLarge);
                        }
                        return Ok(Step::More { consumed: pos });
                    };
                    if len > MAX_HEAD {
                        return Err(ParseError::HeadTooLarge);
                    }
                    let head = parse_head(&rest[..len])?;
                    pos += len;
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            return Err(ParseError::UnexpectedUpgrade);
                        }
                        // Informational: the real response follows.
                        continue;
                    }
                    self.status = head.status;
                    self.close = head.close;
                    self.state = match head.body {
                        Body::None | Body::Length(0) => return Ok(self.finish(pos)),
                        Body::Length(n) => State::Length(n),
                        Body::Chunked => State::ChunkSize,
                        Body::UntilClose => State::UntilClose,
                    };
                }
                State::Length(left) => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    if n == left {
                        return Ok(self.finish(pos));
                    }
                    self.state = State::Length(left - n);
                    return Ok(Step::More { consumed: pos });
                }
                State::ChunkSize => {
                    let Some((line, used)) = take_line(rest)? else {
                        return Ok(Step::More { consumed: pos });
                    };
                    let size = parse_chunk_size(line)?;
                    pos += used;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(left) => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    if n < left {
                        self.state = State::ChunkData(left - n);
                        return Ok(Step::More { consumed: pos });
                    }
                    self.state = State::ChunkEnd;
                }
                State::ChunkEnd => {
                    if rest.starts_with(b"\r\n") {
                        pos += 2;
                    } else if rest.starts_with(b"\n") {
                        pos += 1;
                    } else if rest.is_empty() || rest == b"\r" {
                        return Ok(Step::More { consumed: pos });
                    } else {
                        return Err(ParseError::MissingChunkCrlf);
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some((line, used)) = take_line(rest)? else {
                        return Ok(Step::More { consumed: pos });
                    };
                    pos += used;
                    if line.is_empty() {
                        return Ok(self.finish(pos));
                    }
                }
                State::UntilClose => {
                    return Ok(Step::More {
                        consumed: input.len(),
                    })
                }
            }
        }
    }

    /// The connection reached its end: completes a response whose body runs until then, and is an
    /// error in every other state.
    pub fn eof(&mut self) -> Result<Step, ParseError> {
        if self.state == State::UntilClose {
            self.close = true;
            Ok(self.finish(0))
        } else {
            Err(ParseError::UnexpectedEof)
        }
    }

    fn finish(&mut self, consumed: usize) -> Step {
        self.state = State::Head;
        Step::Done {
            consumed,
            status: self.status,
            close: self.close,
        }
    }
}

/// Length of the head at the start of `buf` including the empty line that ends it, if all of it
/// is there. Lines end in CRLF; a bare LF is accepted too.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The line at the start of `buf` without its line ending, and the bytes it takes up with it.
fn take_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ParseError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i > MAX_LINE => Err(ParseError::LineTooLong),
        Some(i) => Ok(Some((strip_cr(&buf[..i]), i + 1))),
        None if buf.len() > MAX_LINE => Err(ParseError::LineTooLong),
        None => Ok(None),
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let digits = trim_ows(digits);
    if digits.is_empty() {
        return Err(ParseError::BadChunkSize);
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ParseError::BadChunkSize),
        };
        acc.checked_mul(16)
            .and_then(|a| a.checked_add(u64::from(d)))
            .ok_or(ParseError::BadChunkSize)
    })
}

/// Parses a complete head (as found by `find_head_end`).
fn parse_head(head: &[u8]) -> Result<Head, ParseError> {
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    let status_line = lines.next().ok_or(ParseError::BadStatusLine)?;
    // "HTTP/1.x SSS[ reason]"
    if status_line.len() < 12
        || !status_line.starts_with(b"HTTP/1.")
        || !status_line[7].is_ascii_digit()
        || status_line[8] != b' '
        || !status_line[9..12].iter().all(u8::is_ascii_digit)
        || (status_line.len() > 12 && status_line[12] != b' ')
    {
        return Err(ParseError::BadStatusLine);
    }
    let http10 = status_line[7] == b'0';
    let status = status_line[9..12]
        .iter()
        .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
    if status < 100 {
        return Err(ParseError::BadStatusLine);
    }

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close_token = false;
    let mut keep_alive_token = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::BadHeader)?;
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|&b| b == b' ' || b == b'\t') {
            return Err(ParseError::BadHeader);
        }
        let value = trim_ows(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(ParseError::BadContentLength)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ParseError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // The body is chunked only if chunked is the last coding applied.
            if let Some(last) = value
                .split(|&b| b == b',')
                .map(trim_ows)
                .rfind(|t| !t.is_empty())
            {
                chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    close_token = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        }
    }

    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else if transfer_encoding {
        if chunked {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else if let Some(n) = content_length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    let close = close_token || (http10 && !keep_alive_token) || body == Body::UntilClose;
    Ok(Head {
        status,
        close,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// the connection

#[derive(Debug)]
pub enum RequestError {
    Io(io::Error),
    Parse(ParseError),
    /// A kept-alive connection turned out closed before any of the response arrived.
    Closed,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "{e}"),
            RequestError::Parse(e) => write!(f, "{e}"),
            RequestError::Closed => f.write_str("connection closed by the server"),
        }
    }
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        RequestError::Io(e)
    }
}

impl From<ParseError> for RequestError {
    fn from(e: ParseError) -> Self {
        RequestError::Parse(e)
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The request line and `Host` field of a `GET`, ready to write.
pub fn get_request(host: &str, path: &str) -> Arc<[u8]> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        .into_bytes()
        .into()
}

/// One keep-alive connection (reopened when the server closes it) sending one fixed request.
pub struct Client {
    addr: SocketAddr,
    request: Arc<[u8]>,
    stream: Option<TcpStream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Client {
    pub fn new(addr: SocketAddr, request: Arc<[u8]>, stream: Option<TcpStream>) -> Client {
        Client {
            addr,
            request,
            stream,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Sends the request and reads the whole response; returns its status code. A kept-alive
    /// connection the server closed in the meantime is replaced and the request sent again, as
    /// any HTTP client does for a `GET`.
    pub async fn request(&mut self) -> Result<u16, RequestError> {
        let reused = self.stream.is_some();
        let mut result = self.attempt().await;
        if reused && matches!(result, Err(RequestError::Closed)) {
            self.stream = None;
            result = self.attempt().await;
        }
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn attempt(&mut self) -> Result<u16, RequestError> {
        let fresh = self.stream.is_none();
        if fresh {
            self.stream = Some(connect(self.addr).await?);
            self.start = 0;
            self.end = 0;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(RequestError::Closed);
        };
        if let Err(e) = stream.write_all(&self.request).await {
            return Err(if !fresh && is_disconnect(&e) {
                RequestError::Closed
            } else {
                e.into()
            });
        }
        let mut parser = ResponseParser::new();
        let mut got_any = self.start < self.end;
        loop {
            match parser.advance(&self.buf[self.start..self.end])? {
                Step::Done {
                    consumed,
                    status,
                    close,
                } => {
                    self.start += consumed;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    if close {
                        self.stream = None;
                    }
                    return Ok(status);
                }
                Step::More { consumed } => self.start += consumed,
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.end < MIN_READ {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = match stream.read(&mut self.buf[self.end..]).await {
                Ok(n) => n,
                Err(e) if !fresh && !got_any && is_disconnect(&e) => {
                    return Err(RequestError::Closed)
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return match parser.eof() {
                    Ok(Step::Done { status, .. }) => {
                        self.stream = None;
                        Ok(status)
                    }
                    _ if !fresh && !got_any => Err(RequestError::Closed),
                    Ok(Step::More { .. }) => Err(ParseError::UnexpectedEof.into()),
                    Err(e) => Err(e.into()),
                };
            }
            got_any = true;
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after another the way `Client` does: unconsumed bytes stay and new ones
    /// are appended. Returns every completed response as (status, close) and the bytes left over.
    type Fed = (Vec<(u16, bool)>, Vec<u8>);

    fn feed(pieces: &[&[u8]], at_eof: bool) -> Result<Fed, ParseError> {
        let mut parser = ResponseParser::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut done = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            loop {
                match parser.advance(&pending)? {
                    Step::Done {
                        consumed,
                        status,
                        close,
                    } => {
                        pending.drain(..consumed);
                        done.push((status, close));
                        if pending.is_empty() {
                            break;
                        }
                    }
                    Step::More { consumed } => {
                        pending.drain(..consumed);
                        break;
                    }
                }
            }
        }
        if at_eof {
            if let Step::Done { status, close, .. } = parser.eof()? {
                done.push((status, close));
            }
        }
        Ok((done, pending))
    }

    /// Every way of cutting `bytes` in two, and one byte at a time, gives `expected`.
    fn all_splits(bytes: &[u8], at_eof: bool, expected: &[(u16, bool)]) {
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let (done, rest) = feed(&[a, b], at_eof).unwrap();
            assert_eq!(done, expected, "cut at {cut}");
            assert!(rest.is_empty(), "cut at {cut}: left {rest:?}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let (done, rest) = feed(&singles, at_eof).unwrap();
        assert_eq!(done, expected, "one byte at a time");
        assert!(rest.is_empty());
    }

    const CL: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";

    #[test]
    fn content_length() {
        assert_eq!(
            ResponseParser::new().advance(CL),
            Ok(Step::Done {
                consumed: CL.len(),
                status: 200,
                close: false
            })
        );
        all_splits(CL, false, &[(200, false)]);
    }

    #[test]
    fn content_length_zero_and_large() {
        let zero = b"HTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n";
        all_splits(zero, false, &[(404, false)]);
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 100_000));
        let (done, rest) = feed(&big.chunks(4096).collect::<Vec<_>>(), false).unwrap();
        assert_eq!(done, [(200, false)]);
        assert!(rest.is_empty());
    }

    #[test]
    fn chunked() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        all_splits(body, false, &[(200, false)]);
    }

    #[test]
    fn chunked_with_trailers_and_uppercase_hex() {
        let body = b"HTTP/1.1 201 Created\r\ntransfer-encoding: gzip, Chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n";
        all_splits(body, false, &[(201, false)]);
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let body = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        all_splits(body, false, &[(200, false)]);
    }

    #[test]
    fn bare_lf_line_endings() {
        let body = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n";
        all_splits(body, false, &[(200, false)]);
    }

    #[test]
    fn back_to_back_responses() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let mut both = CL.to_vec();
        both.extend_from_slice(chunked);
        both.extend_from_slice(CL);
        let (done, rest) = feed(&[&both], false).unwrap();
        assert_eq!(done, [(200, false), (200, false), (200, false)]);
        assert!(rest.is_empty());
        // The first response's Done reports exactly its own length.
        assert_eq!(
            ResponseParser::new().advance(&both),
            Ok(Step::Done {
                consumed: CL.len(),
                status: 200,
                close: false
            })
        );
    }

    #[test]
    fn interim_responses_and_bodiless_statuses() {
        let body = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
        all_splits(body, false, &[(204, false)]);
        let not_modified = b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n";
        all_splits(not_modified, false, &[(304, false)]);
    }

    #[test]
    fn connection_close() {
        let body =
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 2\r\n\r\nok";
        all_splits(body, false, &[(200, true)]);
        let http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        all_splits(http10, false, &[(200, true)]);
        let http10_ka = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        all_splits(http10_ka, false, &[(200, false)]);
    }

    #[test]
    fn body_until_close() {
        let body = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body without length";
        all_splits(body, true, &[(200, true)]);
        // Transfer-Encoding without chunked last also runs to the end of the connection.
        let gz = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nabc";
        all_splits(gz, true, &[(200, true)]);
    }

    #[test]
    fn eof_in_the_middle_is_an_error() {
        for cut in [0, 5, 20, CL.len() - 1] {
            assert_eq!(
                feed(&[&CL[..cut]], true),
                Err(ParseError::UnexpectedEof),
                "cut {cut}"
            );
        }
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n";
        assert_eq!(feed(&[chunked], true), Err(ParseError::UnexpectedEof));
    }

    #[test]
    fn bad_input() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"HTTP/2 200 OK\r\n\r\n", ParseError::BadStatusLine),
            (b"HTTP/1.1 20 OK\r\n\r\n", ParseError::BadStatusLine),
            (b"HTTP/1.1 2000 OK\r\n\r\n", ParseError::BadStatusLine),
            (b"HTTP/1.1 099 Low\r\n\r\n", ParseError::BadStatusLine),
            (b"ICY 200 OK\r\n\r\n", ParseError::BadStatusLine),
            (b"\r\n", ParseError::BadStatusLine),
            (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", ParseError::BadHeader),
            (
                b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
                ParseError::BadHeader,
            ),
            (b"HTTP/1.1 200 OK\r\n: empty\r\n\r\n", ParseError::BadHeader),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                ParseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                ParseError::BadChunkSize,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
                ParseError::BadChunkSize,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
                ParseError::BadChunkSize,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
                ParseError::MissingChunkCrlf,
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                ParseError::UnexpectedUpgrade,
            ),
        ];
        for (input, want) in cases {
            let got = ResponseParser::new().advance(input);
            assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(input));
        }
        // Identical repeated Content-Length values are fine.
        let dup = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
        all_splits(dup, false, &[(200, false)]);
    }

    #[test]
    fn limits() {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(
            ResponseParser::new().advance(&head),
            Err(ParseError::HeadTooLarge)
        );
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            ResponseParser::new().advance(&head),
            Err(ParseError::HeadTooLarge)
        );
        let mut line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        line.extend(std::iter::repeat_n(b'e', MAX_LINE + 1));
        assert_eq!(
            ResponseParser::new().advance(&line),
            Err(ParseError::LineTooLong)
        );
    }

    // A server on a loopback socket that writes the given pieces with short pauses, then closes
    // the connection if `close` (or keeps reading requests otherwise).
    async fn serve(listener: tokio::net::TcpListener, script: Vec<(Vec<Vec<u8>>, bool)>) {
        let mut script = script.into_iter();
        'conns: loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut req = [0u8; 1024];
            loop {
                let Some((pieces, close)) = script.next() else {
                    return;
                };
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut req).await.unwrap();
                    if n == 0 {
                        continue 'conns;
                    }
                    got.extend_from_slice(&req[..n]);
                }
                assert!(got.starts_with(b"GET /p HTTP/1.1\r\nHost: h\r\n"));
                for p in pieces {
                    s.write_all(&p).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                if close {
                    continue 'conns;
                }
            }
        }
    }

    #[tokio::test]
    async fn client_split_reads_close_and_reconnect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cl = |s: &str| s.as_bytes().to_vec();
        let script = vec![
            // Content-Length, head and body in several writes.
            (
                vec![
                    cl("HTTP/1.1 200 OK\r\nConte"),
                    cl("nt-Length: 5\r\n\r"),
                    cl("\nhel"),
                    cl("lo"),
                ],
                false,
            ),
            // Chunked, split inside the size line, the data and the final CRLF.
            (
                vec![
                    cl("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"),
                    cl("1"),
                    cl("0\r\n0123456789"),
                    cl("abcdef\r\n0\r"),
                    cl("\n\r\n"),
                ],
                false,
            ),
            // Connection: close, then the server closes: the client reconnects by itself.
            (
                vec![cl(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                )],
                true,
            ),
            // A body that runs until the server closes.
            (vec![cl("HTTP/1.1 200 OK\r\n\r\nuntil"), cl(" close")], true),
            // Kept alive, but then closed without a response: the client retries on a new one.
            (
                vec![cl("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")],
                false,
            ),
            (vec![], true),
            (
                vec![cl("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")],
                false,
            ),
            // Garbage is an error.
            (vec![cl("garbage\r\n\r\n")], false),
        ];
        let server = tokio::spawn(serve(listener, script));
        let mut client = Client::new(addr, get_request("h", "/p"), None);
        assert_eq!(client.request().await.unwrap(), 200);
        assert_eq!(client.request().await.unwrap(), 404);
        assert_eq!(client.request().await.unwrap(), 200);
        assert!(client.stream.is_none());
        assert_eq!(client.request().await.unwrap(), 200);
        assert!(client.stream.is_none());
        assert_eq!(client.request().await.unwrap(), 200);
        assert_eq!(client.request().await.unwrap(), 503);
        assert!(matches!(
            client.request().await,
            Err(RequestError::Parse(ParseError::BadStatusLine))
        ));
        assert!(client.stream.is_none());
        server.await.unwrap();
    }
}
