//! Relaying one body between the client and the upstream, in either direction, with the framing
//! rewritten where the two sides need different framing.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::codec::{self, Chunked, Framing};
use super::{Buf, Deadline};
use crate::quickack::QuickAck;

/// Bytes read at a time while relaying a body.
const BODY_READ: usize = 64 * 1024;

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
            let mut chunked = Chunked::with_limit(ends.limit);
            loop {
                if !buf.is_empty() {
                    let done = if mode == Mode::Decode {
                        scratch.clear();
                        let (n, done) = chunked
                            .decode(buf.unread(), &mut scratch)
                            .map_err(RelayError::from)?;
                        buf.consume(n);
                        if !scratch.is_empty() {
                            ends.put(dst, &scratch).await?;
                        }
                        done
                    } else {
                        let (n, done) = chunked.scan(buf.unread()).map_err(RelayError::from)?;
                        ends.put(dst, &buf.unread()[..n]).await?;
                        buf.consume(n);
                        done
                    };
                    if done {
                        break;
                    }
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
