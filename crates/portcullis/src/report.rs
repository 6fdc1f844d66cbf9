//! Human-readable and JSON views of a table, its diagnostics and a route explanation.

use std::fmt::Write as _;

use model::{Diagnostic, Severity};
use table::{Backend, BackendTarget, Explanation, Route, Table, Verdict};

/// One row of the routing table, as shown by `check` and `/config`.
#[derive(Debug, serde::Serialize)]
pub struct RouteRow {
    /// Host pattern (`*` for host-less rules, `(default)` for the default backend).
    pub host: String,
    /// Path as written.
    pub path: String,
    /// Path type.
    pub path_type: &'static str,
    /// `namespace/service:port`.
    pub backend: String,
    /// Ready endpoints or what the backend resolves to.
    pub endpoints: String,
    /// `namespace/name` of the Ingress and the field.
    pub source: String,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: bool,
}

fn endpoints_text(backend: &Backend) -> String {
    match &backend.target {
        BackendTarget::Endpoints { ready, not_ready } => {
            let mut parts: Vec<String> = ready.iter().map(ToString::to_string).collect();
            parts.extend(not_ready.iter().map(|a| format!("{a} (not ready)")));
            if parts.is_empty() {
                "none ready (503)".into()
            } else {
                parts.join(", ")
            }
        }
        BackendTarget::ExternalName { host, port } => format!("{host}:{port} (ExternalName)"),
        BackendTarget::Unavailable { reason } => format!("unavailable: {reason} (503)"),
    }
}

fn row(table: &Table, host: &str, route: &Route) -> RouteRow {
    let backend = table.backend(route.backend);
    RouteRow {
        host: host.to_string(),
        path: route.origin.path.clone(),
        path_type: route.origin.path_type.as_str(),
        backend: backend.name.clone(),
        endpoints: endpoints_text(backend),
        source: format!("{} {}", route.origin.ingress, route.origin.field()),
        https_redirect: route.policy.https_redirect,
    }
}

/// Every route of a table in a stable order: hosts (exact, wildcard, any), then longest path first.
pub fn rows(table: &Table) -> Vec<RouteRow> {
    let mut out = Vec::new();
    for vhost in table.virtual_hosts() {
        let host = if vhost.name.is_empty() {
            "*"
        } else {
            &vhost.name
        };
        let mut routes: Vec<_> = vhost.exact.values().chain(vhost.prefix.values()).collect();
        routes.sort_by(|a, b| {
            b.origin
                .path
                .len()
                .cmp(&a.origin.path.len())
                .then(a.origin.path.cmp(&b.origin.path))
                .then(a.order.cmp(&b.order))
        });
        out.extend(routes.into_iter().map(|r| row(table, host, r)));
    }
    if let Some(default) = &table.default_backend {
        out.push(row(table, "(default backend)", default));
    }
    out
}

/// The routes of a table as JSON.
pub fn routes_json(table: &Table) -> serde_json::Value {
    serde_json::to_value(rows(table)).unwrap_or_default()
}

