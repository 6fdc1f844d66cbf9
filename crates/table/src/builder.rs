//! Building a [`Table`]: the only way routes get in, so precedence is enforced in one place.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::fasthash::FastMap;
use std::sync::Arc;

use crate::regex_paths::{RegexCache, RegexPaths};
use crate::{
    Backend, BackendId, BackendTarget, Certificate, HostPattern, PathType, Route, RouteOrigin,
    RoutePolicy, Table, VirtualHost,
};

/// Something finishing the table has to tell about an Ingress: a part it had to leave out, or
/// one it serves differently than written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// `namespace/name` of the Ingress it came from.
    pub ingress: String,
    /// The field it was written in (a path, or an annotation).
    pub field: String,
    /// What is wrong, or what changed.
    pub reason: String,
    /// Whether that part is left out of the table (else it is served, as `reason` says).
    pub dropped: bool,
}

/// An extra name for the host of an Ingress rule (`server-alias`).
#[derive(Debug)]
struct Alias {
    name: String,
    of: HostPattern,
    ingress: String,
    field: String,
}

/// A route that lost to one added before it (same host, path and matching type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The route that keeps serving.
    pub winner: RouteOrigin,
}

/// Accumulates routes and backends, then yields an immutable [`Table`].
///
/// Callers add routes in precedence order (older Ingress first): the first route for a given
/// host/path/type wins and later ones get a [`Conflict`].
#[derive(Debug, Default)]
pub struct TableBuilder {
    table: Table,
    backend_ids: HashMap<String, BackendId>,
    order: usize,
    aliases: Vec<Alias>,
}

