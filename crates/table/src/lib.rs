//! The compiled routing state that sits between translation and the proxy.
//!
//! `translate()` builds a [`Table`] with a [`TableBuilder`]; the binary publishes it through
//! [`Published`] (one atomic swap); the proxy loads it once per request and calls [`Table::lookup`].
//! A table never changes after it is built: routes, backends and certificates change together by
//! publishing a new one.
#![forbid(unsafe_code)]

mod backend;
mod balance;
mod builder;
mod canary;
mod cidr;
mod explain;
pub mod fasthash;
mod finish;
mod host;
mod normalize;
mod policy;
mod publish;
mod regex_paths;
mod route;
mod tls;

pub use backend::{Backend, BackendId, BackendTarget, Backends};
pub use balance::{Affinity, AffinityMode, Algorithm, Balance, HashKey, KeyPart, SameSite};
pub use builder::{Conflict, Rejected, TableBuilder};
pub use canary::{Canary, CanaryHeader, CanaryPattern, HeaderMatch};
pub use cidr::Cidr;
pub use explain::{path_matches, Candidate, Explanation, Verdict};
pub use host::{normalize_host, HostPattern};
pub use normalize::{normalize_path, PathError};
pub use policy::auth;
pub use policy::{
    origin_matches, Cors, CorsOrigins, HealthCheck, Policy, Protocol, RateLimit, Redirect, Retry,
    RetryOn, RewriteTarget, SourceRanges, Timeouts, UpstreamTls,
};
pub use publish::Published;
pub use regex_paths::{pattern_of, RegexCache, RegexPaths};
pub use route::{PathType, Route, RouteOrigin, RoutePolicy};
pub use tls::{crypto_provider, ticketer, Certificate, TlsTable};

use crate::fasthash::FastMap;
use std::sync::Arc;

use serde::Serialize;

/// The compiled, immutable routing table.
///
/// Its parts sit behind `Arc`s so consecutive tables share what did not change: a table that
/// differs from the one before only in some backends' endpoints ([`Table::with_backends`]) shares
/// every virtual host, route and certificate with it, and a table built after an Ingress changed
/// shares the virtual hosts that came out the same.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    /// Virtual hosts whose rule names an exact host (lower-case, no port).
    pub exact_hosts: Arc<FastMap<Arc<str>, Arc<VirtualHost>>>,
    /// Virtual hosts for `*.suffix` rules, keyed by `suffix`.
    pub wildcard_hosts: Arc<FastMap<Arc<str>, Arc<VirtualHost>>>,
    /// Rules without a host: they serve any Host header no other virtual host claims.
    pub any_host: Option<Arc<VirtualHost>>,
    /// The `defaultBackend` that serves what no rule matches (from the oldest Ingress that has one).
    pub default_backend: Option<Arc<Route>>,
    /// Every backend referenced by a route, indexed by [`BackendId`]. Backends are shared: a table
    /// built from an unchanged Service port reuses the previous table's backend, round-robin
    /// position included.
    pub backends: Backends,
    /// Certificates by server name.
    pub tls: Arc<TlsTable>,
    /// Whether any virtual host has an `app-root` (so lookups that cannot need one skip it).
    pub has_app_roots: bool,
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
    /// Set when a route of this host asked for regular expressions: then every path of the host
    /// is a case-insensitive regular expression anchored at the start, tried longest path first
    /// (as ingress-nginx does), and the maps above only list the routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<RegexPaths>,
    /// Where a request for `/` is redirected (302) before any path is matched (`app-root`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    /// The host every request is redirected to (308), keeping the path and query: the `www.`
    /// twin of a host whose Ingress sets `from-to-www-redirect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
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
    /// The regular expression that matched the path, on hosts in regex mode (its captures feed
    /// `rewrite-target`).
    pub pattern: Option<&'a regex::Regex>,
}

