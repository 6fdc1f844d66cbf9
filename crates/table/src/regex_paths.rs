//! Hosts in regex mode: every path a case-insensitive regular expression anchored at the start,
//! tried in ingress-nginx's order. Only hosts where some Ingress asked for it get here, so no other
//! request ever evaluates a regular expression.

use std::collections::HashMap;
use std::sync::Arc;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Serialize, Serializer};

use crate::{Route, RouteOrigin};

/// How much memory one compiled path may take; larger patterns are rejected, not slow.
const SIZE_LIMIT: usize = 256 * 1024;
/// Above this many paths a host is matched through one [`RegexSet`] instead of one by one.
const SET_FROM: usize = 16;

/// The paths of one host in regex mode, in the order they are tried.
#[derive(Debug)]
pub struct RegexPaths {
    paths: Vec<(Regex, Arc<Route>)>,
    set: Option<RegexSet>,
}

/// A route that could not be served because its path is not a usable regular expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPath {
    /// The route.
    pub origin: RouteOrigin,
    /// Why.
    pub reason: String,
}

/// Compiled patterns kept from one table to the next, so an unchanged path is compiled once.
#[derive(Debug, Default)]
pub struct RegexCache {
    old: HashMap<String, Regex>,
    new: HashMap<String, Regex>,
}

impl RegexCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&mut self, pattern: &str) -> Result<Regex, String> {
        if let Some(re) = self.new.get(pattern) {
            return Ok(re.clone());
        }
        let re = match self.old.remove(pattern) {
            Some(re) => re,
            None => compile(pattern)?,
        };
        self.new.insert(pattern.to_string(), re.clone());
        Ok(re)
    }

    /// Forgets the patterns the last table did not use.
    pub fn rotate(&mut self) {
        self.old = std::mem::take(&mut self.new);
    }
}

/// The regular expression a path becomes in regex mode.
pub fn pattern_of(path: &str) -> String {
    format!("(?i)^{path}")
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| explain_error(&e))
}

fn explain_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default().trim();
    let last = last.strip_prefix("error: ").unwrap_or(last);
    if text.contains("look-around") || text.contains("backreferences") {
        format!(
            "uses a PCRE-only feature (look-around or a backreference) that Portcullis's regular \
             expressions do not have: {last}"
        )
    } else if matches!(e, regex::Error::CompiledTooBig(_)) {
        format!("is too large a regular expression (limit {SIZE_LIMIT} bytes compiled)")
    } else {
        format!("is not a valid regular expression: {last}")
    }
}

impl RegexPaths {
    /// Compiles the routes of one host, ordered as ingress-nginx orders locations: longer paths
    /// first, then the lexically greater path, then precedence. Routes whose path does not
    /// compile are left out and returned.
    pub fn compile(
        mut routes: Vec<Arc<Route>>,
        cache: &mut RegexCache,
    ) -> (RegexPaths, Vec<BadPath>) {
        routes.sort_by(|a, b| {
            let (pa, pb) = (&a.origin.path, &b.origin.path);
            pb.len()
                .cmp(&pa.len())
                .then_with(|| pb.cmp(pa))
                .then(a.order.cmp(&b.order))
        });
        let mut paths = Vec::with_capacity(routes.len());
        let mut rejected = Vec::new();
        for route in routes {
            match cache.get(&pattern_of(&route.origin.path)) {
                Ok(re) => paths.push((re, route)),
                Err(reason) => rejected.push(BadPath {
                    origin: route.origin.clone(),
                    reason: format!("path {:?} {reason}", route.origin.path),
                }),
            }
        }
        let set = (paths.len() > SET_FROM)
            .then(|| {
                RegexSetBuilder::new(paths.iter().map(|(re, _)| re.as_str()))
                    .size_limit(SIZE_LIMIT * paths.len())
                    .dfa_size_limit(SIZE_LIMIT * paths.len())
                    .build()
                    .ok()
            })
            .flatten();
        (RegexPaths { paths, set }, rejected)
    }

    /// The first path (in order) whose expression matches, with the expression.
    pub fn find(&self, path: &str) -> Option<(&Regex, &Arc<Route>)> {
        let found = match &self.set {
            Some(set) => set.matches(path).iter().next().map(|i| &self.paths[i]),
            None => self.paths.iter().find(|(re, _)| re.is_match(path)),
        };
        found.map(|(re, route)| (re, route))
    }