impl TableBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder with room for about `routes` routes, hosts and backends, so building a
    /// large table does not grow its maps step by step.
    pub fn with_capacity(routes: usize) -> Self {
        let mut builder = Self::default();
        builder.table.exact_hosts.reserve(routes);
        builder.table.backends.reserve(routes);
        builder.backend_ids.reserve(routes);
        builder
    }

    /// The id of the backend called `name`, creating it with `target()` the first time.
    pub fn backend(
        &mut self,
        name: impl Into<String>,
        target: impl FnOnce() -> BackendTarget,
    ) -> BackendId {
        match self.backend_ids.entry(name.into()) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let id = BackendId(self.table.backends.len());
                self.table
                    .backends
                    .push(Arc::new(Backend::new(e.key().clone(), target())));
                e.insert(id);
                id
            }
        }
    }

    /// The id of the backend named like `backend`, taking `backend` itself (not a copy) the first
    /// time that name is seen.
    pub fn shared_backend(&mut self, backend: &Arc<Backend>) -> BackendId {
        if let Some(id) = self.backend_ids.get(backend.name.as_str()) {
            return *id;
        }
        let id = BackendId(self.table.backends.len());
        self.table.backends.push(backend.clone());
        self.backend_ids.insert(backend.name.clone(), id);
        id
    }

    /// Adds a path route under a host pattern.
    pub fn add_route(
        &mut self,
        host: &HostPattern,
        backend: BackendId,
        origin: RouteOrigin,
        policy: RoutePolicy,
    ) -> Result<(), Conflict> {
        self.add_route_reusing(host, backend, &origin, policy, &mut None)
    }

    /// Adds a path route like [`TableBuilder::add_route`], serving `last` itself when it is the
    /// route that would be built (same backend, policy and position), and leaving the route served
    /// in `last` otherwise. `last` must have been built from `origin`.
    pub fn add_route_reusing(
        &mut self,
        host: &HostPattern,
        backend: BackendId,
        origin: &RouteOrigin,
        policy: RoutePolicy,
        last: &mut Option<Arc<Route>>,
    ) -> Result<(), Conflict> {
        let order = self.next_order();
        let (map, key) = self.path_map(host, origin.path_type, &origin.path);
        match map.entry(key) {
            Entry::Occupied(existing) => Err(Conflict {
                winner: existing.get().origin.clone(),
            }),
            Entry::Vacant(e) => {
                let route = match last {
                    Some(r) if r.backend == backend && r.order == order && r.policy == policy => {
                        r.clone()
                    }
                    _ => {
                        let r = Arc::new(Route {
                            backend,
                            origin: origin.clone(),
                            policy,
                            order,
                        });
                        *last = Some(r.clone());
                        r
                    }
                };
                e.insert(route);
                Ok(())
            }
        }
    }

    /// The path map of `host`'s virtual host that holds paths of `path_type`, created when
    /// missing, and the key `path` has in it.
    fn path_map(
        &mut self,
        host: &HostPattern,
        path_type: PathType,
        path: &str,
    ) -> (&mut FastMap<String, Arc<Route>>, String) {
        let vhost = match host {
            HostPattern::Any => self
                .table
                .any_host
                .get_or_insert_with(|| VirtualHost::new("")),
            HostPattern::Exact(h) => self
                .table
                .exact_hosts
                .entry(h.clone())
                .or_insert_with(|| VirtualHost::new(h.clone())),
            HostPattern::Wildcard(s) => self
                .table
                .wildcard_hosts
                .entry(s.clone())
                .or_insert_with(|| VirtualHost::new(format!("*.{s}"))),
        };
        match path_type {
            PathType::Exact => (&mut vhost.exact, path.to_string()),
            PathType::Prefix | PathType::ImplementationSpecific => {
                (&mut vhost.prefix, path.trim_end_matches('/').to_string())
            }
        }
    }

    /// Sets the table-wide default backend; the first one set wins.
    pub fn set_default_backend(
        &mut self,
        backend: BackendId,
        origin: RouteOrigin,
    ) -> Result<(), Conflict> {
        if let Some(existing) = &self.table.default_backend {
            return Err(Conflict {
                winner: existing.origin.clone(),
            });
        }
        let order = self.next_order();
        self.table.default_backend = Some(Arc::new(Route {
            backend,
            origin,
            policy: RoutePolicy::default(),
            order,
        }));
        Ok(())
    }

    /// Serves `cert` for a host pattern; the first certificate set for a host wins. Host-less
    /// patterns are ignored (a certificate needs a name).
    pub fn add_certificate(
        &mut self,
        host: &HostPattern,
        cert: Arc<Certificate>,
    ) -> Result<(), Arc<Certificate>> {
        let map = match host {
            HostPattern::Any => return Ok(()),
            HostPattern::Exact(h) => self.table.tls.exact.entry(h.clone()),
            HostPattern::Wildcard(s) => self.table.tls.wildcard.entry(s.clone()),
        };
        match map {
            Entry::Occupied(e) => Err(e.get().clone()),
            Entry::Vacant(e) => {
                e.insert(cert);
                Ok(())
            }
        }
    }

    /// Sets the certificate for names nothing else covers.
    pub fn set_default_certificate(&mut self, cert: Arc<Certificate>) {
        self.table.tls.default = Some(cert);
    }

    fn next_order(&mut self) -> usize {
        self.order += 1;
        self.order
    }

    /// Serves the routes of `of` under the exact host `name` too (`server-alias`), unless `name`
    /// has routes of its own; `ingress` and `field` say where the alias was written.
    pub fn add_alias(&mut self, name: &str, of: &HostPattern, ingress: &str, field: &str) {
        self.aliases.push(Alias {
            name: name.to_ascii_lowercase(),
            of: of.clone(),
            ingress: ingress.to_string(),
            field: field.to_string(),
        });
    }

    /// The finished table, compiling regex hosts afresh; what had to be left out is dropped.
    pub fn build(self) -> Table {
        self.finish(&mut RegexCache::new()).0
    }

    /// The finished table: aliases and `www.` twins added, `app-root`s set, and hosts in regex
    /// mode compiled (patterns reused from `cache`). Returns what had to be left out.
    pub fn finish(mut self, cache: &mut RegexCache) -> (Table, Vec<Rejected>) {
        let mut rejected = Vec::new();
        self.add_www_twins();
        self.add_aliases(&mut rejected);
        let table = &mut self.table;
        let vhosts = table
            .exact_hosts
            .values_mut()
            .chain(table.wildcard_hosts.values_mut())
            .chain(table.any_host.as_mut());
        for vhost in vhosts {
            finish_vhost(vhost, cache, &mut rejected);
            table.has_app_roots |= vhost.app_root.is_some();
        }
        (self.table, rejected)
    }

    fn add_aliases(&mut self, rejected: &mut Vec<Rejected>) {
        // Alias name → the Ingress that got it first.
        let mut given: HashMap<String, String> = HashMap::new();
        // An Ingress with several rule hosts names each alias once per host: the first counts.
        let mut seen = std::collections::HashSet::new();
        for alias in std::mem::take(&mut self.aliases) {
            if !seen.insert((alias.name.clone(), alias.ingress.clone())) {
                continue;
            }
            if let Some(owner) = given.get(&alias.name) {
                if *owner != alias.ingress {
                    rejected.push(Rejected {
                        reason: format!(
                            "alias {:?} ignored: it is already an alias of Ingress {owner}",
                            alias.name
                        ),
                        ingress: alias.ingress,
                        field: alias.field,
                        dropped: false,
                    });
                }
                continue;
            }
            let source = match &alias.of {
                HostPattern::Exact(h) => self.table.exact_hosts.get(h),
                HostPattern::Wildcard(s) => self.table.wildcard_hosts.get(s),
                HostPattern::Any => self.table.any_host.as_ref(),
            };
            let Some(source) = source else { continue };
            if self.table.exact_hosts.contains_key(&alias.name) {
                rejected.push(Rejected {
                    reason: format!(
                        "alias {:?} ignored: that host has routes of its own",
                        alias.name
                    ),
                    ingress: alias.ingress,
                    field: alias.field,
                    dropped: false,
                });
                continue;
            }
            given.insert(alias.name.clone(), alias.ingress.clone());
            let copy = VirtualHost {
                name: alias.name.clone(),
                exact: source.exact.clone(),
                prefix: source.prefix.clone(),
                ..VirtualHost::default()
            };
            if let Some(cert) = self.table.tls.for_server_name(&source.name).cloned() {
                self.table
                    .tls
                    .exact
                    .entry(alias.name.clone())
                    .or_insert(cert);
            }
            self.table.exact_hosts.insert(alias.name, copy);
        }
    }

    /// For every exact host with a route asking for `from-to-www-redirect`, a twin host (with or
    /// without `www.`) that redirects to it, unless the twin has routes of its own.
    fn add_www_twins(&mut self) {
        let mut twins = Vec::new();
        for (name, vhost) in &self.table.exact_hosts {
            let wants = vhost
                .exact
                .values()
                .chain(vhost.prefix.values())
                .any(|r| r.policy.rules.as_ref().is_some_and(|p| p.from_to_www));
            if !wants {
                continue;
            }
            let twin = match name.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => format!("www.{name}"),
            };
            if !self.table.exact_hosts.contains_key(&twin) {
                twins.push((twin, name.clone()));
            }
        }
        for (twin, to) in twins {
            if let Some(cert) = self.table.tls.exact.get(&to).cloned() {
                self.table.tls.exact.entry(twin.clone()).or_insert(cert);
            }
            let vhost = VirtualHost {
                name: twin.clone(),
                redirect_to: Some(to),
                ..VirtualHost::default()
            };
            self.table.exact_hosts.insert(twin, vhost);
        }
    }
}

