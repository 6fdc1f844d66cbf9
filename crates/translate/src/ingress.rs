//! One Ingress → routes in the table builder.

use std::collections::HashSet;
use std::sync::Arc;

use model::{Ingress, Kind, ObjectKey, Snapshot};
use table::{BackendId, Conflict, HostPattern, Route, RouteOrigin, RoutePolicy, TableBuilder};

use crate::annotations::Rules;
use crate::backend::Resolved;
use crate::tls::{covers, SecretCache};
use crate::{Diagnostic, Severity};

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

/// What one Ingress contributes to the table, worked out without looking at any other Ingress:
/// its diagnostics, backends and routes in the order it lists them. Precedence between Ingresses
/// is settled when plans are [`Plan::apply`]ed in order; what applying said is kept, so the
/// plan's share of the diagnostics can be [`Plan::replay`]ed without applying it again. Kept for
/// every Ingress, so it holds little: a route's origin lives in the route once it is built.
pub struct Plan {
    /// Backends resolved, each with the table id it got when the plan was last applied.
    backends: Box<[(Arc<table::Backend>, Option<BackendId>)]>,
    /// The hashes of the keys of the Services the backends were resolved from (or looked up).
    services: Box<[u64]>,
    /// Diagnostics, the default backend and routes, in the order they are written.
    steps: Box<[Step]>,
    /// What the annotations ask for.
    rules: Rules,
    /// The `default-backend` annotation's backend, as an index into `backends`.
    fallback: Option<usize>,
    /// The hosts of the Ingress's rules, kept only for its `server-alias`es.
    hosts: Box<[HostPattern]>,
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
        && a.canary == b.canary
}

/// One thing a [`Plan`] adds, in order.
pub(crate) enum Step {
    /// A diagnostic about the Ingress itself.
    Note(Box<Diagnostic>),
    /// `spec.defaultBackend`, with the index of its backend in the plan.
    Default {
        backend: usize,
        origin: Box<RouteOrigin>,
        /// Why it was not used, the last time the plan was applied.
        conflict: Option<Box<Diagnostic>>,
    },
    /// A path, with the index of its backend in the plan and the route last built from it.
    Route {
        host: HostPattern,
        backend: usize,
        /// Where the route comes from; once `last` is built, read from there instead.
        origin: Option<Box<RouteOrigin>>,
        /// Whether the route asks its host for regex matching.
        regex: bool,
        last: Option<Arc<Route>>,
        /// Why it was not served, the last time the plan was applied.
        conflict: Option<Box<Diagnostic>>,
    },
}

/// A route step of a plan, as [`Plan::routes`] lists them.
pub(crate) struct RouteStep<'a> {
    pub(crate) host: &'a HostPattern,
    pub(crate) origin: &'a RouteOrigin,
    pub(crate) built: Option<&'a Arc<Route>>,
    pub(crate) backend: usize,
}

/// A route step's origin: its own, or that of the route built from it.
fn origin_of<'a>(
    origin: &'a Option<Box<RouteOrigin>>,
    last: &'a Option<Arc<Route>>,
) -> &'a RouteOrigin {
    match (origin, last) {
        (Some(o), _) => o,
        (None, Some(r)) => &r.origin,
        (None, None) => unreachable!("a route step keeps its origin until a route holds it"),
    }
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
                    last,
                    ..
                },
                Step::Route {
                    host: h,
                    backend: b,
                    origin: o,
                    regex: r,
                    last: l,
                    ..
                },
            ) => {
                host == h
                    && backend == b
                    && regex == r
                    && origin_of(origin, last) == origin_of(o, l)
            }
            _ => false,
        }
    }
}

impl Plan {
    /// A plan of `steps` over the backends `resolved`, not applied yet.
    pub(crate) fn from_parts(
        resolved: Resolved,
        steps: Vec<Step>,
        rules: Rules,
        fallback: Option<usize>,
        hosts: Box<[HostPattern]>,
    ) -> Plan {
        Plan {
            backends: resolved.backends.into_iter().map(|b| (b, None)).collect(),
            services: resolved
                .services
                .iter()
                .map(crate::keyed::hash_of)
                .collect(),
            steps: steps.into_boxed_slice(),
            rules,
            fallback,
            hosts,
        }
    }

    /// The hashes of the keys of the Services the plan's backends were resolved from.
    pub fn services(&self) -> &[u64] {
        &self.services
    }

    /// The backends resolved, each with the table id it got when the plan was last applied.
    pub fn backends_mut(
        &mut self,
    ) -> impl Iterator<Item = (&mut Arc<table::Backend>, Option<BackendId>)> {
        self.backends.iter_mut().map(|(b, id)| (b, *id))
    }

