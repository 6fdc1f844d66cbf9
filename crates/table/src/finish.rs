//! Finishing a [`TableBuilder`]: `www.` twins and aliases added, `app-root`s set, hosts in regex
//! mode compiled — and whatever comes out as the previous table had it taken from there.

use std::collections::HashMap;
use std::sync::Arc;

use crate::builder::Building;
use crate::fasthash::FastMap;
use crate::regex_paths::{RegexCache, RegexPaths};
use crate::{
    Backend, Backends, Certificate, HostPattern, Rejected, Route, Table, TableBuilder, TlsTable,
    VirtualHost,
};

impl TableBuilder {
    /// The finished table: aliases and `www.` twins added, `app-root`s set, and hosts in regex
    /// mode compiled (patterns reused from `cache`). Returns what had to be left out.
    pub fn finish(mut self, cache: &mut RegexCache) -> (Table, Vec<Rejected>) {
        let mut rejected = Vec::new();
        // A host given only some of the previous table's routes is a host of its own.
        let hosts = self
            .exact_hosts
            .values_mut()
            .chain(self.wildcard_hosts.values_mut())
            .chain(self.any_host.as_mut());
        for building in hosts.filter(|b| !b.is_whole()) {
            building.own();
        }
        self.add_www_twins();
        self.add_aliases(&mut rejected);
        let previous = std::mem::take(&mut self.previous);
        let mut has_app_roots = false;
        let mut finish = |building: Building, old: &dyn Fn() -> Option<Arc<VirtualHost>>| {
            let vhost = match building {
                Building::Same { prev, .. } => prev,
                Building::Own(vhost) => finish_vhost(*vhost, old().as_ref(), cache, &mut rejected),
            };
            has_app_roots |= vhost.app_root.is_some();
            vhost
        };
        let mut exact_hosts = FastMap::default();
        exact_hosts.reserve(self.exact_hosts.len());
        for (name, building) in std::mem::take(&mut self.exact_hosts) {
            let vhost = finish(building, &|| previous.exact_hosts.get(&*name).cloned());
            exact_hosts.insert(name, vhost);
        }
        let mut wildcard_hosts = FastMap::default();
        for (name, building) in std::mem::take(&mut self.wildcard_hosts) {
            let vhost = finish(building, &|| previous.wildcard_hosts.get(&*name).cloned());
            wildcard_hosts.insert(name, vhost);
        }
        let any_host = self
            .any_host
            .take()
            .map(|building| finish(building, &|| previous.any_host.clone()));
        let tls = if same_tls(&self.tls, &previous.tls) {
            previous.tls.clone()
        } else {
            Arc::new(std::mem::take(&mut self.tls))
        };
        let backends = std::mem::take(&mut self.backends);
        let table = Table {
            exact_hosts: Arc::new(exact_hosts),
            wildcard_hosts: Arc::new(wildcard_hosts),
            any_host,
            default_backend: self.default_backend.take(),
            backends: Backends::sharing(backends, &previous.backends),
            tls,
            has_app_roots,
        };
        (table, rejected)
    }

    /// The name the table gives an exact host: the previous table's when it had one.
    fn host_key(&self, name: &str) -> Arc<str> {
        match self.previous.exact_hosts.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => Arc::from(name),
        }
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
                HostPattern::Exact(h) => self.exact_hosts.get(h.as_str()),
                HostPattern::Wildcard(s) => self.wildcard_hosts.get(s.as_str()),
                HostPattern::Any => self.any_host.as_ref(),
            };
            let Some(source) = source else { continue };
            if self.exact_hosts.contains_key(alias.name.as_str()) {
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
            let (source_name, exact, prefix) = source.parts();
            let copy = VirtualHost {
                name: alias.name.clone(),
                exact: exact.clone(),
                prefix: prefix.clone(),
                ..VirtualHost::default()
            };
            if let Some(cert) = self.tls.for_server_name(source_name).cloned() {
                self.tls.exact.entry(alias.name.clone()).or_insert(cert);
            }
            let key = self.host_key(&alias.name);
            self.exact_hosts.insert(key, Building::Own(Box::new(copy)));
        }
    }

    /// For every exact host with a route asking for `from-to-www-redirect`, a twin host (with or
    /// without `www.`) that redirects to it, unless the twin has routes of its own.
    fn add_www_twins(&mut self) {
        let mut twins = Vec::new();
        for (name, building) in &self.exact_hosts {
            let (_, exact, prefix) = building.parts();
            let wants = exact
                .values()
                .chain(prefix.values())
                .any(|r| r.policy.rules.as_ref().is_some_and(|p| p.from_to_www));
            if !wants {
                continue;
            }
            let twin = match name.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => format!("www.{name}"),
            };
            if !self.exact_hosts.contains_key(twin.as_str()) {
                twins.push((twin, name.to_string()));
            }
        }
        for (twin, to) in twins {
            if let Some(cert) = self.tls.exact.get(&to).cloned() {
                self.tls.exact.entry(twin.clone()).or_insert(cert);
            }
            let key = self.host_key(&twin);
            let vhost = VirtualHost {
                name: twin,
                redirect_to: Some(to),
                ..VirtualHost::default()
            };
            self.exact_hosts.insert(key, Building::Own(Box::new(vhost)));
        }
    }
}

