//! Relaying one body between the client and the upstream, in either direction, with the framing
//! rewritten where the two sides need different framing. A request body goes upstream while
//! the upstream is watched: one that answers before the body is complete is answered to.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::codec::{self, Chunked, Framing};
use super::{Buf, Deadline};
use crate::quickack::QuickAck;

/// Bytes read at a time while relaying a body.
const BODY_READ: usize = 64 * 1024;
/// Bytes read at a time from an upstream watched during an upload.
const WATCH_READ: usize = 2048;

pub(super) async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// How a body is rewritten on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Bytes go through as they are (framing included).
    Pass,
    /// Chunked framing is removed (for HTTP/1.0 clients).
    Decode,
    /// A chunked body is sent chunked in framing of our own: no chunk extensions, and only
    /// the trailer fields that may be forwarded.
    Reframe,
    /// A close-delimited body is sent chunked (for HTTP/1.1 clients).
    Encode,
}

#[derive(Debug)]
pub(super) enum RelayError {
    Read(io::Error),
    Write(io::Error),
    Eof,
    Framing(&'static str),
    /// No bytes from the sender within the body idle timeout.
    ReadStalled,
    /// The receiver took nothing within the body idle timeout.
    WriteStalled,
    /// A chunked body grew past the limit.
    TooLarge,
}

/// The clock a body relay waits on, and how long each wait may take.
pub(super) struct Ends<'d> {
    /// The connection's clock.
    pub(super) deadline: &'d mut Deadline,
    /// Longest wait for the sender's next bytes.
    pub(super) read_idle: Duration,
    /// Longest wait for the receiver to take bytes.
    pub(super) write_idle: Duration,
    /// Largest chunked body in data bytes (0 = unlimited).
    pub(super) limit: u64,
    /// Bytes written to the receiver so far.
    pub(super) written: u64,
}

impl Ends<'_> {
    /// Reads more of a body. The body is incomplete, so what has arrived is acknowledged first:
    /// a sender with Nagle on would otherwise hold its next segment for the delayed ACK.
    async fn fill<R: AsyncRead + QuickAck + Unpin>(
        &mut self,
        buf: &mut Buf,
        src: &mut R,
    ) -> Result<usize, RelayError> {
        src.quickack();
        match self
            .deadline
            .within(self.read_idle, buf.fill(src, BODY_READ))
            .await
        {
            Some(read) => read.map_err(RelayError::Read),
            None => Err(RelayError::ReadStalled),
        }
    }

    async fn put<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        bytes: &[u8],
    ) -> Result<(), RelayError> {
        self.written += bytes.len() as u64;
        match self
            .deadline
            .within(self.write_idle, dst.write_all(bytes))
            .await
        {
            Some(written) => written.map_err(RelayError::Write),
            None => Err(RelayError::WriteStalled),
        }
    }
}

impl From<codec::ChunkError> for RelayError {
    fn from(e: codec::ChunkError) -> Self {
        if e == codec::ChunkError::TOO_LARGE {
            RelayError::TooLarge
        } else {
            RelayError::Framing(e.0)
        }
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Read(e) => write!(f, "read: {e}"),
            RelayError::Write(e) => write!(f, "write: {e}"),
            RelayError::Eof => f.write_str("ended before the body was complete"),
            RelayError::Framing(what) => write!(f, "chunked framing: {what}"),
            RelayError::TooLarge => f.write_str("body larger than the route allows"),
            RelayError::ReadStalled => f.write_str("no body bytes within the body idle timeout"),
            RelayError::WriteStalled => f.write_str("body not taken within the body idle timeout"),
        }
    }
}

