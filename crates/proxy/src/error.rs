//! The one place where failures become HTTP responses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::upstream::{PooledBody, UpstreamError};

/// The body type the proxy answers with: a streamed upstream body or a small local one.
pub type ResBody = Either<PooledBody, Full<Bytes>>;

/// nginx's "client closed request" code, for the access log.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The `Server` header value on every response Portcullis makes or forwards without one.
pub const SERVER: HeaderValue = HeaderValue::from_static("portcullis");

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No rule matched and there is no default backend.
    #[error("no route for this host and path")]
    NoRoute,
    /// The route's backend has no ready endpoint (or cannot serve at all).
    #[error("no ready endpoint for backend {0}")]
    NoEndpoint(String),
    /// Connecting to or talking to the upstream failed.
    #[error("upstream {addr}: {source}")]
    Upstream {
        /// The endpoint that failed.
        addr: String,
        /// The underlying error.
        #[source]
        source: UpstreamError,
    },
    /// The upstream did not send response headers in time.
    #[error("upstream {0} timed out")]
    Timeout(String),
    /// The request itself is unusable (e.g. a malformed header).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request head is larger than the proxy accepts, or has too many fields.
    #[error("request head too large")]
    HeadTooLarge,
    /// The request body is larger than the route allows (`proxy-body-size`).
    #[error("request body too large")]
    PayloadTooLarge,
    /// The client stopped sending its request body.
    #[error("request body stalled")]
    RequestTimeout,
    /// The client went away before the response (logged only, as nginx's 499).
    #[error("client closed the request")]
    ClientClosed,
    /// The client's address is not allowed on the route (`allowlist-source-range`,
    /// `denylist-source-range`).
    #[error("client address not allowed")]
    Forbidden,
    /// The route cannot be served as configured; the text says why.
    #[error("route denied: {0}")]
    Denied(String),
}

impl ProxyError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientClosed => client_closed(),
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::Denied(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The response sent to the client.
    pub fn to_response(&self) -> Response<ResBody> {
        local_response(self.status())
    }
}

/// The media type of the bodies Portcullis writes itself.
pub(crate) const LOCAL_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The body of a response Portcullis makes itself: `<code> <reason>` and a newline.
pub(crate) fn local_body(status: StatusCode) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut body = Vec::with_capacity(5 + reason.len());
    body.extend_from_slice(status.as_str().as_bytes());
    body.push(b' ');
    body.extend_from_slice(reason.as_bytes());
    body.push(b'\n');
    body
}

/// A small local response for `status`, with `Server`, `Content-Type` and `Content-Length`
/// (`Date` is added by the HTTP server).
pub fn local_response(status: StatusCode) -> Response<ResBody> {
    let text = local_body(status);
    let len = text.len();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::SERVER, SERVER);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(LOCAL_CONTENT_TYPE),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}