    /// Takes over what applying `old` (a plan of the same Ingress) found out, when this plan adds
    /// the same routes and default backend with the same backends as `old` (only the backends'
    /// targets and the notes may differ): the routes built, the table ids of the backends and why
    /// routes were not served. Returns whether it did; if not, the plan must be applied anew.
    pub fn adopt(&mut self, old: &Plan) -> bool {
        let shaping = |p: &Plan| {
            p.steps
                .iter()
                .filter(|s| !matches!(s, Step::Note(_)))
                .count()
        };
        let same = self.fallback == old.fallback
            && self.services == old.services
            && self.backends.len() == old.backends.len()
            && self
                .backends
                .iter()
                .zip(old.backends.iter())
                .all(|((a, _), (b, _))| a.name == b.name)
            && shaping(self) == shaping(old)
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
                    Step::Route {
                        origin,
                        last,
                        conflict,
                        ..
                    },
                    Step::Route {
                        last: built,
                        conflict: was,
                        ..
                    },
                ) => {
                    last.clone_from(built);
                    conflict.clone_from(was);
                    if last.is_some() {
                        *origin = None;
                    }
                }
                _ => {}
            }
        }
        for ((_, id), (_, was)) in self.backends.iter_mut().zip(old.backends.iter()) {
            *id = *was;
        }
        true
    }

    /// Whether the plan adds its routes without consequences beyond their own paths: no
    /// `spec.defaultBackend`, no aliases, no `www.` twin, no `app-root`, no regex mode, and (as last
    /// applied) every route served. Only such a plan can be swapped for another in place.
    pub(crate) fn is_plain(&self) -> bool {
        let policy_plain = self
            .rules
            .policy
            .as_ref()
            .is_none_or(|p| !p.from_to_www && p.app_root.is_none());
        policy_plain
            && self.rules.canary.is_none()
            && self.rules.aliases.is_empty()
            && self.steps.iter().all(|s| match s {
                Step::Note(_) => true,
                Step::Default { .. } => false,
                Step::Route {
                    regex, conflict, ..
                } => !regex && conflict.is_none(),
            })
    }

    /// The route steps: host, origin, the route last built (when the plan was applied) and the
    /// index of the backend.
    pub(crate) fn routes(&self) -> impl Iterator<Item = RouteStep<'_>> {
        self.steps.iter().filter_map(|s| match s {
            Step::Route {
                host,
                origin,
                last,
                backend,
                ..
            } => Some(RouteStep {
                host,
                origin: origin_of(origin, last),
                built: last.as_ref(),
                backend: *backend,
            }),
            _ => None,
        })
    }

    /// How many backends the plan resolved.
    pub(crate) fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// The backends applying the plan asks the table for, in order (each route's, then its
    /// fallback), as indices into its backends.
    pub(crate) fn calls(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for step in self.steps.iter() {
            if let Step::Route { backend, .. } = step {
                out.push(*backend);
                out.extend(self.fallback);
            }
        }
        out
    }

    /// Backend `i` and the table id it got when the plan was last applied.
    pub(crate) fn backend(&self, i: usize) -> (&Arc<table::Backend>, Option<BackendId>) {
        let (b, id) = &self.backends[i];
        (b, *id)
    }

    /// The policy of the plan's routes on `host`, with `fallback` as the fallback backend's id.
    pub(crate) fn policy(
        &self,
        host: &HostPattern,
        tls_hosts: &HashSet<HostPattern>,
        fallback: Option<BackendId>,
    ) -> RoutePolicy {
        RoutePolicy {
            https_redirect: self.rules.force_ssl_redirect
                || (self.rules.ssl_redirect && !tls_hosts.is_empty() && tls_hosts.contains(host)),
            regex: false,
            rules: self.rules.policy.clone(),
            fallback,
            canary: None,
        }
    }

    /// The index of the fallback backend.
    pub(crate) fn fallback(&self) -> Option<usize> {
        self.fallback
    }

    /// The hosts of the plan's rules and its aliases (none, mostly).
    pub(crate) fn aliases(&self) -> (&[HostPattern], &[(String, String)]) {
        (&self.hosts, &self.rules.aliases)
    }

    /// Records the outcome of applying the plan in place of another: the table id of each
    /// backend, the backends themselves (the table's where it shares them) and the route built
    /// for each route step, all served.
    pub(crate) fn install(
        &mut self,
        backends: Vec<(Arc<table::Backend>, Option<BackendId>)>,
        routes: Vec<Arc<Route>>,
    ) {
        self.backends = backends.into_boxed_slice();
        let mut routes = routes.into_iter();
        for step in self.steps.iter_mut() {
            if let Step::Route {
                origin,
                last,
                conflict,
                ..
            } = step
            {
                *last = routes.next();
                *conflict = None;
                if last.is_some() {
                    *origin = None;
                }
            }
        }
    }

    /// The canary settings, on the plan of a canary Ingress.
    pub(crate) fn canary(&self) -> Option<&table::Canary> {
        self.rules.canary.as_deref()
    }

    /// The paths the plan's routes ask for.
    pub(crate) fn route_keys(&self) -> impl Iterator<Item = crate::canary::PathKey> + '_ {
        self.routes()
            .map(|r| crate::canary::path_key(r.host, r.origin))
    }

    /// On the plan of a canary Ingress: claims each of its paths in `canaries` (`routed` holds the
    /// paths of the other Ingresses), remembering why a path attaches to nothing.
    pub(crate) fn claim_canary(
        &mut self,
        key: &ObjectKey,
        routed: &HashSet<crate::canary::PathKey>,
        canaries: &mut crate::canary::Canaries,
    ) {
        let Some(canary) = self.rules.canary.as_deref() else {
            return;
        };
        for step in self.steps.iter_mut() {
            match step {
                Step::Note(_) => {}
                Step::Default { conflict, .. } => {
                    *conflict = Some(Box::new(Diagnostic::new(
                        Severity::Warning,
                        Kind::Ingress,
                        key,
                        Some("spec.defaultBackend".into()),
                        "has no effect on a canary Ingress; ignored",
                    )));
                }
                Step::Route {
                    host,
                    backend,
                    origin,
                    last,
                    conflict,
                    ..
                } => {
                    let from = origin_of(origin, last);
                    let path = crate::canary::path_key(host, from);
                    let served = (&self.backends[*backend].0, *backend);
                    let claim = canaries.claim(routed, path, key, canary, served);
                    *conflict = crate::canary::unclaimed(key, from, &claim);
                }
            }
        }
    }

    /// Records the table id backend `i` got.
    pub(crate) fn set_backend_id(&mut self, i: usize, id: BackendId) {
        if let Some((_, slot)) = self.backends.get_mut(i) {
            *slot = Some(id);
        }
    }

    /// The diagnostics the plan added when it was last applied, in the same order.
    pub fn replay(&self, out: &mut Vec<Diagnostic>) {
        for step in &self.steps {
            match step {
                Step::Note(d) => out.push((**d).clone()),
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
    /// `spec.tls`. Paths this plan's routes lost are added to `contested`.
    pub fn apply(
        &mut self,
        key: &ObjectKey,
        tls_hosts: &HashSet<HostPattern>,
        builder: &mut TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
        contested: &mut HashSet<u64>,
        canaries: &mut crate::canary::Canaries,
    ) {
        if self.rules.canary.is_some() {
            // A canary adds no routes of its own: its paths were claimed beforehand.
            self.replay(diagnostics);
            return;
        }
        let backends = &mut self.backends;
        let mut id_of = |builder: &mut TableBuilder, i: usize| {
            let (backend, id) = &mut backends[i];
            let got = builder.shared_backend(backend);
            *id = Some(got);
            got
        };
        for step in self.steps.iter_mut() {
            match step {
                Step::Note(d) => diagnostics.push((**d).clone()),
                Step::Default {
                    backend,
                    origin,
                    conflict,
                } => {
                    let id = id_of(builder, *backend);
                    *conflict = builder
                        .set_default_backend(id, (**origin).clone())
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
                    // The origin is read from the route built last time, which the builder may
                    // replace: hold it meanwhile.
                    let built = last.clone();
                    let from = match (origin.as_deref(), &built) {
                        (Some(o), _) => o,
                        (None, Some(r)) => &r.origin,
                        (None, None) => {
                            unreachable!("a route step keeps its origin until a route holds it")
                        }
                    };
                    let path = (!canaries.is_empty()).then(|| crate::canary::path_key(host, from));
                    let canary = path.as_ref().and_then(|p| canaries.offer(builder, p));
                    let policy = RoutePolicy {
                        https_redirect: self.rules.force_ssl_redirect
                            || (self.rules.ssl_redirect
                                && !tls_hosts.is_empty()
                                && tls_hosts.contains(host)),
                        regex: *regex,
                        rules: self.rules.policy.clone(),
                        fallback,
                        canary: canary.clone(),
                    };
                    *conflict = builder
                        .add_route_reusing(host, id, from, policy, last)
                        .err()
                        .map(|c| route_conflict(key, from, &c));
                    if let (None, Some(path), Some(canary)) = (&conflict, &path, canary) {
                        canaries.attached(path, canary);
                    }
                    if conflict.is_some() {
                        let (exact, path) = from.map_key();
                        contested.insert(crate::patch::path_hash(host, exact, path));
                    }
                    diagnostics.extend(conflict.as_deref().cloned());
                    if last.is_some() {
                        *origin = None;
                    }
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
