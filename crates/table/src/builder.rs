//! Building a [`Table`]: the only way routes get in, so precedence is enforced in one place.
//!
//! A builder given the table built before ([`TableBuilder::reusing`]) takes from it whatever
//! comes out the same: while every route added to a host is the one the previous table has
//! there, the host is not built at all — the previous one (and its name) is taken as it is — so
//! translating many unchanged Ingresses again allocates nothing for them.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use crate::fasthash::FastMap;
use std::sync::Arc;

use crate::regex_paths::RegexCache;
use crate::{
    Backend, BackendId, BackendTarget, Certificate, HostPattern, Route, RouteOrigin, RoutePolicy,
    Table, TlsTable, VirtualHost,
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
pub(crate) struct Alias {
    pub(crate) name: String,
    pub(crate) of: HostPattern,
    pub(crate) ingress: String,
    pub(crate) field: String,
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

/// Routes by path, as a virtual host holds them.
pub(crate) type Paths = FastMap<String, Arc<Route>>;

/// A virtual host being built.
#[derive(Debug)]
pub(crate) enum Building {
    /// Every route added so far is the previous table's route under the same path: if the rest
    /// of `prev`'s routes follow, the host comes out as `prev`.
    Same {
        prev: Arc<VirtualHost>,
        /// How many of `prev`'s routes were added…
        added: usize,
        /// …and which (kept only when `prev` has more than one).
        routes: Vec<Arc<Route>>,
    },
    /// A host of its own: its routes differ from the previous table's, or it had none.
    Own(Box<VirtualHost>),
}

impl Building {
    /// A host that starts out as `prev` (when there is one that can be taken whole), else empty.
    fn start(prev: Option<&Arc<VirtualHost>>, name: impl FnOnce() -> String) -> Building {
        match prev {
            Some(p) if p.regex.is_none() && p.redirect_to.is_none() && !p.is_empty() => {
                Building::Same {
                    prev: p.clone(),
                    added: 0,
                    routes: Vec::new(),
                }
            }
            _ => Building::Own(Box::new(VirtualHost::new(name()))),
        }
    }

    /// Whether `route`, one of `prev`'s, was added.
    fn has(prev: &VirtualHost, added: usize, routes: &[Arc<Route>], route: &Arc<Route>) -> bool {
        if prev.len() == 1 {
            added == 1
        } else {
            routes.iter().any(|r| Arc::ptr_eq(r, route))
        }
    }

    /// This host as one of its own, holding the routes added so far.
    pub(crate) fn own(&mut self) -> &mut VirtualHost {
        if let Building::Same {
            prev,
            added,
            routes,
        } = self
        {
            let mut vhost = VirtualHost::new(prev.name.clone());
            let all = prev.exact.values().chain(prev.prefix.values());
            let kept: Vec<Arc<Route>> = if prev.len() == 1 {
                all.take(*added).cloned().collect()
            } else {
                std::mem::take(routes)
            };
            for route in kept {
                let (exact, key) = route.origin.map_key();
                let map = if exact {
                    &mut vhost.exact
                } else {
                    &mut vhost.prefix
                };
                map.insert(key.to_string(), route);
            }
            *self = Building::Own(Box::new(vhost));
        }
        match self {
            Building::Own(vhost) => vhost,
            Building::Same { .. } => unreachable!("made its own above"),
        }
    }

    /// Whether the host is exactly the previous table's.
    pub(crate) fn is_whole(&self) -> bool {
        matches!(self, Building::Same { prev, added, .. } if *added == prev.len())
    }

    /// The host's name, its `Exact` paths and its `Prefix` paths.
    pub(crate) fn parts(&self) -> (&str, &Paths, &Paths) {
        match self {
            Building::Same { prev, .. } => (&prev.name, &prev.exact, &prev.prefix),
            Building::Own(v) => (&v.name, &v.exact, &v.prefix),
        }
    }
}

/// Accumulates routes and backends, then yields an immutable [`Table`].
///
/// Callers add routes in precedence order (older Ingress first): the first route for a given
/// host/path/type wins and later ones get a [`Conflict`].
#[derive(Debug, Default)]
pub struct TableBuilder {
    pub(crate) exact_hosts: FastMap<Arc<str>, Building>,
    pub(crate) wildcard_hosts: FastMap<Arc<str>, Building>,
    pub(crate) any_host: Option<Building>,
    pub(crate) default_backend: Option<Arc<Route>>,
    pub(crate) backends: Vec<Arc<Backend>>,
    pub(crate) tls: TlsTable,
    backend_ids: FastMap<ByName, BackendId>,
    order: usize,
    pub(crate) aliases: Vec<Alias>,
    /// The table built before this one: the parts that come out the same are taken from it.
    pub(crate) previous: Table,
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
    /// hosts with the same routes (and their names), the default backend route, the
    /// certificates, chunks of the same backends.
    pub fn reusing(mut self, previous: &Table) -> Self {
        self.previous = previous.clone();
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
        let reusable = last
            .as_ref()
            .filter(|r| r.backend == backend && r.order == order && r.policy == policy);
        let (exact, key) = origin.map_key();
        let building = self.building(host);
        if let Building::Same {
            prev,
            added,
            routes,
        } = building
        {
            let map = if exact { &prev.exact } else { &prev.prefix };
            if let Some(theirs) = map.get(key) {
                if reusable.is_some_and(|r| Arc::ptr_eq(r, theirs)) {
                    *added += 1;
                    if prev.len() > 1 {
                        routes.push(theirs.clone());
                    }
                    return Ok(());
                }
                if Building::has(prev, *added, routes, theirs) {
                    return Err(Conflict {
                        winner: theirs.origin.clone(),
                    });
                }
            }
        }
        let reused = reusable.cloned();
        let vhost = building.own();
        let map = if exact {
            &mut vhost.exact
        } else {
            &mut vhost.prefix
        };
        if let Some(existing) = map.get(key) {
            return Err(Conflict {
                winner: existing.origin.clone(),
            });
        }
        let route = match reused {
            Some(r) => r,
            None => {
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
        map.insert(key.to_string(), route);
        Ok(())
    }

    /// The host being built for `host`, started (from the previous table's) when missing.
    fn building(&mut self, host: &HostPattern) -> &mut Building {
        let previous = &self.previous;
        match host {
            HostPattern::Any => self
                .any_host
                .get_or_insert_with(|| Building::start(previous.any_host.as_ref(), String::new)),
            HostPattern::Exact(h) => {
                start_named(&mut self.exact_hosts, &previous.exact_hosts, h, || {
                    h.clone()
                })
            }
            HostPattern::Wildcard(s) => start_named(
                &mut self.wildcard_hosts,
                &previous.wildcard_hosts,
                s,
                || format!("*.{s}"),
            ),
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
        self.default_backend = Some(match &self.previous.default_backend {
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
        let (map, name) = match host {
            HostPattern::Any => return Ok(()),
            HostPattern::Exact(h) => (&mut self.tls.exact, h),
            HostPattern::Wildcard(s) => (&mut self.tls.wildcard, s),
        };
        match map.get(name.as_str()) {
            Some(winner) => Err(winner.clone()),
            None => {
                map.insert(name.clone(), cert);
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
}

/// The host being built under `name` in `hosts`, started when missing: from the previous table's
/// host of that name (whose name is then shared, not copied), else empty and called `full()`.
fn start_named<'a>(
    hosts: &'a mut FastMap<Arc<str>, Building>,
    previous: &FastMap<Arc<str>, Arc<VirtualHost>>,
    name: &str,
    full: impl FnOnce() -> String,
) -> &'a mut Building {
    if hosts.contains_key(name) {
        return hosts.get_mut(name).expect("looked up above");
    }
    let (key, building) = match previous.get_key_value(name) {
        Some((key, prev)) => (key.clone(), Building::start(Some(prev), full)),
        None => (
            Arc::from(name),
            Building::Own(Box::new(VirtualHost::new(full()))),
        ),
    };
    hosts.entry(key).or_insert(building)
}
