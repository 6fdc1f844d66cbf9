//! WebSocket-style upgrades: a backend that answers `Upgrade: websocket` with 101 and then echoes
//! raw bytes, and a client that opens such a tunnel through Portcullis.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{connect_http1, read_response, spawn_http1, Server};

/// Answers an `Upgrade: websocket` request with 101 and then echoes raw bytes; anything else
/// gets 400.
pub async fn spawn_upgrade_echo() -> Server {
    spawn_http1(|mut req: Request<Incoming>| async move {
        let wants_websocket = req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if !wants_websocket {
            let mut response = Response::new(Full::new(Bytes::from_static(b"upgrade expected")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut read, &mut write).await;
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        response
    })
    .await
}

/// An open tunnel, and the `Upgrade` header of the 101 that opened it.
pub struct Tunnel {
    /// The upgraded connection.
    pub io: TokioIo<Upgraded>,
    /// The 101's `Upgrade` header.
    pub upgrade: Option<HeaderValue>,
}

impl Tunnel {
    /// Sends `message` and reads back as many bytes, which it returns.
    pub async fn echo(&mut self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.io
            .write_all(message)
            .await
            .map_err(|e| format!("writing to the tunnel: {e}"))?;
        let mut buf = vec![0u8; message.len()];
        self.io
            .read_exact(&mut buf)
            .await
            .map_err(|e| format!("reading from the tunnel: {e}"))?;
        Ok(buf)
    }
}

/// Opens a WebSocket upgrade to `host` `path` through Portcullis at `addr`.
pub async fn open_websocket(addr: SocketAddr, host: &str, path: &str) -> Result<Tunnel, String> {
    let mut sender = connect_http1::<Full<Bytes>>(addr).await?;
    let request = Request::builder()
        .uri(path)
        .header(header::HOST, host)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("upgrade request: {e}"))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let response = read_response(response).await?;
        return Err(format!(
            "expected 101, got {} {:?}",
            response.status,
            response.text()
        ));
    }
    let upgrade = response.headers().get(header::UPGRADE).cloned();
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(Tunnel {
        io: TokioIo::new(upgraded),
        upgrade,
    })
}
