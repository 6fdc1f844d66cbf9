//! One Ingress → routes in the table builder.

use std::collections::HashSet;
use std::sync::Arc;

use model::{Ingress, Kind, ObjectKey, Snapshot};
use table::{
    BackendId, Conflict, HostPattern, PathType, Route, RouteOrigin, RoutePolicy, TableBuilder,
};

use crate::annotations::{self, Rules};
use crate::backend::{resolve, Objects, Resolved};
use crate::tls::{covers, SecretCache};
use crate::{Diagnostic, Options, Severity};

/// State shared by the TLS pass over all Ingresses.
pub struct TlsContext<'a, 'c> {
    /// Secrets already loaded.
    pub secrets: &'a mut SecretCache<'c>,
    /// Every host some Ingress of ours lists under `spec.tls`.
    pub hosts: &'a mut HashSet<HostPattern>,
    /// The current time for expiry checks.
    pub now: Option<i64>,
    /// The earliest time at which an expiry diagnostic of a certificate loaded so far changes.
    pub horizon: &'a mut i64,
}

/// The earliest time after `now` at which the expiry diagnostic of a certificate valid until
/// `not_after` reads differently (a warning starts, its day count drops, or it expires).
pub fn expiry_horizon(now: i64, not_after: i64) -> i64 {
    let left = not_after.saturating_sub(now);
    if left < 0 {
        i64::MAX
    } else if left < crate::EXPIRY_WARNING_SECS {
        not_after - (left / 86_400) * 86_400 + 1
    } else {
        not_after - crate::EXPIRY_WARNING_SECS + 1
    }
}

