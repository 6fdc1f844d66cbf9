//! What the proxy would do with one request, in words, for `portcullis route`: the decision is
//! made by the same code the data plane runs, against a given table.

use std::fmt::Write as _;

use http::{HeaderMap, Method};
use table::Table;

use crate::decide::{decide_in, Decision, State, View};
use crate::ProxyConfig;

/// Describes what Portcullis does with a request for `host` and `target` (path and query):
/// the response it answers itself, or where and how the request is forwarded.
pub fn describe(
    table: &Table,
    config: &ProxyConfig,
    https: bool,
    method: &Method,
    host: &str,
    target: &str,
    headers: &HeaderMap,
) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let view = View {
        https,
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        method,
        host,
        path,
        query,
        content_length: None,
        headers,
    };
    let mut out = String::new();
    let mut matched = None;
    let latencies = crate::balance::Latencies::default();
    let state = State {
        health: None,
        latencies: &latencies,
        limiter: None,
    };
    match decide_in(table, config, state, &view, &mut matched) {
        Err(error) => {
            let _ = writeln!(out, "answer: {} ({error})", error.status());
        }
        Ok(Decision::Local(local)) => {
            let _ = write!(out, "answer: {}", local.status);
            for (name, value) in &local.headers {
                let _ = write!(
                    out,
                    "; {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
            out.push('\n');
        }
        Ok(Decision::Forward(forward)) => {
            let sent = forward.path().unwrap_or(target);
            let _ = writeln!(
                out,
                "forward: {method} {sent} to {} (backend {}) over {}{}",
                forward.target,
                forward.backend.name,
                if forward.protocol().is_h2() {
                    "HTTP/2"
                } else {
                    "HTTP/1.1"
                },
                if forward.tls { " with TLS" } else { "" }
            );
            if let Some(host) = forward.upstream_host() {
                let _ = writeln!(
                    out,
                    "upstream Host: {} (upstream-vhost)",
                    String::from_utf8_lossy(host.as_bytes())
                );
            }
            for (name, value) in forward.request_fields() {
                let _ = writeln!(
                    out,
                    "adds request header: {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
            for (name, value) in forward.response_fields() {
                let _ = writeln!(
                    out,
                    "sets response header: {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
        }
    }
    out
}