/// Copies one body delimited by `framing` from `src` (bytes already read are in `buf`) to `dst`.
/// Bytes after the body stay in `buf`.
pub(super) async fn relay<R, W>(
    src: &mut R,
    buf: &mut Buf,
    dst: &mut W,
    framing: Framing,
    mode: Mode,
    mut ends: Ends<'_>,
) -> Result<u64, RelayError>
where
    R: AsyncRead + QuickAck + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scratch = Vec::new();
    match framing {
        Framing::None => return Ok(0),
        Framing::Length(total) => {
            let mut left = total;
            loop {
                let take = (buf.unread().len() as u64).min(left) as usize;
                if take > 0 {
                    ends.put(dst, &buf.unread()[..take]).await?;
                    buf.consume(take);
                    left -= take as u64;
                }
                if left == 0 {
                    break;
                }
                if ends.fill(buf, src).await? == 0 {
                    return Err(RelayError::Eof);
                }
            }
        }
        Framing::Chunked => {
            let mut chunked = if mode == Mode::Reframe {
                Chunked::forwarding(ends.limit)
            } else {
                Chunked::with_limit(ends.limit)
            };
            loop {
                if !buf.is_empty()
                    && put_chunked(&mut chunked, mode, buf, dst, &mut scratch, &mut ends).await?
                {
                    break;
                }
                if ends.fill(buf, src).await? == 0 {
                    return Err(RelayError::Eof);
                }
            }
        }
        Framing::Close => {
            loop {
                if !buf.is_empty() {
                    let data = buf.unread();
                    if mode == Mode::Encode {
                        scratch.clear();
                        codec::push_chunk_header(data.len(), &mut scratch);
                        scratch.extend_from_slice(data);
                        scratch.extend_from_slice(b"\r\n");
                        ends.put(dst, &scratch).await?;
                    } else {
                        ends.put(dst, data).await?;
                    }
                    let n = data.len();
                    buf.consume(n);
                }
                if ends.fill(buf, src).await? == 0 {
                    break;
                }
            }
            if mode == Mode::Encode {
                scratch.clear();
                codec::push_last_chunk(&mut scratch);
                ends.put(dst, &scratch).await?;
            }
        }
    }
    dst.flush().await.map_err(RelayError::Write)?;
    Ok(ends.written)
}

/// Passes on what `buf` holds of a chunked body as `mode` says; returns whether it has ended.
async fn put_chunked<W: AsyncWrite + Unpin>(
    chunked: &mut Chunked,
    mode: Mode,
    buf: &mut Buf,
    dst: &mut W,
    scratch: &mut Vec<u8>,
    ends: &mut Ends<'_>,
) -> Result<bool, RelayError> {
    match mode {
        Mode::Reframe => {
            let (n, done, start) = chunked.reframe(buf.unread(), scratch)?;
            buf.consume(n);
            if start < scratch.len() {
                ends.put(dst, &scratch[start..]).await?;
            }
            Ok(done)
        }
        Mode::Decode => {
            scratch.clear();
            let (n, done) = chunked.decode(buf.unread(), scratch)?;
            buf.consume(n);
            if !scratch.is_empty() {
                ends.put(dst, scratch).await?;
            }
            Ok(done)
        }
        Mode::Pass | Mode::Encode => {
            let (n, done) = chunked.scan(buf.unread())?;
            ends.put(dst, &buf.unread()[..n]).await?;
            buf.consume(n);
            Ok(done)
        }
    }
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Uploaded {
    /// The whole body went upstream.
    Complete,
    /// The upstream answered, closed or stopped taking the body before all of it was sent.
    /// `left`: bytes of a Content-Length body not yet read from the client (`None`: a chunked
    /// body, whose rest is unknown).
    Answered { left: Option<u64> },
}

/// The upstream end of an upload: its stream, and the read buffer an early answer goes into.
pub(super) struct Watched<'u, U> {
    pub(super) stream: &'u mut U,
    pub(super) buf: &'u mut Buf,
}