/// Adds the certificates of one Ingress's `spec.tls` and records its TLS hosts (and, in
/// `ctx.horizon`, when the time passing would change what is said about its certificates).
pub fn compile_tls(
    snapshot: &Snapshot,
    key: &ObjectKey,
    ing: &Ingress,
    builder: &mut TableBuilder,
    ctx: &mut TlsContext<'_, '_>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let diag = |severity, field: String, message: String| {
        Diagnostic::new(severity, Kind::Ingress, key, Some(field), message)
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
            Ok(cert) => {
                if let Some(now) = ctx.now {
                    *ctx.horizon = (*ctx.horizon).min(expiry_horizon(now, cert.not_after));
                }
                cert
            }
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

/// What one Ingress contributes to the table, worked out without looking at any other Ingress:
/// its diagnostics, backends and routes in the order it lists them. Precedence between Ingresses
/// is settled when plans are [`Plan::apply`]ed in order; what applying said is kept, so the
/// plan's share of the diagnostics can be [`Plan::replay`]ed without applying it again.
pub struct Plan {
    /// Backends resolved, with the Services they came from.
    resolved: Resolved,
    /// The table id each backend in `resolved` got when the plan was last applied.
    ids: Vec<Option<BackendId>>,
    /// Diagnostics, the default backend and routes, in the order they are written.
    steps: Vec<Step>,
    /// What the annotations ask for.
    rules: Rules,
    /// The `default-backend` annotation's backend, as an index into `resolved`.
    fallback: Option<usize>,
    /// The hosts of the Ingress's rules, for its `server-alias`es.
    hosts: Vec<HostPattern>,
}

/// Whether two readings of an Ingress's annotations shape its routes alike.
fn same_rules(a: &Rules, b: &Rules) -> bool {
    a.policy == b.policy
        && a.use_regex == b.use_regex
        && a.ssl_redirect == b.ssl_redirect
        && a.force_ssl_redirect == b.force_ssl_redirect
        && a.aliases == b.aliases
        && a.service_upstream == b.service_upstream
        && a.default_backend == b.default_backend
        && a.refused == b.refused
}

/// One thing a [`Plan`] adds, in order.
enum Step {
    /// A diagnostic about the Ingress itself.
    Note(Diagnostic),
    /// `spec.defaultBackend`, with the index of its backend in the plan.
    Default {
        backend: usize,
        origin: RouteOrigin,
        /// Why it was not used, the last time the plan was applied.
        conflict: Option<Box<Diagnostic>>,
    },
    /// A path, with the index of its backend in the plan and the route last built from it.
    Route {
        host: HostPattern,
        backend: usize,
        origin: RouteOrigin,
        /// Whether the route asks its host for regex matching.
        regex: bool,
        last: Option<Arc<Route>>,
        /// Why it was not served, the last time the plan was applied.
        conflict: Option<Box<Diagnostic>>,
    },
}

impl Step {
    /// Whether two steps add the same route or default backend (or are both notes).
    fn same_shape(&self, other: &Step) -> bool {
        match (self, other) {
            (Step::Note(_), Step::Note(_)) => true,
            (
                Step::Default {
                    backend, origin, ..
                },
                Step::Default {
                    backend: b,
                    origin: o,
                    ..
                },
            ) => backend == b && origin == o,
            (
                Step::Route {
                    host,
                    backend,
                    origin,
                    regex,
                    ..
                },
                Step::Route {
                    host: h,
                    backend: b,
                    origin: o,
                    regex: r,
                    ..
                },
            ) => host == h && backend == b && origin == o && regex == r,
            _ => false,
        }
    }
}

impl Plan {
    /// Works out the rules and default backend of one Ingress; everything unusable becomes a
    /// diagnostic step.
    pub fn new(objects: &Objects<'_>, options: &Options, key: &ObjectKey, ing: &Ingress) -> Plan {
        let mut notes = Vec::new();
        let rules = annotations::read(objects.snapshot, options, key, ing, &mut notes);
        let mut plan = Plan {
            resolved: Resolved::default(),
            ids: Vec::new(),
            steps: Vec::new(),
            rules,
            fallback: None,
            hosts: Vec::new(),
        };
        plan.note_all(&mut notes);
        if plan.rules.refused {
            return plan;
        }
        plan.add_fallback(objects, options, key, &mut notes);
        plan.add_spec(objects, key, ing, &mut notes);
        plan.steps.shrink_to_fit();
        plan
    }

    /// The Services the plan's backends were resolved from.
    pub fn services(&self) -> &[ObjectKey] {
        &self.resolved.services
    }

    /// The backends resolved, each with the table id it got when the plan was last applied.
    pub fn backends_mut(
        &mut self,
    ) -> impl Iterator<Item = (&mut Arc<table::Backend>, Option<BackendId>)> {
        let ids = self.ids.iter().copied().chain(std::iter::repeat(None));
        self.resolved.backends.iter_mut().zip(ids)
    }

    /// Takes over what applying `old` (a plan of the same Ingress) found out, when this plan adds
    /// the same routes and default backend with the same backends as `old` (only the backends'
    /// targets and the notes may differ): the routes built, the table ids of the backends and why
    /// routes were not served. Returns whether it did; if not, the plan must be applied anew.
    pub fn adopt(&mut self, old: &Plan) -> bool {
        let steps = |p: &Plan| {
            p.steps
                .iter()
                .filter(|s| !matches!(s, Step::Note(_)))
                .count()
        };
        let names = |p: &Plan| {
            p.resolved
                .backends
                .iter()
                .map(|b| b.name.clone())
                .collect::<Vec<_>>()
        };
        let same = self.fallback == old.fallback
            && self.resolved.services == old.resolved.services
            && names(self) == names(old)
            && steps(self) == steps(old)
            && self.hosts == old.hosts
            && same_rules(&self.rules, &old.rules)
            && self
                .steps
                .iter()
                .filter(|s| !matches!(s, Step::Note(_)))
                .zip(old.steps.iter().filter(|s| !matches!(s, Step::Note(_))))
                .all(|(a, b)| a.same_shape(b));
        if !same {
            return false;
        }
        let olds = old.steps.iter().filter(|s| !matches!(s, Step::Note(_)));
        let news = self
            .steps
            .iter_mut()
            .filter(|s| !matches!(s, Step::Note(_)));
        for (new, old) in news.zip(olds) {
            match (new, old) {
                (Step::Default { conflict, .. }, Step::Default { conflict: was, .. }) => {
                    conflict.clone_from(was)
                }
                (
                    Step::Route { last, conflict, .. },
                    Step::Route {
                        last: built,
                        conflict: was,
                        ..
                    },
                ) => {
                    last.clone_from(built);
                    conflict.clone_from(was);
                }
                _ => {}
            }
        }
        self.ids.clone_from(&old.ids);
        true
    }

    /// The diagnostics the plan added when it was last applied, in the same order.
    pub fn replay(&self, out: &mut Vec<Diagnostic>) {
        for step in &self.steps {
            match step {
                Step::Note(d) => out.push(d.clone()),
                Step::Default { conflict, .. } | Step::Route { conflict, .. } => {
                    out.extend(conflict.as_deref().cloned());
                }
            }
        }
    }

    /// Whether the ConfigMaps and Secrets the annotations read are unchanged in `snapshot`.
    pub fn reads_unchanged(&self, snapshot: &Snapshot) -> bool {
        self.rules.reads.iter().all(|r| r.unchanged(snapshot))
    }

    /// Resolves the `default-backend` annotation's Service (its first port, as ingress-nginx
    /// uses it).
    fn add_fallback(
        &mut self,
        objects: &Objects<'_>,
        options: &Options,
        key: &ObjectKey,
        notes: &mut Vec<Diagnostic>,
    ) {
        let Some(name) = self.rules.default_backend.clone() else {
            return;
        };
        let field = format!(
            "metadata.annotations[{}/default-backend]",
            options.annotations_prefix
        );
        let svc_key = ObjectKey::new(key.namespace.clone(), name.as_str());
        let port = objects
            .snapshot
            .services
            .get(&svc_key)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port));
        let Some(port) = port else {
            // Looked up all the same: when the Service appears, the plan must be made again.
            if !self.resolved.services.contains(&svc_key) {
                self.resolved.services.push(svc_key.clone());
            }
            notes.push(Diagnostic::new(
                Severity::Error,
                Kind::Ingress,
                key,
                Some(field),
                format!("Service {svc_key} not found or has no ports; no default backend for this Ingress's paths"),
            ));
            self.note_all(notes);
            return;
        };
        let backend = model::k8s_openapi::api::networking::v1::IngressBackend {
            service: Some(
                model::k8s_openapi::api::networking::v1::IngressServiceBackend {
                    name,
                    port: Some(
                        model::k8s_openapi::api::networking::v1::ServiceBackendPort {
                            number: Some(port),
                            name: None,
                        },
                    ),
                },
            ),
            resource: None,
        };
        self.fallback = resolve(
            objects,
            key,
            &backend,
            &field,
            false,
            &mut self.resolved,
            notes,
        );
        self.note_all(notes);
    }

    fn note_all(&mut self, notes: &mut Vec<Diagnostic>) {
        self.steps.extend(notes.drain(..).map(Step::Note));
    }

    fn add_spec(
        &mut self,
        objects: &Objects<'_>,
        key: &ObjectKey,
        ing: &Ingress,
        notes: &mut Vec<Diagnostic>,
    ) {
        let diag = |severity, field: String, message: String| {
            Step::Note(Diagnostic::new(
                severity,
                Kind::Ingress,
                key,
                Some(field),
                message,
            ))
        };
        let Some(spec) = &ing.spec else {
            self.steps.push(diag(
                Severity::Warning,
                "spec".into(),
                "missing; nothing to route".into(),
            ));
            return;
        };
        let ingress_name = crate::key_text(key, 0);

        if let Some(default) = &spec.default_backend {
            let field = "spec.defaultBackend";
            let found = resolve(
                objects,
                key,
                default,
                &field,
                self.rules.service_upstream,
                &mut self.resolved,
                notes,
            );
            self.note_all(notes);
            if let Some(backend) = found {
                let origin = RouteOrigin {
                    ingress: ingress_name.clone(),
                    rule: None,
                    path_index: None,
                    host: String::new(),
                    path: "/".into(),
                    path_type: PathType::Prefix,
                };
                self.steps.push(Step::Default {
                    backend,
                    origin,
                    conflict: None,
                });
            }
        }

        let rules = spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() && spec.default_backend.is_none() {
            self.steps.push(diag(
                Severity::Warning,
                "spec".into(),
                "has neither rules nor a defaultBackend; nothing to route".into(),
            ));
        }
        for (r, rule) in rules.iter().enumerate() {
            let host_written = rule.host.as_deref().unwrap_or_default();
            let host = match HostPattern::parse(host_written) {
                Ok(h) => {
                    if !self.hosts.contains(&h) {
                        self.hosts.push(h.clone());
                    }
                    h
                }
                Err(e) => {
                    self.steps
                        .push(diag(Severity::Error, format!("spec.rules[{r}].host"), e));
                    continue;
                }
            };
            let Some(http) = &rule.http else {
                self.steps.push(diag(
                    Severity::Info,
                    format!("spec.rules[{r}].http"),
                    "rule has no http paths; only the default backend serves this host".into(),
                ));
                continue;
            };
            for (p, path) in http.paths.iter().enumerate() {
                let field = PathField { rule: r, path: p };
                let Some(path_type) = PathType::parse(&path.path_type) else {
                    self.steps.push(diag(
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
                        self.steps.push(diag(
                            Severity::Error,
                            format!("{field}.path"),
                            format!("required for pathType {}", path_type.as_str()),
                        ));
                        continue;
                    }
                };
                if !written.starts_with('/') {
                    self.steps.push(diag(
                        Severity::Error,
                        format!("{field}.path"),
                        format!("{written:?} must be an absolute path starting with '/'"),
                    ));
                    continue;
                }
                let regex = self.rules.use_regex
                    || self
                        .rules
                        .policy
                        .as_ref()
                        .and_then(|p| p.rewrite.as_ref())
                        .is_some_and(|t| t.written != written);
                if !regex
                    && path_type != PathType::Exact
                    && written.contains(['(', ')', '*', '?', '$', '^'])
                {
                    self.steps.push(diag(
                        Severity::Warning,
                        format!("{field}.path"),
                        format!(
                            "{written:?} looks like a regular expression; pathType {} matches it literally",
                            path_type.as_str()
                        ),
                    ));
                }
                let backend_field = BackendField(field);
                let found = resolve(
                    objects,
                    key,
                    &path.backend,
                    &backend_field,
                    self.rules.service_upstream,
                    &mut self.resolved,
                    notes,
                );
                self.note_all(notes);
                let Some(backend) = found else {
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
                self.steps.push(Step::Route {
                    host: host.clone(),
                    backend,
                    origin,
                    regex,
                    last: None,
                    conflict: None,
                });
            }
        }
    }
}

/// The warning for a `spec.defaultBackend` an older Ingress's wins over.
fn default_conflict(key: &ObjectKey, Conflict { winner }: &Conflict) -> Box<Diagnostic> {
    Box::new(Diagnostic::new(
        Severity::Warning,
        Kind::Ingress,
        key,
        Some("spec.defaultBackend".into()),
        format!(
            "ignored: the older Ingress {} already sets the default backend",
            winner.ingress
        ),
    ))
}

/// The warning for a path an older Ingress's route wins over.
fn route_conflict(
    key: &ObjectKey,
    origin: &RouteOrigin,
    Conflict { winner }: &Conflict,
) -> Box<Diagnostic> {
    Box::new(Diagnostic::new(
        Severity::Warning,
        Kind::Ingress,
        key,
        Some(origin.field()),
        format!(
            "shadowed: {} {:?} on host {:?} is already routed by {} ({}), which takes precedence",
            origin.path_type.as_str(),
            origin.path,
            origin.host,
            winner.ingress,
            winner.field()
        ),
    ))
}

impl Plan {
    /// Adds the plan to the table after the plans of older Ingresses: what they already claim
    /// stays theirs, with a warning here. `tls_hosts` are the hosts some Ingress lists under
    /// `spec.tls`.
    pub fn apply(
        &mut self,
        key: &ObjectKey,
        tls_hosts: &HashSet<HostPattern>,
        builder: &mut TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        self.ids.clear();
        self.ids.resize(self.resolved.backends.len(), None);
        let (resolved, ids) = (&self.resolved, &mut self.ids);
        let mut id_of = |builder: &mut TableBuilder, i: usize| {
            let id = builder.shared_backend(&resolved.backends[i]);
            ids[i] = Some(id);
            id
        };
        for step in &mut self.steps {
            match step {
                Step::Note(d) => diagnostics.push(d.clone()),
                Step::Default {
                    backend,
                    origin,
                    conflict,
                } => {
                    let id = id_of(builder, *backend);
                    *conflict = builder
                        .set_default_backend(id, origin.clone())
                        .err()
                        .map(|c| default_conflict(key, &c));
                    diagnostics.extend(conflict.as_deref().cloned());
                }
                Step::Route {
                    host,
                    backend,
                    origin,
                    regex,
                    last,
                    conflict,
                } => {
                    let id = id_of(builder, *backend);
                    let fallback = self.fallback.map(|i| id_of(builder, i));
                    let policy = RoutePolicy {
                        https_redirect: self.rules.force_ssl_redirect
                            || (self.rules.ssl_redirect
                                && !tls_hosts.is_empty()
                                && tls_hosts.contains(host)),
                        regex: *regex,
                        rules: self.rules.policy.clone(),
                        fallback,
                    };
                    *conflict = builder
                        .add_route_reusing(host, id, origin, policy, last)
                        .err()
                        .map(|c| route_conflict(key, origin, &c));
                    diagnostics.extend(conflict.as_deref().cloned());
                }
            }
        }
        if !self.rules.aliases.is_empty() {
            let ingress = crate::key_text(key, 0);
            for (alias, field) in &self.rules.aliases {
                for host in self.hosts.iter().filter(|h| !matches!(h, HostPattern::Any)) {
                    builder.add_alias(alias, host, &ingress, field);
                }
            }
        }
    }
}
