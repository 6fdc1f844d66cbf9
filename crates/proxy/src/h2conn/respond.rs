//! One HTTP/2 stream: its request answered, and the answer's body written out within the
//! stream's flow-control window.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Body;

use super::{Answering, Cancels, ClientBody};
use crate::error::ResBody;
use crate::forward::{handle, ConnInfo};
use crate::Proxy;

/// Answers one stream: the request is handled while the client may still reset the stream
/// (which abandons the exchange), then the response goes out.
pub(super) async fn stream(
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    cancels: Arc<Cancels>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let answering = Answering(Some(cancels));
    let (parts, recv) = req.into_parts();
    let body = ClientBody::new(recv, &parts.headers);
    // Polled where it lies (handed to a helper, the exchange would take room in this future
    // twice), and in a block of its own, so that the body's pump below reuses its room.
    let response = {
        let mut handling = std::pin::pin!(handle(proxy, info, Request::from_parts(parts, body)));
        let until_reset = poll_fn(|cx| {
            if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            // The client reset the stream first: the exchange is abandoned.
            respond.poll_reset(cx).map(|_| None)
        });
        match until_reset.await {
            Some(response) => response,
            None => return,
        }
    };
    answering.finished();
    let (mut head, body) = response.into_parts();
    if let Either::Right(_) = body {
        // Portcullis's own answers: make sure nothing connection-specific went into them.
        crate::headers::strip_hop_by_hop(&mut head.headers);
    }
    head.headers.entry(header::DATE).or_insert_with(http_date);
    if body.is_end_stream() {
        if let Err(e) = respond.send_response(Response::from_parts(head, ()), true) {
            tracing::debug!(error = %e, "HTTP/2 response not sent");
        }
        return;
    }
    if let Some(len) = body.size_hint().exact() {
        head.headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(head, ()), false) {
        Ok(tx) => {
            if let Err(e) = pump(body, tx).await {
                tracing::debug!(error = %e, "HTTP/2 response body ended early");
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 response not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

/// The current time as a `Date` value.
fn http_date() -> HeaderValue {
    let mut text = Vec::with_capacity(29);
    crate::h1::push_date(&mut text);
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(super) enum Cut {
    /// The client reset the stream or the connection went away.
    #[error("stream closed by the client: {0}")]
    Client(h2::Error),
    /// The upstream body broke off; the client's stream is reset.
    #[error("response body broke off: {0}")]
    Upstream(crate::upstream::BodyError),
}

/// Writes `body` to the stream, each chunk once the client's window has room for some of it.
async fn pump(body: ResBody, tx: SendStream<Bytes>) -> Result<(), Cut> {
    let mut pump = Pump {
        body,
        tx,
        held: None,
    };
    poll_fn(|cx| pump.poll(cx)).await
}

/// A response body on its way out.
struct Pump {
    body: ResBody,
    tx: SendStream<Bytes>,
    /// A chunk taken from the body, waiting for window, and whether it is the last.
    held: Option<(Bytes, bool)>,
}

impl Pump {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Cut>> {
        loop {
            // Registered on every pass, so a reset wakes the stream whatever it waits for.
            if let Poll::Ready(reason) = self.tx.poll_reset(cx) {
                let e = match reason {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                };
                return Poll::Ready(Err(Cut::Client(e)));
            }
            if let Some((data, last)) = self.held.take() {
                while self.tx.capacity() == 0 {
                    match self.tx.poll_capacity(cx) {
                        Poll::Pending => {
                            self.held = Some((data, last));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Cut::Client(e))),
                        Poll::Ready(None) => {
                            return Poll::Ready(Err(Cut::Client(h2::Error::from(Reason::CANCEL))))
                        }
                    }
                }
                self.tx.send_data(data, last).map_err(Cut::Client)?;
                if last {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // The next chunk is read before any window is claimed: claiming window for a
            // body that has nothing to send would hold it from the connection's other streams.
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let last = self.body.is_end_stream();
                        if data.is_empty() {
                            self.tx.send_data(data, last).map_err(Cut::Client)?;
                            if last {
                                return Poll::Ready(Ok(()));
                            }
                        } else {
                            // One byte claimed; h2 raises the claim to what is sent.
                            self.tx.reserve_capacity(1);
                            self.held = Some((data, last));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.tx.reserve_capacity(0);
                            self.tx.send_trailers(trailers).map_err(Cut::Client)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(Err(Cut::Upstream(e)));
                }
                Poll::Ready(None) => {
                    self.tx.send_data(Bytes::new(), true).map_err(Cut::Client)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}
