//! One Ingress → routes in the table builder.

use std::collections::HashSet;

use model::{Ingress, ObjectKey, Snapshot};
use table::{Conflict, HostPattern, PathType, RouteOrigin, RoutePolicy, TableBuilder};

use crate::backend::{resolve, Objects};
use crate::tls::{covers, SecretCache};
use crate::{Diagnostic, Severity};

/// State shared by the TLS pass over all Ingresses.
pub struct TlsContext<'a> {
    /// Secrets already loaded.
    pub secrets: &'a mut SecretCache,
    /// Every host some Ingress of ours lists under `spec.tls`.
    pub hosts: &'a mut HashSet<HostPattern>,
    /// The current time for expiry checks.
    pub now: Option<i64>,
}

/// Adds the certificates of one Ingress's `spec.tls` and records its TLS hosts.
pub fn compile_tls(
    snapshot: &Snapshot,
    key: &ObjectKey,
    ing: &Ingress,
    builder: &mut TableBuilder,
    ctx: &mut TlsContext<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let diag = |severity, field: String, message: String| {
        Diagnostic::new(severity, "Ingress", key, Some(field), message)
    };
    let Some(spec) = &ing.spec else { return };
    for (i, entry) in spec.tls.iter().flatten().enumerate() {
        let hosts: Vec<(usize, HostPattern)> = entry
            .hosts
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(j, h)| match HostPattern::parse(h) {
                Ok(HostPattern::Any) => None,
                Ok(p) => Some((j, p)),
                Err(e) => {
                    diagnostics.push(diag(
                        Severity::Error,
                        format!("spec.tls[{i}].hosts[{j}]"),
                        e,
                    ));
                    None
                }
            })
            .collect();
        if hosts.is_empty() {
            diagnostics.push(diag(
                Severity::Warning,
                format!("spec.tls[{i}].hosts"),
                "lists no hosts; this TLS entry is ignored".into(),
            ));
            continue;
        }
        ctx.hosts.extend(hosts.iter().map(|(_, h)| h.clone()));
        let Some(secret_name) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            diagnostics.push(diag(
                Severity::Info,
                format!("spec.tls[{i}].secretName"),
                "not set: these hosts get the default certificate".into(),
            ));
            continue;
        };
        let secret_key = ObjectKey::new(key.namespace.clone(), secret_name);
        let cert = match ctx.secrets.get(snapshot, &secret_key, ctx.now, diagnostics) {
            Ok(cert) => cert,
            Err(e) => {
                let names: Vec<String> = hosts.iter().map(|(_, h)| h.display()).collect();
                diagnostics.push(diag(
                    Severity::Error,
                    format!("spec.tls[{i}].secretName"),
                    format!("{e}; {} get(s) the default certificate", names.join(", ")),
                ));
                continue;
            }
        };
        for (j, host) in &hosts {
            if !covers(&cert.dns_names, host) {
                diagnostics.push(diag(
                    Severity::Warning,
                    format!("spec.tls[{i}].hosts[{j}]"),
                    format!(
                        "certificate in Secret {secret_key} does not cover {:?} (it covers: {}); clients will reject it",
                        host.display(),
                        if cert.dns_names.is_empty() { "no DNS names".to_string() } else { cert.dns_names.join(", ") }
                    ),
                ));
            }
            if let Err(winner) = builder.add_certificate(host, cert.clone()) {
                if winner.source != cert.source {
                    diagnostics.push(diag(
                        Severity::Warning,
                        format!("spec.tls[{i}].hosts[{j}]"),
                        format!(
                            "{:?} already gets the certificate from Secret {} (older Ingress); ignored",
                            host.display(),
                            winner.source
                        ),
                    ));
                }
            }
        }
    }
}

/// `ssl-redirect`: redirect plain HTTP to HTTPS on hosts that have TLS (default true).
const SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/ssl-redirect";
/// `force-ssl-redirect`: redirect plain HTTP to HTTPS even without TLS on the host.
const FORCE_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/force-ssl-redirect";

/// The field path of one Ingress path, written out only when a diagnostic needs it.
#[derive(Clone, Copy)]
struct PathField {
    rule: usize,
    path: usize,
}

impl std::fmt::Display for PathField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spec.rules[{}].http.paths[{}]", self.rule, self.path)
    }
}

/// A [`PathField`]'s `backend` field.
#[derive(Clone, Copy)]
struct BackendField(PathField);

impl std::fmt::Display for BackendField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.backend", self.0)
    }
}

/// Reads a boolean annotation (`full`: its whole name); a malformed value is an error and the
/// default applies.
fn bool_annotation(
    ing: &Ingress,
    key: &ObjectKey,
    full: &str,
    default: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let Some(value) = ing.metadata.annotations.as_ref().and_then(|a| a.get(full)) else {
        return default;
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => true,
        "false" => false,
        _ => {
            diagnostics.push(Diagnostic::new(
                Severity::Error,
                "Ingress",
                key,
                Some(format!("metadata.annotations[{full}]")),
                format!("{value:?} is not \"true\" or \"false\"; using {default}"),
            ));
            default
        }
    }
}