/// Sets a virtual host's `app-root` (from the route of highest precedence that has one) and
/// compiles its paths when a route asked for regex mode; unusable paths are removed.
fn finish_vhost(vhost: &mut VirtualHost, cache: &mut RegexCache, rejected: &mut Vec<Rejected>) {
    let routes: Vec<Arc<Route>> = vhost
        .exact
        .values()
        .chain(vhost.prefix.values())
        .cloned()
        .collect();
    vhost.app_root = routes
        .iter()
        .filter_map(|r| Some((r.order, r.policy.rules.as_ref()?.app_root.as_ref()?)))
        .min_by_key(|(order, _)| *order)
        .map(|(_, root)| root.clone());
    if !routes.iter().any(|r| r.policy.regex) {
        return;
    }
    let asked_by = routes
        .iter()
        .filter(|r| r.policy.regex)
        .min_by_key(|r| r.order)
        .map(|r| r.origin.ingress.clone())
        .unwrap_or_default();
    for route in routes.iter().filter(|r| !r.policy.regex) {
        rejected.push(Rejected {
            ingress: route.origin.ingress.clone(),
            field: format!("{}.path", route.origin.field()),
            reason: format!(
                "matched as the case-insensitive regular expression \"^{}\", like every path of host \
                 {:?}, because Ingress {asked_by} asks for regular expressions there (as ingress-nginx does)",
                route.origin.path,
                if vhost.name.is_empty() { "*" } else { vhost.name.as_str() }
            ),
            dropped: false,
        });
    }
    let (paths, bad) = RegexPaths::compile(routes, cache);
    for r in bad {
        vhost.exact.retain(|_, route| route.origin != r.origin);
        vhost.prefix.retain(|_, route| route.origin != r.origin);
        rejected.push(Rejected {
            ingress: r.origin.ingress.clone(),
            field: format!("{}.path", r.origin.field()),
            reason: r.reason,
            dropped: true,
        });
    }
    vhost.regex = Some(paths);
}
