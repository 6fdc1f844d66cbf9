//! Building a [`Table`]: the only way routes get in, so precedence is enforced in one place.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::fasthash::FastMap;
use std::sync::Arc;

use crate::{
    Backend, BackendId, BackendTarget, Certificate, HostPattern, PathType, Route, RouteOrigin,
    RoutePolicy, Table, VirtualHost,
};

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

    /// The finished table.
    pub fn build(self) -> Table {
        self.table
    }
}
