//! One Ingress → routes in the table builder.

use model::{Ingress, ObjectKey, Snapshot};
use table::{Conflict, HostPattern, PathType, RouteOrigin, TableBuilder};

use crate::backend::resolve;
use crate::{Diagnostic, Severity};

/// Adds the rules and default backend of one Ingress; everything unusable becomes a diagnostic.
pub fn compile(
    snapshot: &Snapshot,
    key: &ObjectKey,
    ing: &Ingress,
    builder: &mut TableBuilder,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let diag = |severity, field: String, message: String| {
        Diagnostic::new(severity, "Ingress", key, Some(field), message)
    };
    let Some(spec) = &ing.spec else {
        diagnostics.push(diag(
            Severity::Warning,
            "spec".into(),
            "missing; nothing to route".into(),
        ));
        return;
    };
    let ingress_name = key.to_string();

    if let Some(default) = &spec.default_backend {
        let field = "spec.defaultBackend".to_string();
        if let Some(id) = resolve(snapshot, key, default, &field, builder, diagnostics) {
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
                    field,
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
            let field = format!("spec.rules[{r}].http.paths[{p}]");
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
            let backend_field = format!("{field}.backend");
            let Some(id) = resolve(
                snapshot,
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
            if let Err(Conflict { winner }) = builder.add_route(&host, id, origin) {
                diagnostics.push(diag(
                    Severity::Warning,
                    field,
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
