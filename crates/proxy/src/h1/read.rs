//! Reading HTTP/1.x heads: a request head from the client, a response head from an upstream.

use std::io;
use std::time::Duration;

use super::codec::{self, HeadError, RequestHead, ResponseHead};
use super::pool::Upstream;
use super::{Buf, ClientIo};
use crate::quickack::QuickAck;
use crate::upstream::UpstreamError;

/// Bytes read at a time while a head is incomplete.
pub(super) const HEAD_READ: usize = 4096;

/// What waiting for a request head gave.
pub(super) enum HeadRead {
    Head(RequestHead),
    Closed,
    /// The head did not complete within the client header timeout.
    TimedOut,
    Bad(HeadError),
}

/// Reads until a request head is complete. Once part of one has arrived, the rest must come
/// within `header_timeout`.
pub(super) async fn read_request_head<S: ClientIo>(
    stream: &mut S,
    buf: &mut Buf,
    header_timeout: Duration,
) -> HeadRead {
    loop {
        if buf.is_empty() {
            // Idle: hold no buffer until the client sends something.
            buf.release_if_empty();
            if stream.wait_readable().await.is_err() {
                return HeadRead::Closed;
            }
        } else {
            match codec::parse_request(buf.unread()) {
                Ok(Some(head)) => return HeadRead::Head(head),
                // Boxed, so that the usual wait, a head in one read, stays small.
                Ok(None) => return Box::pin(read_rest(stream, buf, header_timeout)).await,
                Err(e) => return HeadRead::Bad(e),
            }
        }
        match buf.fill(stream, HEAD_READ).await {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(_) => {}
        }
    }
}

/// Reads the rest of a request head whose first bytes are in `buf`, within `timeout`.
async fn read_rest<S: ClientIo>(stream: &mut S, buf: &mut Buf, timeout: Duration) -> HeadRead {
    let expired = tokio::time::sleep(timeout);
    tokio::pin!(expired);
    loop {
        // Part of a head: acknowledge it now, or a client with Nagle on holds the rest.
        stream.quickack();
        tokio::select! {
            biased;
            read = buf.fill(stream, HEAD_READ) => match read {
                Ok(0) | Err(_) => return HeadRead::Closed,
                Ok(_) => {}
            },
            () = &mut expired => return HeadRead::TimedOut,
        }
        match codec::parse_request(buf.unread()) {
            Ok(Some(head)) => return HeadRead::Head(head),
            Ok(None) => {}
            Err(e) => return HeadRead::Bad(e),
        }
    }
}

pub(super) async fn read_response_head(
    up: &mut Upstream,
    head_request: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !up.buf.is_empty() {
            match codec::parse_response(up.buf.unread(), head_request) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => up.stream.quickack(),
                Err(e) => return Err(UpstreamError::Protocol(head_error_text(e))),
            }
        }
        match up.buf.fill(&mut up.stream, HEAD_READ).await {
            Ok(0) if up.buf.is_empty() => return Err(UpstreamError::Closed),
            Ok(0) => return Err(UpstreamError::Protocol("response head cut short")),
            Ok(_) => {}
            Err(e)
                if up.buf.is_empty()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(UpstreamError::Closed)
            }
            Err(e) => return Err(UpstreamError::Io(e)),
        }
    }
}

fn head_error_text(e: HeadError) -> &'static str {
    match e {
        HeadError::TooLarge | HeadError::TargetTooLong => "response head too large",
        HeadError::TooManyHeaders => "too many response header fields",
        HeadError::Unsupported(what) | HeadError::Invalid(what) => what,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::relay::tests::{source, Counting};
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;

    impl ClientIo for Counting {
        fn wait_readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send + '_ {
            std::future::ready(Ok(()))
        }
    }

    async fn head_acks(parts: &[&[u8]]) -> usize {
        let (mut src, mut peer, acks) = source();
        let mut buf = Buf::new();
        let reading = tokio::spawn(async move {
            let head = read_request_head(&mut src, &mut buf, Duration::from_secs(5)).await;
            matches!(head, HeadRead::Head(_))
        });
        for part in parts {
            peer.write_all(part).await.unwrap();
            // Each part is read on its own before the next is written.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        assert!(reading.await.unwrap(), "a whole head is read");
        acks.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_head_in_one_read_costs_no_quick_ack() {
        assert_eq!(head_acks(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await, 0);
    }

    #[tokio::test]
    async fn part_of_a_head_is_acknowledged_before_waiting_for_the_rest() {
        let acks = head_acks(&[b"GET / HTTP/1.1\r\nHo", b"st: a\r\n\r\n"]).await;
        assert!(acks >= 1);
    }
}