impl<U: AsyncRead + AsyncWrite + Unpin> Watched<'_, U> {
    /// Reads what the upstream sends during the upload. Ready once that is a final response
    /// head (or anything that is not a response head), or the upstream closed or failed.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.buf.poll_fill(self.stream, cx, WATCH_READ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) if answered(self.buf.unread()) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Writes `bytes` upstream unless it answers first: true once all are written, false when
    /// it answered, closed, or failed to take them.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let mut written = 0;
        poll_fn(|cx| loop {
            if self.poll_answer(cx).is_ready() {
                return Poll::Ready(false);
            }
            if written == bytes.len() {
                return Poll::Ready(true);
            }
            match Pin::new(&mut *self.stream).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }
}

/// Whether `bytes`, what an upstream sent during an upload, begin a final answer: a complete
/// head that is not interim, or bytes that are no response head. Interim heads (`100
/// Continue`, `103 Early Hints`) stay in the buffer for the response relay.
fn answered(bytes: &[u8]) -> bool {
    let mut at = 0;
    loop {
        match codec::parse_response(&bytes[at..], false) {
            Ok(Some(head)) if head.status < 200 && head.status != 101 => at += head.len,
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => return false,
        }
    }
}

/// Writes `bytes` upstream within the write idle time; false when the upstream answered first.
async fn send<U: AsyncRead + AsyncWrite + Unpin>(
    ends: &mut Ends<'_>,
    up: &mut Watched<'_, U>,
    bytes: &[u8],
) -> Result<bool, RelayError> {
    ends.written += bytes.len() as u64;
    match ends.deadline.within(ends.write_idle, up.write(bytes)).await {
        Some(written) => Ok(written),
        None => Err(RelayError::WriteStalled),
    }
}

/// Reads more of the body from the client while watching the upstream: `Some(n)` bytes read
/// (0 at the end of the stream), `None` when the upstream answered first.
async fn fill_watching<R, U>(
    ends: &mut Ends<'_>,
    buf: &mut Buf,
    src: &mut R,
    up: &mut Watched<'_, U>,
) -> Result<Option<usize>, RelayError>
where
    R: AsyncRead + QuickAck + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    src.quickack();
    let reading = async {
        tokio::select! {
            biased;
            () = poll_fn(|cx| up.poll_answer(cx)) => None,
            read = buf.fill(src, BODY_READ) => Some(read),
        }
    };
    match ends.deadline.within(ends.read_idle, reading).await {
        Some(Some(read)) => read.map(Some).map_err(RelayError::Read),
        Some(None) => Ok(None),
        None => Err(RelayError::ReadStalled),
    }
}

/// Sends a request body delimited by `framing` from the client (`src`, bytes already read in
/// `buf`) upstream, a chunked one re-framed ([`Mode::Reframe`]). The upstream is watched all
/// along; when it answers before the body is complete, the upload stops there. Bytes after
/// the body stay in `buf`.
pub(super) async fn upload<R, U>(
    src: &mut R,
    buf: &mut Buf,
    mut up: Watched<'_, U>,
    framing: Framing,
    mut ends: Ends<'_>,
) -> Result<Uploaded, RelayError>
where
    R: AsyncRead + QuickAck + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut left, chunked) = match framing {
        Framing::Length(n) => (n, None),
        Framing::Chunked => (0, Some(Chunked::forwarding(ends.limit))),
        Framing::None | Framing::Close => return Ok(Uploaded::Complete),
    };
    let mut chunked = chunked;
    let answered = |left| Uploaded::Answered {
        left: (framing != Framing::Chunked).then_some(left),
    };
    let mut scratch = Vec::new();
    let mut done = left == 0 && chunked.is_none();
    loop {
        if !buf.is_empty() && !done {
            let sent = if let Some(chunked) = chunked.as_mut() {
                let (n, end, start) = chunked.reframe(buf.unread(), &mut scratch)?;
                buf.consume(n);
                done = end;
                start == scratch.len() || send(&mut ends, &mut up, &scratch[start..]).await?
            } else {
                let take = (buf.unread().len() as u64).min(left) as usize;
                let sent = send(&mut ends, &mut up, &buf.unread()[..take]).await?;
                buf.consume(take);
                left -= take as u64;
                done = left == 0;
                sent
            };
            if !sent {
                return Ok(answered(left));
            }
        }
        if done {
            return match ends
                .deadline
                .within(ends.write_idle, up.stream.flush())
                .await
            {
                Some(Ok(())) => Ok(Uploaded::Complete),
                Some(Err(_)) => Ok(answered(left)),
                None => Err(RelayError::WriteStalled),
            };
        }
        match fill_watching(&mut ends, buf, src, &mut up).await? {
            Some(0) => return Err(RelayError::Eof),
            Some(_) => {}
            None => return Ok(answered(left)),
        }
    }
}