impl Backends {
    /// The backends of `list`, sharing every chunk that holds the same backends as `previous`'s.
    pub(crate) fn sharing(list: Vec<Arc<Backend>>, previous: &Backends) -> Backends {
        let fresh = Backends::from_vec(list);
        fresh.share_chunks(previous)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendTarget, PathType, RouteOrigin, RoutePolicy};

    fn origin(ingress: &str, path: &str) -> RouteOrigin {
        RouteOrigin {
            ingress: ingress.into(),
            rule: Some(0),
            path_index: Some(0),
            host: "x.example".into(),
            path: path.into(),
            path_type: PathType::Prefix,
        }
    }

    /// Adds `paths` (Ingress name, path) to host `x.example` in order, each reusing its slot in
    /// `last`; returns the table and what each add said.
    fn build(
        previous: &Table,
        paths: &[(&str, &str)],
        last: &mut Vec<Option<Arc<Route>>>,
    ) -> (Table, Vec<Result<(), String>>) {
        let mut b = TableBuilder::new().reusing(previous);
        let id = b.backend("ns/web:80", || BackendTarget::Unavailable {
            reason: "-".into(),
        });
        let host = HostPattern::Exact("x.example".into());
        last.resize(paths.len(), None);
        let said = paths
            .iter()
            .zip(last.iter_mut())
            .map(|((ingress, path), slot)| {
                b.add_route_reusing(
                    &host,
                    id,
                    &origin(ingress, path),
                    RoutePolicy::default(),
                    slot,
                )
                .map_err(|c| c.winner.ingress)
            })
            .collect();
        (b.build(), said)
    }

    fn paths(t: &Table) -> Vec<String> {
        let mut out: Vec<String> = t.exact_hosts["x.example"]
            .prefix
            .values()
            .map(|r| format!("{} {}", r.origin.ingress, r.origin.path))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_host_given_the_same_routes_is_the_previous_one_and_otherwise_its_own() {
        let mut last = Vec::new();
        let (first, _) = build(&Table::default(), &[("a", "/a"), ("b", "/b")], &mut last);
        let (same, said) = build(&first, &[("a", "/a"), ("b", "/b")], &mut last);
        assert!(said.iter().all(Result::is_ok));
        assert!(Arc::ptr_eq(
            &first.exact_hosts["x.example"],
            &same.exact_hosts["x.example"]
        ));
        // The host's name is shared too.
        let name = |t: &Table| t.exact_hosts.keys().next().cloned().expect("a host");
        assert!(Arc::ptr_eq(&name(&first), &name(&same)));

        // One of the two routes goes: the host has the other alone.
        let mut fewer = vec![last[0].clone()];
        let (one, _) = build(&same, &[("a", "/a")], &mut fewer);
        assert_eq!(paths(&one), ["a /a"]);
        assert!(Arc::ptr_eq(
            &first.exact_hosts["x.example"].prefix["/a"],
            &one.exact_hosts["x.example"].prefix["/a"]
        ));

        // A route of the previous host comes twice: the second loses to the first.
        let mut twice = vec![last[0].clone(), last[0].clone()];
        let (t, said) = build(&first, &[("a", "/a"), ("a", "/a")], &mut twice);
        assert_eq!(said[1], Err("a".to_string()));
        assert_eq!(paths(&t), ["a /a"]);

        // A new route under a path the previous host serves, after that path's own route.
        let mut later = vec![last[0].clone(), last[1].clone(), None];
        let (t, said) = build(&first, &[("a", "/a"), ("b", "/b"), ("c", "/a")], &mut later);
        assert_eq!(said[2], Err("a".to_string()));
        assert_eq!(paths(&t), ["a /a", "b /b"]);
        assert!(Arc::ptr_eq(
            &first.exact_hosts["x.example"],
            &t.exact_hosts["x.example"]
        ));

        // …and before it: the new route wins the path.
        let mut earlier = vec![None, last[0].clone(), last[1].clone()];
        let (t, said) = build(
            &first,
            &[("c", "/a"), ("a", "/a"), ("b", "/b")],
            &mut earlier,
        );
        assert_eq!(said[1], Err("c".to_string()));
        assert_eq!(paths(&t), ["b /b", "c /a"]);
    }
}
