//! The admin server: `/healthz`, `/readyz`, `/config`, `/metrics`, and the admin page (`/`) with
//! the status it draws (`/status.json`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

use crate::metrics::Metrics;

mod page;
mod rates;
mod status;

/// What the admin endpoints report on.
pub struct AdminState {
    published: Arc<Published>,
    diagnostics: Mutex<Vec<Diagnostic>>,
    /// What `/readyz` adds about the source (in cluster mode: which lists have synced).
    readiness: Mutex<String>,
    /// Set when shutdown begins: `/readyz` then answers 503 so load balancers stop sending.
    draining: AtomicBool,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// The counts behind the admin page's request rates.
    rates: rates::Sampler,
}

impl AdminState {
    /// State over the published table, with the data plane's counters in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        AdminState {
            published: metrics.published.clone(),
            diagnostics: Mutex::new(Vec::new()),
            readiness: Mutex::new(String::new()),
            draining: AtomicBool::new(false),
            metrics,
            rates: rates::Sampler::default(),
        }
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
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

    /// Takes a new translation: its diagnostics, and how long it took (for `/metrics`).
    pub fn set_diagnostics(&self, diagnostics: Vec<Diagnostic>, took: Duration) {
        self.metrics.control.published(took, &diagnostics);
        if let Ok(mut d) = self.diagnostics.lock() {
            *d = diagnostics;
        }
    }

    /// Troubled endpoints: failing, ejected or found down by active checks.
    fn endpoint_health(&self) -> serde_json::Value {
        let views = self.metrics.shared.health.view();
        serde_json::Value::Array(
            views
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "backend": v.backend,
                        "address": v.addr.to_string(),
                        "usable": v.usable,
                        "failures": v.failures,
                        "ejections": v.ejections,
                        "active_down": v.active_down,
                    })
                })
                .collect(),
        )
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
            "endpoint_health": self.endpoint_health(),
        })
    }
}

impl AdminState {
    /// What the admin page shows; samples the request counters when the last sample is old.
    fn status(&self) -> status::Status {
        let table = self.published.load_full();
        let now = std::time::Instant::now();
        if self.rates.due(now) {
            let totals = self.metrics.shared.stats.totals();
            self.rates.record(now, rates::sample(&table, &totals));
        }
        let rates = self.rates.rates();
        let health = self.metrics.shared.health.view();
        let diagnostics = self
            .diagnostics
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        status::build(&status::Inputs {
            table: &table,
            generation: self.published.generation(),
            ready: self.published.is_ready(),
            draining: self.draining.load(Ordering::Relaxed),
            health: &health,
            rates: rates.as_ref(),
            diagnostics: &diagnostics,
            now: unix_now,
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

/// The admin page, with a policy that lets only its own inline style and script run.
fn page_response() -> Response<Full<Bytes>> {
    let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", page::HTML);
    let headers = r.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(page::content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    Ok(match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, text, "ok\n"),
        "/readyz" if state.draining.load(Ordering::Relaxed) => {
            respond(StatusCode::SERVICE_UNAVAILABLE, text, "shutting down\n")
        }
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
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(),
        ),
        "/config" => {
            let body = serde_json::to_vec_pretty(&state.config_json()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        "/" => page_response(),
        "/status.json" => {
            let body = serde_json::to_vec(&state.status()).unwrap_or_default();
            let mut r = respond(StatusCode::OK, "application/json", body);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /, /status.json, /healthz, /readyz, /config, /metrics\n",
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