/// What the table says about a request before any backend is involved.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// A route matched.
    Route(Match<'a>),
    /// The host redirects every request to another host (`from-to-www-redirect`), 308.
    RedirectHost(&'a str),
    /// The host's `app-root`: a request for `/` is redirected there (302).
    AppRoot(&'a str),
    /// Nothing matched and there is no default backend.
    NotFound,
}

impl VirtualHost {
    /// A virtual host with no routes.
    pub fn new(name: impl Into<String>) -> Self {
        VirtualHost {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The route for `path`, and the regular expression that matched it on a host in regex mode.
    pub fn match_path(&self, path: &str) -> Option<(&Arc<Route>, Option<&regex::Regex>)> {
        if let Some(regex) = &self.regex {
            return regex.find(path).map(|(re, route)| (route, Some(re)));
        }
        self.match_spec_path(path).map(|route| (route, None))
    }

    /// The route for `path` by Ingress precedence: the longest matching path wins, and at equal
    /// length `Exact` beats `Prefix`. An exact match spans the whole path, so no prefix can beat it.
    fn match_spec_path(&self, path: &str) -> Option<&Arc<Route>> {
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
            Some((route, pattern)) => Some(Match {
                route,
                host: kind,
                pattern,
            }),
            None => self.default_match(),
        }
    }

    /// Everything the table decides for a request by host and path: a host-level redirect, the
    /// host's `app-root` for `/`, or the route (the default backend when nothing else matches).
    pub fn resolve(&self, host: &str, path: &str) -> Lookup<'_> {
        let host = normalize_host(host);
        let Some((vhost, kind)) = self.select_host(&host) else {
            return self.default_match().map_or(Lookup::NotFound, Lookup::Route);
        };
        if let Some(to) = &vhost.redirect_to {
            return Lookup::RedirectHost(to);
        }
        if self.has_app_roots && path == "/" {
            if let Some(root) = &vhost.app_root {
                return Lookup::AppRoot(root);
            }
        }
        match vhost.match_path(path) {
            Some((route, pattern)) => Lookup::Route(Match {
                route,
                host: kind,
                pattern,
            }),
            None => self.default_match().map_or(Lookup::NotFound, Lookup::Route),
        }
    }

    /// The virtual host that claims a normalized host name: exact, then wildcard, then host-less.
    pub fn select_host(&self, host: &str) -> Option<(&VirtualHost, HostMatch)> {
        if let Some(v) = self.exact_hosts.get(host) {
            return Some((&**v, HostMatch::Exact));
        }
        if !self.wildcard_hosts.is_empty() {
            if let Some((label, rest)) = host.split_once('.') {
                if !label.is_empty() {
                    if let Some(v) = self.wildcard_hosts.get(rest) {
                        return Some((&**v, HostMatch::Wildcard));
                    }
                }
            }
        }
        self.any_host.as_deref().map(|v| (v, HostMatch::AnyHost))
    }

    fn default_match(&self) -> Option<Match<'_>> {
        self.default_backend.as_ref().map(|route| Match {
            route,
            host: HostMatch::DefaultBackend,
            pattern: None,
        })
    }

    /// The backend a route points at.
    pub fn backend(&self, id: BackendId) -> &Backend {
        &self.backends[id]
    }

    /// This table with some backends replaced (same names, new endpoints): everything else —
    /// virtual hosts, routes, certificates, the other backends — is shared, not copied, so the
    /// cost is that of the replaced backends alone.
    pub fn with_backends(&self, replaced: &[(BackendId, Arc<Backend>)]) -> Table {
        Table {
            backends: self.backends.replacing(replaced),
            ..self.clone()
        }
    }

    /// All virtual hosts: exact, wildcard, then host-less.
    pub fn virtual_hosts(&self) -> impl Iterator<Item = &VirtualHost> {
        let mut exact: Vec<&VirtualHost> = self.exact_hosts.values().map(|v| &**v).collect();
        exact.sort_by(|a, b| a.name.cmp(&b.name));
        let mut wild: Vec<&VirtualHost> = self.wildcard_hosts.values().map(|v| &**v).collect();
        wild.sort_by(|a, b| a.name.cmp(&b.name));
        exact
            .into_iter()
            .chain(wild)
            .chain(self.any_host.as_deref())
    }

    /// Number of routes (paths over all virtual hosts, plus the default backend).
    pub fn route_count(&self) -> usize {
        let hosts = self
            .exact_hosts
            .values()
            .chain(self.wildcard_hosts.values());
        hosts.map(|v| v.len()).sum::<usize>()
            + self.any_host.as_ref().map_or(0, |v| v.len())
            + usize::from(self.default_backend.is_some())
    }
}
