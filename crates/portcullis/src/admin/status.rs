//! `/status.json`: what the admin page shows, built from the published table, endpoint health,
//! the request rates and the last translation's diagnostics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use model::Diagnostic;
use proxy::health::EndpointView;
use serde::Serialize;
use table::{Backend, BackendTarget, Certificate, Table};

use super::rates::{Rate, Rates};

/// Certificates expiring within this many days are highlighted (as `check` warns).
pub const EXPIRY_WARNING_DAYS: i64 = 14;
/// At most this many diagnostics are listed; the total is given beside them.
pub const MAX_DIAGNOSTICS: usize = 1000;

/// The whole status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// How many tables have been published.
    pub generation: u64,
    /// Whether a table has been published (what `/readyz` says, shutdown aside).
    pub ready: bool,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// The time of this status, seconds since the Unix epoch.
    pub now: i64,
    /// Requests and 5xx answers per second over all routes, when known.
    pub rate: Option<Rate>,
    /// The seconds the rates are averaged over (0 until two samples were taken).
    pub rate_window_seconds: f64,
    /// Hosts and their routes.
    pub hosts: Vec<HostView>,
    /// Backends and their endpoints.
    pub backends: Vec<BackendView>,
    /// Certificates and the hosts they serve.
    pub certificates: Vec<CertificateView>,
    /// The last translation's diagnostics, errors first (at most [`MAX_DIAGNOSTICS`]).
    pub diagnostics: Vec<Diagnostic>,
    /// How many diagnostics there are in all.
    pub diagnostics_total: usize,
}

/// One host pattern and its routes.
#[derive(Debug, Serialize)]
pub struct HostView {
    /// As written (`*` for host-less rules, `(default backend)`).
    pub host: String,
    /// Longest path first.
    pub routes: Vec<RouteView>,
}

/// One route.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// The path as written.
    pub path: String,
    /// `Exact`, `Prefix` or `ImplementationSpecific`.
    pub path_type: &'static str,
    /// `namespace/service:port`.
    pub backend: String,
    /// The Ingress and the field the route comes from.
    pub source: String,
    /// Whether plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: bool,
}

/// One backend.
#[derive(Debug, Serialize)]
pub struct BackendView {
    /// `namespace/service:port`.
    pub name: String,
    /// `endpoints`, `external_name` or `unavailable`.
    pub kind: &'static str,
    /// The external name, or why the backend is unavailable.
    pub detail: Option<String>,
    /// Requests and 5xx answers per second, when known.
    pub rate: Option<Rate>,
    /// Ready endpoints, then those not ready.
    pub endpoints: Vec<EndpointStatus>,
}

/// One endpoint of a backend.
#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    /// `ip:port`.
    pub address: String,
    /// `usable`, `failing` (usable, with failures since its last success), `ejected`,
    /// `down` (by active checks) or `not ready` (not ready in its EndpointSlice).
    pub state: &'static str,
    /// Failures since the last success.
    pub failures: u32,
    /// Times ejected.
    pub ejections: u32,
}

/// One certificate.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// The hosts it is served for (`(default)` for the default certificate).
    pub hosts: Vec<String>,
    /// `namespace/name` of its Secret.
    pub source: String,
    /// DNS names in the certificate.
    pub dns_names: Vec<String>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// Whether it expires within [`EXPIRY_WARNING_DAYS`] days or has expired.
    pub expiring: bool,
}

/// Everything the status is built from.
pub struct Inputs<'a> {
    /// The served table.
    pub table: &'a Table,
    /// Its generation.
    pub generation: u64,
    /// Whether a table was published.
    pub ready: bool,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// Troubled endpoints.
    pub health: &'a [EndpointView],
    /// The latest rates.
    pub rates: Option<&'a Rates>,
    /// The last translation's diagnostics.
    pub diagnostics: &'a [Diagnostic],
    /// Now, seconds since the Unix epoch.
    pub now: i64,
}

/// The status from its inputs.
pub fn build(i: &Inputs<'_>) -> Status {
    let mut diagnostics: Vec<&Diagnostic> = i.diagnostics.iter().collect();
    diagnostics.sort_by_key(|d| d.severity);
    Status {
        generation: i.generation,
        ready: i.ready,
        draining: i.draining,
        now: i.now,
        rate: i.rates.map(|r| r.total),
        rate_window_seconds: i.rates.map_or(0.0, |r| r.window.as_secs_f64()),
        hosts: hosts(i.table),
        backends: backends(i.table, i.health, i.rates),
        certificates: certificates(i.table, i.now),
        diagnostics: diagnostics
            .into_iter()
            .take(MAX_DIAGNOSTICS)
            .cloned()
            .collect(),
        diagnostics_total: i.diagnostics.len(),
    }
}

fn hosts(table: &Table) -> Vec<HostView> {
    let mut out: Vec<HostView> = Vec::new();
    for row in crate::report::rows(table) {
        let route = RouteView {
            path: row.path,
            path_type: row.path_type,
            backend: row.backend,
            source: row.source,
            https_redirect: row.https_redirect,
        };
        match out.last_mut() {
            Some(last) if last.host == row.host => last.routes.push(route),
            _ => out.push(HostView {
                host: row.host,
                routes: vec![route],
            }),
        }
    }
    out
}