/// Reads and drops the next `left` bytes of a body from `src` (first those already read, in
/// `buf`), each read waiting at most the read idle time.
pub(super) async fn discard<R: AsyncRead + QuickAck + Unpin>(
    src: &mut R,
    buf: &mut Buf,
    mut left: u64,
    mut ends: Ends<'_>,
) -> Result<(), RelayError> {
    loop {
        let take = (buf.unread().len() as u64).min(left) as usize;
        buf.consume(take);
        left -= take as u64;
        if left == 0 {
            return Ok(());
        }
        if ends.fill(buf, src).await? == 0 {
            return Err(RelayError::Eof);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWriteExt, DuplexStream, ReadBuf};

    /// One end of an in-memory pipe that counts the quick ACKs asked of it.
    pub(crate) struct Counting {
        pub(crate) inner: DuplexStream,
        pub(crate) acks: Arc<AtomicUsize>,
    }

    impl QuickAck for Counting {
        fn quickack(&self) {
            self.acks.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A counting source, the peer's end of it, and the counter.
    pub(crate) fn source() -> (Counting, DuplexStream, Arc<AtomicUsize>) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let acks = Arc::new(AtomicUsize::new(0));
        let src = Counting {
            inner: ours,
            acks: acks.clone(),
        };
        (src, theirs, acks)
    }

    async fn relay_length(total: u64, first: &[u8], rest: &[u8]) -> (Vec<u8>, usize) {
        let (mut src, mut peer, acks) = source();
        peer.write_all(rest).await.unwrap();
        let mut buf = Buf::new();
        buf.data.extend_from_slice(first);
        let mut out = Vec::new();
        let mut deadline = Deadline::new(Duration::from_secs(5));
        let ends = Ends {
            deadline: &mut deadline,
            read_idle: Duration::from_secs(5),
            write_idle: Duration::from_secs(5),
            limit: 0,
            written: 0,
        };
        relay(
            &mut src,
            &mut buf,
            &mut out,
            Framing::Length(total),
            Mode::Pass,
            ends,
        )
        .await
        .unwrap();
        (out, acks.load(Ordering::Relaxed))
    }

    #[test]
    fn only_a_final_head_or_garbage_is_an_early_answer() {
        assert!(!answered(b""));
        assert!(!answered(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!answered(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
        ));
        assert!(!answered(b"HTTP/1.1 401 Unauth"));
        assert!(answered(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\n\r\n"
        ));
        assert!(answered(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"));
        assert!(answered(b"\x16\x03\x01 not http"));
    }

    #[tokio::test]
    async fn a_body_already_read_costs_no_quick_ack() {
        let (out, acks) = relay_length(5, b"hello", b"").await;
        assert_eq!(out, b"hello");
        assert_eq!(acks, 0);
    }

    #[tokio::test]
    async fn waiting_for_the_rest_of_a_body_acknowledges_first() {
        let (out, acks) = relay_length(10, b"hello", b"world").await;
        assert_eq!(out, b"helloworld");
        assert!(
            acks >= 1,
            "the part already read is acknowledged before waiting"
        );
    }
}
