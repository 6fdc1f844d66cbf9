//! The admin server: `/healthz`, `/readyz`, `/config`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use model::Diagnostic;
use table::Published;
use tokio::net::TcpListener;

/// What the admin endpoints report on.
pub struct AdminState {
    published: Arc<Published>,
    diagnostics: Mutex<Vec<Diagnostic>>,
    /// What `/readyz` adds about the source (in cluster mode: which lists have synced).
    readiness: Mutex<String>,
}

impl AdminState {
    /// State over the published table and the diagnostics of the last translation.
    pub fn new(published: Arc<Published>, diagnostics: Vec<Diagnostic>) -> Self {
        AdminState {
            published,
            diagnostics: Mutex::new(diagnostics),
            readiness: Mutex::new(String::new()),
        }
    }

    /// Replaces what `/readyz` says about the source.
    pub fn set_readiness(&self, text: String) {
        if let Ok(mut r) = self.readiness.lock() {
            *r = text;
        }
    }

    fn readiness(&self) -> String {
        self.readiness.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Replaces the diagnostics after a new translation.
    pub fn set_diagnostics(&self, diagnostics: Vec<Diagnostic>) {
        if let Ok(mut d) = self.diagnostics.lock() {
            *d = diagnostics;
        }
    }

    fn config_json(&self) -> serde_json::Value {
        let table = self.published.load_full();
        let diagnostics = self
            .diagnostics
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        serde_json::json!({
            "generation": self.published.generation(),
            "routes": crate::report::routes_json(&table),
            "backends": table.backends,
            "diagnostics": diagnostics,
        })
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    Ok(match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, text, "ok\n"),
        "/readyz" if state.published.is_ready() => respond(
            StatusCode::OK,
            text,
            format!("ready\n{}", state.readiness()),
        ),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            format!("no routing table published yet\n{}", state.readiness()),
        ),
        "/config" => {
            let body = serde_json::to_vec_pretty(&state.config_json()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /healthz, /readyz, /config\n",
        ),
    })
}

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let service = service_fn(move |req| handle(state.clone(), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