fn backends(table: &Table, health: &[EndpointView], rates: Option<&Rates>) -> Vec<BackendView> {
    let troubled: HashMap<(&str, SocketAddr), &EndpointView> = health
        .iter()
        .map(|v| ((v.backend.as_str(), v.addr), v))
        .collect();
    let mut out: Vec<BackendView> = table
        .backends
        .iter()
        .map(|b| backend(b, &troubled, rates))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn backend(
    b: &Backend,
    troubled: &HashMap<(&str, SocketAddr), &EndpointView>,
    rates: Option<&Rates>,
) -> BackendView {
    let (kind, detail, endpoints) = match &b.target {
        BackendTarget::Endpoints { ready, not_ready } => {
            let mut endpoints: Vec<EndpointStatus> = ready
                .iter()
                .map(|addr| endpoint(*addr, troubled.get(&(b.name.as_str(), *addr)).copied()))
                .collect();
            endpoints.extend(not_ready.iter().map(|addr| EndpointStatus {
                address: addr.to_string(),
                state: "not ready",
                failures: 0,
                ejections: 0,
            }));
            ("endpoints", None, endpoints)
        }
        BackendTarget::ExternalName { host, port } => {
            ("external_name", Some(format!("{host}:{port}")), Vec::new())
        }
        BackendTarget::Unavailable { reason } => ("unavailable", Some(reason.clone()), Vec::new()),
    };
    BackendView {
        name: b.name.clone(),
        kind,
        detail,
        rate: rates.map(|r| r.backend(&b.name)),
        endpoints,
    }
}

fn endpoint(addr: SocketAddr, health: Option<&EndpointView>) -> EndpointStatus {
    let Some(h) = health else {
        return EndpointStatus {
            address: addr.to_string(),
            state: "usable",
            failures: 0,
            ejections: 0,
        };
    };
    let state = if h.active_down {
        "down"
    } else if !h.usable {
        "ejected"
    } else if h.failures > 0 {
        "failing"
    } else {
        "usable"
    };
    EndpointStatus {
        address: addr.to_string(),
        state,
        failures: h.failures,
        ejections: h.ejections,
    }
}

fn certificates(table: &Table, now: i64) -> Vec<CertificateView> {
    // A certificate serving several hosts is one entry, found by its address.
    let mut by_cert: Vec<(&Arc<Certificate>, Vec<String>)> = Vec::new();
    let named = table
        .tls
        .exact
        .iter()
        .map(|(h, c)| (h.clone(), c))
        .chain(
            table
                .tls
                .wildcard
                .iter()
                .map(|(s, c)| (format!("*.{s}"), c)),
        )
        .chain(
            table
                .tls
                .default
                .iter()
                .map(|c| ("(default)".to_string(), c)),
        );
    for (host, cert) in named {
        match by_cert.iter_mut().find(|(c, _)| Arc::ptr_eq(c, cert)) {
            Some((_, hosts)) => hosts.push(host),
            None => by_cert.push((cert, vec![host])),
        }
    }
    let mut out: Vec<CertificateView> = by_cert
        .into_iter()
        .map(|(cert, mut hosts)| {
            hosts.sort();
            let days_left = (cert.not_after - now).div_euclid(86_400);
            CertificateView {
                hosts,
                source: cert.source.clone(),
                dns_names: cert.dns_names.clone(),
                not_after: cert.not_after,
                days_left,
                expiring: days_left < EXPIRY_WARNING_DAYS,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.not_after, &a.hosts).cmp(&(b.not_after, &b.hosts)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn view(usable: bool, failures: u32, active_down: bool) -> EndpointView {
        EndpointView {
            backend: "ns/web:80".into(),
            addr: addr(1),
            usable,
            failures,
            ejections: u32::from(!usable),
            active_down,
        }
    }

    #[test]
    fn endpoint_states_follow_health() {
        assert_eq!(endpoint(addr(1), None).state, "usable");
        assert_eq!(
            endpoint(addr(1), Some(&view(true, 2, false))).state,
            "failing"
        );
        assert_eq!(
            endpoint(addr(1), Some(&view(false, 0, false))).state,
            "ejected"
        );
        assert_eq!(endpoint(addr(1), Some(&view(false, 0, true))).state, "down");
    }

    #[test]
    fn backends_list_ready_then_not_ready_endpoints_with_their_health() {
        let mut table = Table::default();
        table.backends.push(Arc::new(Backend::new(
            "ns/web:80",
            BackendTarget::Endpoints {
                ready: vec![addr(1), addr(2)],
                not_ready: vec![addr(3)],
            },
        )));
        table.backends.push(Arc::new(Backend::new(
            "ns/gone:80",
            BackendTarget::Unavailable {
                reason: "no Service".into(),
            },
        )));
        let health = [view(false, 0, false)];
        let out = backends(&table, &health, None);
        assert_eq!(out[0].name, "ns/gone:80");
        assert_eq!(out[0].kind, "unavailable");
        assert_eq!(out[0].detail.as_deref(), Some("no Service"));
        let states: Vec<_> = out[1]
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.state))
            .collect();
        assert_eq!(
            states,
            [
                ("127.0.0.1:1", "ejected"),
                ("127.0.0.1:2", "usable"),
                ("127.0.0.1:3", "not ready")
            ]
        );
    }
}
