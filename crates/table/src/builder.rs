//! Building a [`Table`]: the only way routes get in, so precedence is enforced in one place.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::fasthash::FastMap;
use std::sync::Arc;

use crate::regex_paths::{RegexCache, RegexPaths};
use crate::{
    Backend, BackendId, BackendTarget, Backends, Certificate, HostPattern, PathType, Route,
    RouteOrigin, RoutePolicy, Table, TlsTable, VirtualHost,
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

/// A backend keyed by its name without copying the name: hashes and compares as the name does.
#[derive(Debug)]
struct ByName(Arc<Backend>);

impl Hash for ByName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.as_str().hash(state);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// Accumulates routes and backends, then yields an immutable [`Table`].
///
/// Callers add routes in precedence order (older Ingress first): the first route for a given
/// host/path/type wins and later ones get a [`Conflict`].
#[derive(Debug, Default)]
pub struct TableBuilder {
    exact_hosts: FastMap<String, VirtualHost>,
    wildcard_hosts: FastMap<String, VirtualHost>,
    any_host: Option<VirtualHost>,
    default_backend: Option<Arc<Route>>,
    backends: Vec<Arc<Backend>>,
    tls: TlsTable,
    backend_ids: FastMap<ByName, BackendId>,
    order: usize,
    aliases: Vec<Alias>,
    /// The table built before this one: the parts that come out the same are taken from it.
    previous: Option<Table>,
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
        builder.exact_hosts.reserve(routes);
        builder.backends.reserve(routes);
        builder.backend_ids.reserve(routes);
        builder
    }

    /// Shares with `previous` whatever of it the finished table would hold unchanged: virtual
    /// hosts with the same routes, the default backend route, the certificates.
    pub fn reusing(mut self, previous: &Table) -> Self {
        self.previous = Some(previous.clone());
        self
    }

    /// The id of the backend called `name`, creating it with `target()` the first time.
    pub fn backend(
        &mut self,
        name: impl Into<String>,
        target: impl FnOnce() -> BackendTarget,
    ) -> BackendId {
        let name = name.into();
        if let Some(id) = self.backend_ids.get(name.as_str()) {
            return *id;
        }
        self.add_backend(Arc::new(Backend::new(name, target())))
    }

    /// The id of the backend named like `backend`, taking `backend` itself (not a copy) the first
    /// time that name is seen.
    pub fn shared_backend(&mut self, backend: &Arc<Backend>) -> BackendId {
        if let Some(id) = self.backend_ids.get(backend.name.as_str()) {
            return *id;
        }
        self.add_backend(backend.clone())
    }

    fn add_backend(&mut self, backend: Arc<Backend>) -> BackendId {
        let id = BackendId(self.backends.len());
        self.backends.push(backend.clone());
        self.backend_ids.insert(ByName(backend), id);
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
            HostPattern::Any => self.any_host.get_or_insert_with(|| VirtualHost::new("")),
            // Look up before inserting, so a host seen before costs no copy of its name.
            HostPattern::Exact(h) => {
                if !self.exact_hosts.contains_key(h.as_str()) {
                    self.exact_hosts
                        .insert(h.clone(), VirtualHost::new(h.clone()));
                }
                self.exact_hosts
                    .get_mut(h.as_str())
                    .expect("inserted above")
            }
            HostPattern::Wildcard(s) => {
                if !self.wildcard_hosts.contains_key(s.as_str()) {
                    let vhost = VirtualHost::new(format!("*.{s}"));
                    self.wildcard_hosts.insert(s.clone(), vhost);
                }
                self.wildcard_hosts
                    .get_mut(s.as_str())
                    .expect("inserted above")
            }
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
        if let Some(existing) = &self.default_backend {
            return Err(Conflict {
                winner: existing.origin.clone(),
            });
        }
        let order = self.next_order();
        let route = Route {
            backend,
            origin,
            policy: RoutePolicy::default(),
            order,
        };
        let last = self
            .previous
            .as_ref()
            .and_then(|t| t.default_backend.as_ref());
        self.default_backend = Some(match last {
            Some(r) if r.backend == backend && r.order == order && r.origin == route.origin => {
                r.clone()
            }
            _ => Arc::new(route),
        });
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
            HostPattern::Exact(h) => self.tls.exact.entry(h.clone()),
            HostPattern::Wildcard(s) => self.tls.wildcard.entry(s.clone()),
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
        self.tls.default = Some(cert);
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
        let previous = self.previous.take().unwrap_or_default();
        let mut has_app_roots = false;
        let mut finish = |vhost: VirtualHost, old: Option<&Arc<VirtualHost>>| {
            let vhost = finish_vhost(vhost, old, cache, &mut rejected);
            has_app_roots |= vhost.app_root.is_some();
            vhost
        };
        let exact_hosts = std::mem::take(&mut self.exact_hosts)
            .into_iter()
            .map(|(name, vhost)| {
                let old = previous.exact_hosts.get(name.as_str());
                (name, finish(vhost, old))
            })
            .collect();
        let wildcard_hosts = std::mem::take(&mut self.wildcard_hosts)
            .into_iter()
            .map(|(name, vhost)| {
                let old = previous.wildcard_hosts.get(name.as_str());
                (name, finish(vhost, old))
            })
            .collect();
        let any_host = self
            .any_host
            .take()
            .map(|vhost| finish(vhost, previous.any_host.as_ref()));
        let tls = if same_tls(&self.tls, &previous.tls) {
            previous.tls.clone()
        } else {
            Arc::new(std::mem::take(&mut self.tls))
        };
        let table = Table {
            exact_hosts: Arc::new(exact_hosts),
            wildcard_hosts: Arc::new(wildcard_hosts),
            any_host,
            default_backend: self.default_backend.take(),
            backends: Backends::from_vec(std::mem::take(&mut self.backends)),
            tls,
            has_app_roots,
        };
        (table, rejected)
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
                HostPattern::Exact(h) => self.exact_hosts.get(h),
                HostPattern::Wildcard(s) => self.wildcard_hosts.get(s),
                HostPattern::Any => self.any_host.as_ref(),
            };
            let Some(source) = source else { continue };
            if self.exact_hosts.contains_key(&alias.name) {
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
            if let Some(cert) = self.tls.for_server_name(&source.name).cloned() {
                self.tls.exact.entry(alias.name.clone()).or_insert(cert);
            }
            self.exact_hosts.insert(alias.name, copy);
        }
    }

    /// For every exact host with a route asking for `from-to-www-redirect`, a twin host (with or
    /// without `www.`) that redirects to it, unless the twin has routes of its own.
    fn add_www_twins(&mut self) {
        let mut twins = Vec::new();
        for (name, vhost) in &self.exact_hosts {
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
            if !self.exact_hosts.contains_key(&twin) {
                twins.push((twin, name.clone()));
            }
        }
        for (twin, to) in twins {
            if let Some(cert) = self.tls.exact.get(&to).cloned() {
                self.tls.exact.entry(twin.clone()).or_insert(cert);
            }
            let vhost = VirtualHost {
                name: twin.clone(),
                redirect_to: Some(to),
                ..VirtualHost::default()
            };
            self.exact_hosts.insert(twin, vhost);
        }
    }
}