/// Adds the rules and default backend of one Ingress (after every Ingress's TLS section); everything unusable becomes a diagnostic.
pub fn compile(
    objects: &Objects<'_>,
    key: &ObjectKey,
    ing: &Ingress,
    tls_hosts: &HashSet<HostPattern>,
    builder: &mut TableBuilder,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let diag = |severity, field: String, message: String| {
        Diagnostic::new(severity, "Ingress", key, Some(field), message)
    };
    let ssl_redirect = bool_annotation(ing, key, SSL_REDIRECT, true, diagnostics);
    let force_ssl_redirect = bool_annotation(ing, key, FORCE_SSL_REDIRECT, false, diagnostics);
    let Some(spec) = &ing.spec else {
        diagnostics.push(diag(
            Severity::Warning,
            "spec".into(),
            "missing; nothing to route".into(),
        ));
        return;
    };
    let ingress_name = crate::key_text(key, 0);

    if let Some(default) = &spec.default_backend {
        let field = "spec.defaultBackend";
        if let Some(id) = resolve(objects, key, default, &field, builder, diagnostics) {
            let origin = RouteOrigin {
                ingress: ingress_name.clone(),
                rule: None,
                path_index: None,
                host: String::new(),
                path: "/".into(),
                path_type: PathType::Prefix,
            };
            if let Err(Conflict { winner }) = builder.set_default_backend(id, origin) {
                diagnostics.push(diag(
                    Severity::Warning,
                    field.into(),
                    format!(
                        "ignored: the older Ingress {} already sets the default backend",
                        winner.ingress
                    ),
                ));
            }
        }
    }

    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        diagnostics.push(diag(
            Severity::Warning,
            "spec".into(),
            "has neither rules nor a defaultBackend; nothing to route".into(),
        ));
    }
    for (r, rule) in rules.iter().enumerate() {
        let host_written = rule.host.as_deref().unwrap_or_default();
        let host = match HostPattern::parse(host_written) {
            Ok(h) => h,
            Err(e) => {
                diagnostics.push(diag(Severity::Error, format!("spec.rules[{r}].host"), e));
                continue;
            }
        };
        let Some(http) = &rule.http else {
            diagnostics.push(diag(
                Severity::Info,
                format!("spec.rules[{r}].http"),
                "rule has no http paths; only the default backend serves this host".into(),
            ));
            continue;
        };
        for (p, path) in http.paths.iter().enumerate() {
            let field = PathField { rule: r, path: p };
            let Some(path_type) = PathType::parse(&path.path_type) else {
                diagnostics.push(diag(
                    Severity::Error,
                    format!("{field}.pathType"),
                    format!(
                        "{:?} is not one of Exact, Prefix, ImplementationSpecific",
                        path.path_type
                    ),
                ));
                continue;
            };
            let written = match (path.path.as_deref(), path_type) {
                (Some(p), _) if !p.is_empty() => p,
                (_, PathType::ImplementationSpecific) => "/",
                _ => {
                    diagnostics.push(diag(
                        Severity::Error,
                        format!("{field}.path"),
                        format!("required for pathType {}", path_type.as_str()),
                    ));
                    continue;
                }
            };
            if !written.starts_with('/') {
                diagnostics.push(diag(
                    Severity::Error,
                    format!("{field}.path"),
                    format!("{written:?} must be an absolute path starting with '/'"),
                ));
                continue;
            }
            if path_type != PathType::Exact && written.contains(['(', ')', '*', '?', '$', '^']) {
                diagnostics.push(diag(
                    Severity::Warning,
                    format!("{field}.path"),
                    format!(
                        "{written:?} looks like a regular expression; pathType {} matches it literally",
                        path_type.as_str()
                    ),
                ));
            }
            let backend_field = BackendField(field);
            let Some(id) = resolve(
                objects,
                key,
                &path.backend,
                &backend_field,
                builder,
                diagnostics,
            ) else {
                continue;
            };
            let origin = RouteOrigin {
                ingress: ingress_name.clone(),
                rule: Some(r),
                path_index: Some(p),
                host: host.display(),
                path: written.to_string(),
                path_type,
            };
            let policy = RoutePolicy {
                https_redirect: force_ssl_redirect
                    || (ssl_redirect && !tls_hosts.is_empty() && tls_hosts.contains(&host)),
            };
            if let Err(Conflict { winner }) = builder.add_route(&host, id, origin, policy) {
                diagnostics.push(diag(
                    Severity::Warning,
                    field.to_string(),
                    format!(
                        "shadowed: {} {:?} on host {:?} is already routed by {} ({}), which takes precedence",
                        path_type.as_str(),
                        written,
                        host.display(),
                        winner.ingress,
                        winner.field()
                    ),
                ));
            }
        }
    }
}
