//! The compiled routing state that sits between translation and the proxy.
//!
//! `translate()` builds a [`Table`] with a [`TableBuilder`]; the binary publishes it through
//! [`Published`] (one atomic swap); the proxy loads it once per request and calls [`Table::lookup`].
//! A table never changes after it is built: routes, backends and certificates change together by
//! publishing a new one.
#![forbid(unsafe_code)]

mod backend;
mod builder;
mod explain;
pub mod fasthash;
mod host;
mod publish;
mod route;
mod tls;

pub use backend::{Backend, BackendId, BackendTarget};
pub use builder::{Conflict, TableBuilder};
pub use explain::{path_matches, Candidate, Explanation, Verdict};
pub use host::{normalize_host, HostPattern};
pub use publish::Published;
pub use route::{PathType, Route, RouteOrigin, RoutePolicy};
pub use tls::{Certificate, TlsTable};

use crate::fasthash::FastMap;
use std::sync::Arc;

use serde::Serialize;

/// The compiled, immutable routing table.
#[derive(Debug, Default, Serialize)]
pub struct Table {
    /// Virtual hosts whose rule names an exact host (lower-case, no port).
    pub exact_hosts: FastMap<String, VirtualHost>,
    /// Virtual hosts for `*.suffix` rules, keyed by `suffix`.
    pub wildcard_hosts: FastMap<String, VirtualHost>,
    /// Rules without a host: they serve any Host header no other virtual host claims.
    pub any_host: Option<VirtualHost>,
    /// The `defaultBackend` that serves what no rule matches (from the oldest Ingress that has one).
    pub default_backend: Option<Arc<Route>>,
    /// Every backend referenced by a route, indexed by [`BackendId`]. Backends are shared: a table
    /// built from an unchanged Service port reuses the previous table's backend, round-robin
    /// position included.
    pub backends: Vec<Arc<Backend>>,
    /// Certificates by server name.
    pub tls: TlsTable,
}

/// The routes of one host pattern.
#[derive(Debug, Default, Serialize)]
pub struct VirtualHost {
    /// The host as written in the Ingress rule (`""` for host-less rules).
    pub name: String,
    /// `Exact` paths.
    pub exact: FastMap<String, Arc<Route>>,
    /// `Prefix` (and plain `ImplementationSpecific`) paths keyed by the path without trailing `/`
    /// (`/` itself is the empty key).
    pub prefix: FastMap<String, Arc<Route>>,
}

/// Which kind of virtual host served a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HostMatch {
    /// An exact host rule.
    Exact,
    /// A `*.` wildcard host rule.
    Wildcard,
    /// A rule without a host.
    AnyHost,
    /// No rule matched; the `defaultBackend` serves it.
    DefaultBackend,
}

/// The result of a successful lookup.
#[derive(Clone, Copy, Debug)]
pub struct Match<'a> {
    /// The route to take.
    pub route: &'a Arc<Route>,
    /// How the host was matched.
    pub host: HostMatch,
}

impl VirtualHost {
    /// A virtual host with no routes.
    pub fn new(name: impl Into<String>) -> Self {
        VirtualHost {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The route for `path` by Ingress precedence: the longest matching path wins, and at equal
    /// length `Exact` beats `Prefix`. An exact match spans the whole path, so no prefix can beat it.
    pub fn match_path(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        if self.prefix.is_empty() {
            return None;
        }
        if let Some(route) = self.prefix.get(path) {
            return Some(route);
        }
        // Element-wise: a prefix key can only end where the request path has a `/`.
        path.rmatch_indices('/')
            .find_map(|(i, _)| self.prefix.get(&path[..i]))
    }

    /// Number of paths in this virtual host.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len()
    }

    /// Whether the virtual host has no paths.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// Finds the route for a request. `host` is the Host header or `:authority` as received (any
    /// case, optional port); `path` is the request path without the query.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Match<'_>> {
        let host = normalize_host(host);
        let (vhost, kind) = match self.select_host(&host) {
            Some(found) => found,
            None => return self.default_match(),
        };
        match vhost.match_path(path) {
            Some(route) => Some(Match { route, host: kind }),
            None => self.default_match(),
        }
    }

    /// The virtual host that claims a normalized host name: exact, then wildcard, then host-less.
    pub fn select_host(&self, host: &str) -> Option<(&VirtualHost, HostMatch)> {
        if let Some(v) = self.exact_hosts.get(host) {
            return Some((v, HostMatch::Exact));
        }
        if !self.wildcard_hosts.is_empty() {
            if let Some((label, rest)) = host.split_once('.') {
                if !label.is_empty() {
                    if let Some(v) = self.wildcard_hosts.get(rest) {
                        return Some((v, HostMatch::Wildcard));
                    }
                }
            }
        }
        self.any_host.as_ref().map(|v| (v, HostMatch::AnyHost))
    }

    fn default_match(&self) -> Option<Match<'_>> {
        self.default_backend.as_ref().map(|route| Match {
            route,
            host: HostMatch::DefaultBackend,
        })
    }

    /// The backend a route points at.
    pub fn backend(&self, id: BackendId) -> &Backend {
        &self.backends[id.0]
    }

    /// All virtual hosts: exact, wildcard, then host-less.
    pub fn virtual_hosts(&self) -> impl Iterator<Item = &VirtualHost> {
        let mut exact: Vec<_> = self.exact_hosts.values().collect();
        exact.sort_by(|a, b| a.name.cmp(&b.name));
        let mut wild: Vec<_> = self.wildcard_hosts.values().collect();
        wild.sort_by(|a, b| a.name.cmp(&b.name));
        exact.into_iter().chain(wild).chain(self.any_host.as_ref())
    }

    /// Number of routes (paths over all virtual hosts, plus the default backend).
    pub fn route_count(&self) -> usize {
        self.virtual_hosts().map(VirtualHost::len).sum::<usize>()
            + usize::from(self.default_backend.is_some())
    }
}
