//! Why a request goes where it goes: every candidate route with the reason it won or lost.
//!
//! This is deliberately a slow, direct reading of the Ingress rules (no hash maps, no shortcuts) so
//! that it doubles as the reference the fast [`crate::Table::lookup`] is tested against.

use std::sync::Arc;

use serde::Serialize;

use crate::{normalize_host, HostMatch, HostPattern, PathType, Route, RouteOrigin, Table};

/// What happened to one candidate route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "detail")]
pub enum Verdict {
    /// This route serves the request.
    Selected,
    /// The host pattern does not match the request host.
    HostMismatch,
    /// The host matched, but a more specific host pattern claimed the request first.
    HostShadowed(String),
    /// The path does not match.
    PathMismatch,
    /// The path matched but another route has precedence; the text says why.
    Lost(String),
}

/// One route considered for a request.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Where the route came from.
    pub origin: RouteOrigin,
    /// The backend's name.
    pub backend: String,
    /// What happened to it.
    pub verdict: Verdict,
}

/// The full account of a lookup.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The host after normalization.
    pub host: String,
    /// The path that was matched.
    pub path: String,
    /// Which virtual host claimed the request, if any.
    pub virtual_host: Option<String>,
    /// How the winner was found, if there is one.
    pub matched_by: Option<HostMatch>,
    /// The winning route.
    pub selected: Option<RouteOrigin>,
    /// Every path route in the table, with its verdict.
    pub candidates: Vec<Candidate>,
}

/// Whether a request path matches a rule path, read straight off the Ingress spec.
pub fn path_matches(path_type: PathType, rule: &str, request: &str) -> bool {
    match path_type {
        PathType::Exact => rule == request,
        PathType::Prefix | PathType::ImplementationSpecific => {
            let rule: Vec<&str> = rule.trim_end_matches('/').split('/').collect();
            let req: Vec<&str> = request.split('/').collect();
            req.len() >= rule.len() && req[..rule.len()] == rule[..]
        }
    }
}

/// Length of the matched part used for "longest match wins" (a prefix's trailing `/` is ignored).
fn match_len(origin: &RouteOrigin) -> usize {
    match origin.path_type {
        PathType::Exact => origin.path.len(),
        _ => origin.path.trim_end_matches('/').len(),
    }
}

fn host_rank(pattern: &HostPattern) -> (u8, HostMatch) {
    match pattern {
        HostPattern::Exact(_) => (0, HostMatch::Exact),
        HostPattern::Wildcard(_) => (1, HostMatch::Wildcard),
        HostPattern::Any => (2, HostMatch::AnyHost),
    }
}

/// One route as the explanation sees it: its host pattern, and in regex mode its expression and
/// position in the order expressions are tried.
struct Seen<'t> {
    pattern: HostPattern,
    route: &'t Arc<Route>,
    regex: Option<(usize, &'t regex::Regex)>,
}

impl Seen<'_> {
    fn path_matches(&self, path: &str) -> bool {
        match self.regex {
            Some((_, re)) => re.is_match(path),
            None => path_matches(self.route.origin.path_type, &self.route.origin.path, path),
        }
    }
}

impl Table {
    /// Every route with its verdict for `host` and `path`; agrees with [`Table::lookup`].
    pub fn explain(&self, host: &str, path: &str) -> Explanation {
        let host = normalize_host(host).into_owned();
        let mut routes: Vec<Seen<'_>> = Vec::new();
        for vhost in self.virtual_hosts() {
            let pattern = HostPattern::parse(&vhost.name).unwrap_or(HostPattern::Any);
            for route in vhost.exact.values().chain(vhost.prefix.values()) {
                let regex = vhost.regex.as_ref().and_then(|paths| {
                    paths
                        .iter()
                        .enumerate()
                        .find(|(_, (_, r))| Arc::ptr_eq(r, route))
                        .map(|(i, (re, _))| (i, re))
                });
                routes.push(Seen {
                    pattern: pattern.clone(),
                    route,
                    regex,
                });
            }
        }
        routes.sort_by_key(|s| s.route.order);

        // The most specific host pattern that matches claims the request.
        let claimed = routes
            .iter()
            .filter(|s| s.pattern.matches(&host))
            .map(|s| (host_rank(&s.pattern), s.pattern.clone()))
            .min_by_key(|((rank, _), _)| *rank);

        let mut winner: Option<&Seen<'_>> = None;
        if let Some((_, pattern)) = &claimed {
            for seen in &routes {
                if seen.pattern != *pattern || !seen.path_matches(path) {
                    continue;
                }
                let better = match winner {
                    None => true,
                    Some(w) => match (seen.regex, w.regex) {
                        (Some((a, _)), Some((b, _))) => a < b,
                        _ => {
                            let (a, b) =
                                (match_len(&seen.route.origin), match_len(&w.route.origin));
                            a > b
                                || (a == b
                                    && seen.route.origin.path_type == PathType::Exact
                                    && w.route.origin.path_type != PathType::Exact)
                        }
                    },
                };
                if better {
                    winner = Some(seen);
                }
            }
        }

        let candidates = routes
            .iter()
            .map(|seen| {
                let route = seen.route;
                let verdict = if !seen.pattern.matches(&host) {
                    Verdict::HostMismatch
                } else if claimed.as_ref().is_some_and(|(_, c)| *c != seen.pattern) {
                    let by = claimed
                        .as_ref()
                        .map(|(_, c)| c.display())
                        .unwrap_or_default();
                    Verdict::HostShadowed(format!("host {by:?} is more specific"))
                } else if !seen.path_matches(path) {
                    Verdict::PathMismatch
                } else if winner.is_some_and(|w| Arc::ptr_eq(w.route, route)) {
                    Verdict::Selected
                } else {
                    Verdict::Lost(lost_to(winner, &route.origin))
                };
                Candidate {
                    origin: route.origin.clone(),
                    backend: self.backend(route.backend).name.clone(),
                    verdict,
                }
            })
            .collect();

        let (selected, matched_by) = match winner {
            Some(w) => (
                Some(w.route.origin.clone()),
                claimed.as_ref().map(|((_, k), _)| *k),
            ),
            None => match &self.default_backend {
                Some(d) => (Some(d.origin.clone()), Some(HostMatch::DefaultBackend)),
                None => (None, None),
            },
        };
        Explanation {
            host,
            path: path.to_string(),
            virtual_host: claimed.map(|(_, p)| p.display()),
            matched_by,
            selected,
            candidates,
        }
    }
}

/// Why a matching route (`loser`) lost to `winner`.
fn lost_to(winner: Option<&Seen<'_>>, loser: &RouteOrigin) -> String {
    let Some(w) = winner else {
        return "no winner".into();
    };
    let o = &w.route.origin;
    match w.regex {
        Some((_, re)) => format!(
            "the regular expression {:?} of {} {:?} from {} is tried first (longer paths first, as ingress-nginx orders them)",
            re.as_str(),
            o.path_type.as_str(),
            o.path,
            o.ingress
        ),
        None if match_len(o) > match_len(loser) => format!(
            "{} {:?} from {} is a longer match",
            o.path_type.as_str(),
            o.path,
            o.ingress
        ),
        None => format!(
            "{} {:?} from {} wins at equal length (Exact over Prefix, then older Ingress)",
            o.path_type.as_str(),
            o.path,
            o.ingress
        ),
    }
}