/// The routing table as aligned text columns.
pub fn table_text(table: &Table) -> String {
    let rows = rows(table);
    if rows.is_empty() {
        return "no routes\n".into();
    }
    let header = ["HOST", "PATH", "TYPE", "BACKEND", "ENDPOINTS", "FROM"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.host.clone(),
                r.path.clone(),
                r.path_type.to_string(),
                if r.https_redirect {
                    format!("{} (http: 308 to https)", r.backend)
                } else {
                    r.backend.clone()
                },
                r.endpoints.clone(),
                r.source.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: [&str; 6]| {
        let mut l = String::new();
        for (i, (col, w)) in cols.iter().zip(widths).enumerate() {
            if i == 5 {
                l.push_str(col);
            } else {
                let _ = write!(l, "{col:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]);
    }
    out
}

/// Diagnostics as lines, errors first; info lines only with `verbose`.
pub fn diagnostics_text(diagnostics: &[Diagnostic], verbose: bool) -> String {
    let mut sorted: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| verbose || d.severity != Severity::Info)
        .collect();
    sorted.sort_by_key(|d| d.severity);
    sorted.iter().map(|d| format!("{d}\n")).collect()
}

/// A route explanation as text.
pub fn explanation_text(table: &Table, e: &Explanation, method: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request: {method} host {:?} path {:?}", e.host, e.path);
    match &e.virtual_host {
        Some(v) if v.is_empty() => {
            let _ = writeln!(out, "host: matched by rules without a host");
        }
        Some(v) => {
            let _ = writeln!(out, "host: matched by rule host {v:?}");
        }
        None => {
            let _ = writeln!(out, "host: no rule matches this host");
        }
    }
    match &e.selected {
        Some(origin) => {
            let backend = e
                .candidates
                .iter()
                .find(|c| c.verdict == Verdict::Selected)
                .map(|c| c.backend.clone())
                .or_else(|| {
                    table
                        .default_backend
                        .as_ref()
                        .map(|d| table.backend(d.backend).name.clone())
                });
            let via = if origin.rule.is_none() {
                " (defaultBackend: no rule matched)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "route: Ingress {} {}: {} {:?}{via}",
                origin.ingress,
                origin.field(),
                origin.path_type.as_str(),
                origin.path
            );
            if let Some(name) = backend {
                let endpoints = table
                    .backends
                    .iter()
                    .find(|b| b.name == name)
                    .map(|b| endpoints_text(b))
                    .unwrap_or_default();
                let _ = writeln!(out, "backend: {name}");
                let _ = writeln!(out, "endpoints: {endpoints}");
            }
        }
        None => {
            let _ = writeln!(out, "route: none: Portcullis answers 404");
        }
    }
    let others: Vec<_> = e
        .candidates
        .iter()
        .filter(|c| c.verdict != Verdict::Selected)
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "other candidates:");
        for c in others {
            let why = match &c.verdict {
                Verdict::Selected => continue,
                Verdict::HostMismatch => "host does not match".to_string(),
                Verdict::HostShadowed(s) => s.clone(),
                Verdict::PathMismatch => "path does not match".to_string(),
                Verdict::Lost(s) => s.clone(),
            };
            let host = if c.origin.host.is_empty() {
                "*"
            } else {
                &c.origin.host
            };
            let _ = writeln!(
                out,
                "  {host} {} {:?} -> {} ({} {}): {why}",
                c.origin.path_type.as_str(),
                c.origin.path,
                c.backend,
                c.origin.ingress,
                c.origin.field()
            );
        }
    }
    out
}

/// A Unix timestamp as `YYYY-MM-DD` (UTC).
pub fn date(unix: i64) -> String {
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's algorithm description.
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Which certificate each TLS host gets, with its names and expiry.
pub fn tls_text(table: &Table) -> String {
    let mut lines: Vec<String> = Vec::new();
    let describe = |c: &table::Certificate| {
        format!(
            "Secret {} (names: {}; expires {})",
            c.source,
            if c.dns_names.is_empty() {
                "none".to_string()
            } else {
                c.dns_names.join(", ")
            },
            date(c.not_after)
        )
    };
    for (host, cert) in &table.tls.exact {
        lines.push(format!("  {host}: {}", describe(cert)));
    }
    for (suffix, cert) in &table.tls.wildcard {
        lines.push(format!("  *.{suffix}: {}", describe(cert)));
    }
    lines.sort();
    let mut out = String::from("TLS certificates by SNI:\n");
    if lines.is_empty() {
        out.push_str("  (no TLS hosts)\n");
    }
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    let default = match &table.tls.default {
        Some(c) => describe(c),
        None => "generated self-signed certificate".to_string(),
    };
    out.push_str(&format!("  anything else / no SNI: {default}\n"));
    out
}

/// What `check` counted.
pub struct Counts {
    /// Manifest files read (0 from a cluster).
    pub files: usize,
    /// Every Ingress read, of any class.
    pub ingresses: usize,
    /// The Ingresses of our class.
    pub ours: usize,
    /// Routes in the table.
    pub routes: usize,
    /// Diagnostics by severity.
    pub errors: usize,
    /// Diagnostics by severity.
    pub warnings: usize,
}

/// `check`'s closing summary; when Ingresses were read but none is ours, it says which classes
/// are served, since that is the usual reason.
pub fn summary_text(c: &Counts, options: &translate::Options) -> String {
    let others = c.ingresses.saturating_sub(c.ours);
    let ignored = if others > 0 {
        format!(" ({others} of another class or of none, ignored)")
    } else {
        String::new()
    };
    let mut out = format!(
        "{} file(s), {} Ingress(es) of our class{ignored}, {} route(s): {} error(s), {} warning(s)\n",
        c.files, c.ours, c.routes, c.errors, c.warnings
    );
    if c.ours == 0 && others > 0 {
        out.push_str(&format!(
            "No Ingress is served. Served classes: {} (from --ingress-class, or any IngressClass whose spec.controller is {}); Ingresses without a class only with --watch-ingress-without-class\n",
            options.ingress_classes.join(", "),
            options.controller_class
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(951_782_400), "2000-02-29");
        assert_eq!(super::date(1_795_651_200), "2026-11-26");
    }

    #[test]
    fn summary_says_when_ingresses_of_other_classes_were_ignored() {
        let options = translate::Options {
            ingress_classes: vec!["portcullis".into()],
            controller_class: "portcullis.io/ingress-controller".into(),
            ..Default::default()
        };
        let counts = |ingresses, ours| super::Counts {
            files: 1,
            ingresses,
            ours,
            routes: ours,
            errors: 0,
            warnings: 0,
        };
        assert_eq!(
            super::summary_text(&counts(2, 2), &options),
            "1 file(s), 2 Ingress(es) of our class, 2 route(s): 0 error(s), 0 warning(s)\n"
        );
        let some = super::summary_text(&counts(3, 2), &options);
        assert!(
            some.starts_with("1 file(s), 2 Ingress(es) of our class (1 of another class or of none, ignored), 2 route(s)"),
            "{some}"
        );
        assert!(!some.contains("No Ingress is served"), "{some}");
        let none = super::summary_text(&counts(1, 0), &options);
        assert!(
            none.contains("No Ingress is served. Served classes: portcullis (from --ingress-class, or any IngressClass whose spec.controller is portcullis.io/ingress-controller)"),
            "{none}"
        );
    }
}

/// One ingress-nginx annotation in use, for `check --nginx-compat`.
#[derive(Debug, serde::Serialize)]
pub struct AnnotationUse {
    /// The annotation's name after the prefix.
    pub annotation: String,
    /// How many of the Ingresses served use it.
    pub ingresses: usize,
    /// `supported`, `partly`, `refused`, `not yet`, or `unknown`.
    pub support: &'static str,
    /// What differs, or why it is refused.
    pub note: &'static str,
}

/// Every annotation under `prefix` that the Ingresses `served` use, with how Portcullis treats
/// it: what a team sees before it switches from ingress-nginx.
pub fn annotation_uses(
    snapshot: &model::Snapshot,
    served: &[model::ObjectKey],
    prefix: &str,
) -> Vec<AnnotationUse> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for key in served {
        let Some(ing) = snapshot.ingresses.get(key) else {
            continue;
        };
        for name in ing
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix(prefix)?.strip_prefix('/'))
        {
            *counts.entry(name).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(name, ingresses)| {
            let entry = translate::annotations::catalog::lookup(name);
            AnnotationUse {
                annotation: name.to_string(),
                ingresses,
                support: entry.map_or("unknown", |e| e.support.label()),
                note: entry.map_or("not an annotation ingress-nginx documents", |e| {
                    e.support.note()
                }),
            }
        })
        .collect()
}

/// The migration report as text.
pub fn migration_text(uses: &[AnnotationUse], prefix: &str) -> String {
    if uses.is_empty() {
        return format!("No {prefix}/ annotations are in use.\n");
    }
    let mut out = format!("Annotations in use ({prefix}/…):\n");
    let width = uses.iter().map(|u| u.annotation.len()).max().unwrap_or(0);
    for u in uses {
        let _ = write!(
            out,
            "  {:<width$}  {:>3} Ingress(es)  {}",
            u.annotation, u.ingresses, u.support
        );
        if !u.note.is_empty() {
            let _ = write!(out, ": {}", u.note);
        }
        out.push('\n');
    }
    let count = |label: &str| uses.iter().filter(|u| u.support == label).count();
    let _ = writeln!(
        out,
        "{} annotation(s): {} supported, {} partly, {} refused, {} not yet, {} unknown",
        uses.len(),
        count("supported"),
        count("partly"),
        count("refused"),
        count("not yet"),
        count("unknown")
    );
    out
}
