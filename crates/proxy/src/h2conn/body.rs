//! A request body received on an HTTP/2 stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

/// The body of a request received on an HTTP/2 stream: its DATA frames, then its trailers.
/// Received bytes are handed back to the stream's flow-control window as soon as they are
/// taken, so the client may send more while they travel on.
pub struct ClientBody {
    recv: h2::RecvStream,
    /// The declared `Content-Length`, when the request had a valid one.
    length: Option<u64>,
    /// Every DATA frame has been read; trailers are next.
    data_done: bool,
}

impl ClientBody {
    /// The body of a stream whose request carried `headers`.
    pub(crate) fn new(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        let length = if recv.is_end_stream() {
            Some(0)
        } else {
            declared_length(headers)
        };
        ClientBody {
            recv,
            length,
            data_done: false,
        }
    }
}

/// The length a request declares: one `Content-Length` value, or several equal ones (h2 itself
/// refuses a body that does not match it).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let n: u64 = part.trim().parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::declared_length;
    use http::{HeaderMap, HeaderValue};

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(http::header::CONTENT_LENGTH, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn a_declared_length_is_one_value_or_several_equal_ones() {
        assert_eq!(declared_length(&with(&[])), None);
        assert_eq!(declared_length(&with(&["12"])), Some(12));
        assert_eq!(declared_length(&with(&["12", "12"])), Some(12));
        assert_eq!(declared_length(&with(&["12, 12"])), Some(12));
        assert_eq!(declared_length(&with(&["12", "13"])), None);
        assert_eq!(declared_length(&with(&["twelve"])), None);
        assert_eq!(declared_length(&with(&["-1"])), None);
    }
}