/// Whether two certificate tables hold the same certificates (the same allocations).
fn same_tls(a: &TlsTable, b: &TlsTable) -> bool {
    fn same_map(
        a: &FastMap<String, Arc<Certificate>>,
        b: &FastMap<String, Arc<Certificate>>,
    ) -> bool {
        a.len() == b.len()
            && a.iter()
                .all(|(k, v)| b.get(k.as_str()).is_some_and(|w| Arc::ptr_eq(v, w)))
    }
    same_map(&a.exact, &b.exact)
        && same_map(&a.wildcard, &b.wildcard)
        && match (&a.default, &b.default) {
            (None, None) => true,
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
}

/// Whether two path maps hold the same routes (the same allocations) under the same keys.
fn same_routes(a: &FastMap<String, Arc<Route>>, b: &FastMap<String, Arc<Route>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, r)| b.get(k.as_str()).is_some_and(|s| Arc::ptr_eq(r, s)))
}

/// A finished virtual host: `old` itself when it was finished from the same routes (and is not in
/// regex mode, whose diagnostics are worked out again), else `vhost` finished.
fn finish_vhost(
    vhost: VirtualHost,
    old: Option<&Arc<VirtualHost>>,
    cache: &mut RegexCache,
    rejected: &mut Vec<Rejected>,
) -> Arc<VirtualHost> {
    if let Some(old) = old {
        let plain = old.regex.is_none()
            && !vhost
                .exact
                .values()
                .chain(vhost.prefix.values())
                .any(|r| r.policy.regex);
        if plain
            && old.name == vhost.name
            && old.redirect_to == vhost.redirect_to
            && same_routes(&old.exact, &vhost.exact)
            && same_routes(&old.prefix, &vhost.prefix)
        {
            return old.clone();
        }
    }
    let mut vhost = vhost;
    compile_vhost(&mut vhost, cache, rejected);
    Arc::new(vhost)
}

/// Sets a virtual host's `app-root` (from the route of highest precedence that has one) and
/// compiles its paths when a route asked for regex mode; unusable paths are removed.
fn compile_vhost(vhost: &mut VirtualHost, cache: &mut RegexCache, rejected: &mut Vec<Rejected>) {
    let app_root = vhost
        .exact
        .values()
        .chain(vhost.prefix.values())
        .filter_map(|r| Some((r.order, r.policy.rules.as_ref()?.app_root.as_ref()?)))
        .min_by_key(|(order, _)| *order)
        .map(|(_, root)| root.clone());
    vhost.app_root = app_root;
    let mut routes = vhost.exact.values().chain(vhost.prefix.values());
    if !routes.any(|r| r.policy.regex) {
        return;
    }
    let routes: Vec<Arc<Route>> = vhost
        .exact
        .values()
        .chain(vhost.prefix.values())
        .cloned()
        .collect();
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