    /// The paths in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = (&Regex, &Arc<Route>)> {
        self.paths.iter().map(|(re, route)| (re, route))
    }

    /// Whether `route` is among the paths.
    pub fn contains(&self, route: &Arc<Route>) -> bool {
        self.paths.iter().any(|(_, r)| Arc::ptr_eq(r, route))
    }
}

impl Serialize for RegexPaths {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.paths.iter().map(|(re, _)| re.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendId, PathType, RoutePolicy};

    fn route(path: &str, order: usize) -> Arc<Route> {
        Arc::new(Route {
            backend: BackendId(order),
            origin: RouteOrigin {
                ingress: "ns/i".into(),
                rule: Some(0),
                path_index: Some(order),
                host: String::new(),
                path: path.into(),
                path_type: PathType::ImplementationSpecific,
            },
            policy: RoutePolicy::default(),
            order,
        })
    }

    #[test]
    fn longest_path_first_case_insensitive_and_not_segment_bounded() {
        let (paths, rejected) = RegexPaths::compile(
            vec![route("/?(.*)", 1), route("/api/?(.*)", 2)],
            &mut RegexCache::new(),
        );
        assert!(rejected.is_empty());
        let got = |p: &str| paths.find(p).map(|(_, r)| r.origin.path.clone());
        assert_eq!(got("/api/values").as_deref(), Some("/api/?(.*)"));
        assert_eq!(got("/API/values").as_deref(), Some("/api/?(.*)"));
        assert_eq!(got("/apifoo").as_deref(), Some("/api/?(.*)"));
        assert_eq!(got("/other").as_deref(), Some("/?(.*)"));
    }

    #[test]
    fn equal_lengths_order_by_greater_path_then_precedence() {
        let (paths, _) = RegexPaths::compile(
            vec![route("/a", 1), route("/b", 2), route("/b", 3)],
            &mut RegexCache::new(),
        );
        let order: Vec<(String, usize)> = paths
            .iter()
            .map(|(_, r)| (r.origin.path.clone(), r.order))
            .collect();
        assert_eq!(
            order,
            [("/b".into(), 2), ("/b".into(), 3), ("/a".into(), 1)]
        );
    }

    #[test]
    fn pcre_only_and_invalid_patterns_are_rejected_with_a_reason() {
        let (paths, rejected) = RegexPaths::compile(
            vec![
                route("/(?=x)", 1),
                route(r"/(a)\1", 2),
                route("/[", 3),
                route("/ok", 4),
            ],
            &mut RegexCache::new(),
        );
        assert_eq!(paths.iter().count(), 1);
        assert_eq!(rejected.len(), 3);
        assert!(
            rejected[0].reason.contains("PCRE-only"),
            "{:?}",
            rejected[0]
        );
        assert!(
            rejected[1].reason.contains("PCRE-only"),
            "{:?}",
            rejected[1]
        );
        assert!(
            rejected[2].reason.contains("not a valid"),
            "{:?}",
            rejected[2]
        );
    }

    #[test]
    fn huge_patterns_are_rejected_not_slow() {
        let (_, rejected) =
            RegexPaths::compile(vec![route("/(a{1000}){1000}", 1)], &mut RegexCache::new());
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].reason.contains("too large"),
            "{:?}",
            rejected[0]
        );
    }

    #[test]
    fn many_paths_go_through_one_set_with_the_same_answers() {
        let routes: Vec<_> = (0..40).map(|i| route(&format!("/p{i}/?(.*)"), i)).collect();
        let (paths, _) = RegexPaths::compile(routes, &mut RegexCache::new());
        assert!(paths.set.is_some());
        for i in 0..40 {
            // `/p1/?(.*)` also matches `/p10/x`, but `/p10/?(.*)` is longer and tried first.
            let (_, r) = paths.find(&format!("/P{i}/x")).unwrap();
            assert_eq!(r.order, i);
        }
        assert!(paths.find("/q").is_none());
    }

    #[test]
    fn the_cache_keeps_only_what_the_last_table_used() {
        let mut cache = RegexCache::new();
        RegexPaths::compile(vec![route("/a", 1), route("/b", 2)], &mut cache);
        cache.rotate();
        RegexPaths::compile(vec![route("/a", 1)], &mut cache);
        cache.rotate();
        assert_eq!(cache.old.len(), 1);
        assert!(cache.old.contains_key("(?i)^/a"));
    }
}
