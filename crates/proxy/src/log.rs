//! The access log: one line per request.

use std::net::IpAddr;
use std::time::Duration;

use http::{Method, StatusCode, Version};

/// Where access-log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// One human-readable line per request (tracing target `access`).
    Text,
    /// One JSON object per line (tracing target `access`).
    Json,
}

/// What is logged about one request.
pub struct Entry<'a> {
    pub client: IpAddr,
    pub method: &'a Method,
    pub host: &'a str,
    pub path: &'a str,
    pub version: Version,
    pub status: StatusCode,
    pub upstream: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub duration: Duration,
    pub request_id: &'a str,
}

impl AccessLog {
    /// Writes one entry.
    pub fn write(self, e: &Entry<'_>) {
        match self {
            AccessLog::Off => {}
            AccessLog::Text => tracing::info!(
                target: "access",
                "{} \"{} {} {:?}\" {} host={} backend={} upstream={} {:.3}ms id={}",
                e.client,
                e.method,
                e.path,
                e.version,
                e.status.as_u16(),
                e.host,
                e.backend.unwrap_or("-"),
                e.upstream.unwrap_or("-"),
                e.duration.as_secs_f64() * 1000.0,
                e.request_id,
            ),
            // With `--log-format json` the subscriber renders these as JSON fields.
            AccessLog::Json => tracing::info!(
                target: "access",
                client = %e.client,
                method = e.method.as_str(),
                host = e.host,
                path = e.path,
                proto = ?e.version,
                status = e.status.as_u16(),
                backend = e.backend.unwrap_or("-"),
                upstream = e.upstream.unwrap_or("-"),
                duration_ms = e.duration.as_secs_f64() * 1000.0,
                request_id = e.request_id,
                "request"
            ),
        }
    }
}
