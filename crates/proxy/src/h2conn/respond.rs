//! One HTTP/2 stream's exchange: the request handled while the client may still reset the
//! stream, then the response written out within the stream's flow-control window.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response};
use http2::frame::Reason;
use http2::server::Connection;
use http_body_util::Either;
use hyper::body::Body;

use super::body::Shared;
use super::{Answering, Cancels, ClientBody};
use crate::error::ResBody;
use crate::forward::{handle, ConnInfo};
use crate::Proxy;

/// Handles one request; `None` when the client reset the stream first (the exchange is then
/// abandoned where it stood).
pub(super) async fn exchange(
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    cancels: Arc<Cancels>,
    shared: Arc<Shared>,
    req: Request<ClientBody>,
) -> (u32, Option<Response<ResBody>>) {
    let answering = Answering(Some(cancels));
    let mut handling = std::pin::pin!(handle(proxy, info, req));
    let response = poll_fn(|cx| {
        if shared.is_cancelled() {
            return Poll::Ready(None);
        }
        shared.exchange.register(cx.waker());
        handling.as_mut().poll(cx).map(Some)
    })
    .await;
    if response.is_some() {
        answering.finished();
    }
    (shared.id, response)
}

/// Writes the head of `response` on `stream`; returns the body still to be sent, if any.
pub(super) fn start(
    conn: &mut Connection,
    stream: u32,
    response: Response<ResBody>,
) -> Option<Pump> {
    let (mut head, body) = response.into_parts();
    if let Either::Right(_) = body {
        // Portcullis's own answers: make sure nothing connection-specific went into them.
        crate::headers::strip_hop_by_hop(&mut head.headers);
    }
    head.headers.entry(header::DATE).or_insert_with(http_date);
    let end = body.is_end_stream();
    if !end {
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
    }
    conn.send_head(stream, head.status.as_u16(), fields(&head.headers), end);
    (!end).then_some(Pump {
        stream,
        body,
        held: None,
    })
}

/// The fields of `headers` as the HTTP/2 encoder takes them.
pub(super) fn fields(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes(), v.is_sensitive()))
}

/// The current time as a `Date` value.
fn http_date() -> HeaderValue {
    let mut text = Vec::with_capacity(29);
    crate::h1::push_date(&mut text);
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A response body on its way out.
pub(super) struct Pump {
    pub(super) stream: u32,
    body: ResBody,
    /// A chunk taken from the body and not yet sent in full, and whether it is the last.
    held: Option<(Bytes, bool)>,
}

/// Output past which bodies wait for the client to read what is already written.
const OUT_HIGH: usize = 64 * 1024;

impl Pump {
    /// Moves the body on as far as the windows and the output allow; ready once the body is
    /// sent in full, broke off, or the stream is gone.
    pub(super) fn poll(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !conn.is_open(self.stream) {
                return Poll::Ready(());
            }
            if let Some((mut data, last)) = self.held.take() {
                if !conn.send_data(self.stream, &mut data, last) {
                    // Woken by the client's next window update.
                    self.held = Some((data, last));
                    return Poll::Pending;
                }
                if last {
                    return Poll::Ready(());
                }
                continue;
            }
            if conn.output().len() >= OUT_HIGH {
                // Woken once the connection has written some of it.
                return Poll::Pending;
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.held = Some((data, self.body.is_end_stream())),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            conn.send_trailers(self.stream, fields(&trailers));
                            return Poll::Ready(());
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "HTTP/2 response body broke off");
                    conn.reset(self.stream, Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    conn.send_data(self.stream, &mut Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}
