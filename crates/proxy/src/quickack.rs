//! Quick ACKs where a peer that leaves Nagle's algorithm on would otherwise stall.
//!
//! A peer with Nagle on holds its next small segment until the last one is acknowledged; our
//! kernel delays that acknowledgement (up to ~40 ms) while we have nothing to send. Together
//! they stall every message the peer writes in two pieces (a head, then its body), but only on
//! reused connections, because fresh ones start in quick-ack mode. So whenever Portcullis is
//! about to wait for more bytes of a message it has only part of, it re-arms `TCP_QUICKACK` on
//! that socket, which also sends the pending acknowledgement at once. A message that arrives in
//! one read costs no system call. Linux only; elsewhere this compiles to nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream whose TCP socket can be told to acknowledge at once.
pub(crate) trait QuickAck {
    /// Acknowledges what has arrived now, and keeps doing so for a while.
    fn quickack(&self);
}

impl QuickAck for TcpStream {
    fn quickack(&self) {
        quickack(self);
    }
}

impl QuickAck for crate::server::ClientTls {
    fn quickack(&self) {
        quickack(self.get_ref().0);
    }
}

/// Re-arms `TCP_QUICKACK` on `stream`.
pub(crate) fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        // Best effort: a socket that refuses only loses the speed-up.
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Where a stream of HTTP messages stands: at a message boundary, or within one.
pub(crate) trait Progress {
    /// Takes the next bytes read; returns whether a message is still incomplete after them.
    fn feed(&mut self, bytes: &[u8]) -> bool;

    /// A read found nothing: returns whether that is a wait within a message.
    fn waiting(&mut self) -> bool {
        false
    }
}

/// HTTP/2 frames: incomplete while a frame header or payload is partly read.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    header: [u8; 9],
    have: usize,
    remaining: usize,
}

impl Progress for Frames {
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                self.remaining = usize::from(self.header[0]) << 16
                    | usize::from(self.header[1]) << 8
                    | usize::from(self.header[2]);
            }
        }
        self.have > 0 || self.remaining > 0
    }
}

/// HTTP/1.x responses read by hyper, whose framing Portcullis does not see: a read that finds
/// nothing more, after part of a response arrived since the request was written, is a wait for
/// the rest of it. Parsing every response again only to know where it ends would cost more than
/// the one acknowledgement this may send after a response that was already complete.
#[derive(Debug, Default)]
pub(crate) struct Responses {
    unsettled: bool,
}

impl Progress for Responses {
    fn feed(&mut self, _bytes: &[u8]) -> bool {
        self.unsettled = true;
        false
    }

    fn waiting(&mut self) -> bool {
        std::mem::take(&mut self.unsettled)
    }
}

/// An upstream stream read by hyper, acknowledging at once after a read that leaves a message
/// incomplete.
pub(crate) struct Acking<S, P> {
    inner: S,
    progress: P,
}

impl<S, P> Acking<S, P> {
    /// `inner`, with `progress` telling where its messages end.
    pub(crate) fn new(inner: S, progress: P) -> Self {
        Acking { inner, progress }
    }
}

impl<S, P> AsyncRead for Acking<S, P>
where
    S: AsyncRead + QuickAck + Unpin,
    P: Progress + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() && this.progress.feed(read) {
                    this.inner.quickack();
                }
            }
            Poll::Pending if this.progress.waiting() => this.inner.quickack(),
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, P: Unpin> AsyncWrite for Acking<S, P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            0,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn frames_are_incomplete_only_within_a_header_or_payload() {
        let mut p = Frames::default();
        let mut two = frame(10);
        two.extend(frame(0));
        assert!(!p.feed(&two), "whole frames");
        let f = frame(100);
        assert!(p.feed(&f[..4]), "part of a header");
        assert!(p.feed(&f[4..50]), "part of a payload");
        assert!(!p.feed(&f[50..]), "the rest");
        let big = frame(70_000);
        assert!(p.feed(&big[..9]));
        assert!(!p.feed(&big[9..]));
    }

    #[test]
    fn responses_count_as_waiting_once_after_bytes_arrived() {
        let mut p = Responses::default();
        assert!(
            !p.waiting(),
            "nothing arrived yet: waiting for the response to start"
        );
        assert!(!p.feed(b"HTTP/1.1 200 OK\r\n"));
        assert!(p.waiting(), "part of a response arrived, then nothing");
        assert!(!p.waiting(), "acknowledged once per wait");
    }
}
