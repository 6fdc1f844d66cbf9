//! Matching tests: the Kubernetes docs' path-type table, and property tests that the fast lookup
//! agrees with the slow reference reading of the spec.

use portcullis_table::{
    path_matches, BackendTarget, HostPattern, PathType, RouteOrigin, RoutePolicy, Table,
    TableBuilder,
};
use proptest::prelude::*;

/// The Kubernetes docs' path table, from the repository's conformance case tables (see the README
/// beside it).
const PATH_EXAMPLES: &str =
    include_str!("../../portcullis/tests/data/conformance/path_examples.json");

fn build(routes: &[(&str, &str, PathType)]) -> Table {
    let mut b = TableBuilder::new();
    for (i, (host, path, path_type)) in routes.iter().enumerate() {
        let id = b.backend(format!("svc-{i}"), || BackendTarget::Endpoints {
            ready: vec![],
            not_ready: vec![],
        });
        let host = HostPattern::parse(host).expect("valid host");
        let origin = RouteOrigin {
            ingress: "default/test".into(),
            rule: Some(0),
            path_index: Some(i),
            host: host.display(),
            path: path.to_string(),
            path_type: *path_type,
        };
        let _ = b.add_route(&host, id, origin, RoutePolicy::default());
    }
    b.build()
}

fn parse_type(s: &str) -> PathType {
    PathType::parse(s).expect("path type in table")
}

/// The pathType "Examples" table of the Kubernetes Ingress documentation, row by row.
#[test]
fn kubernetes_docs_path_examples() {
    let doc: serde_json::Value = serde_json::from_str(PATH_EXAMPLES).expect("json");
    let cases = doc["path_example_cases_expanded"]
        .as_array()
        .expect("cases");
    assert_eq!(cases.len(), 20);
    for case in cases {
        let paths: Vec<(String, PathType)> = case["paths"]
            .as_array()
            .expect("paths")
            .iter()
            .map(|p| {
                (
                    p["path"].as_str().expect("path").to_string(),
                    parse_type(p["pathType"].as_str().expect("type")),
                )
            })
            .collect();
        let routes: Vec<(&str, &str, PathType)> =
            paths.iter().map(|(p, t)| ("", p.as_str(), *t)).collect();
        let table = build(&routes);
        let requests: Vec<String> = match case["request_path"].as_str() {
            Some("(all paths)") => ["/", "/foo", "/a/b/c", "/x/"].map(String::from).to_vec(),
            Some(p) => vec![p.to_string()],
            None => panic!("row without request path: {case}"),
        };
        for request in requests {
            let found = table.lookup("example.com", &request);
            let row = &case["row"];
            if case["matches"].as_bool() == Some(true) {
                let want = &case["matching_path_derived"];
                let found = found.unwrap_or_else(|| panic!("row {row}: {request} matched nothing"));
                assert_eq!(
                    found.route.origin.path,
                    want["path"].as_str().unwrap(),
                    "row {row}"
                );
                assert_eq!(
                    found.route.origin.path_type,
                    parse_type(want["pathType"].as_str().unwrap()),
                    "row {row}"
                );
            } else {
                assert!(found.is_none(), "row {row}: {request} should not match");
            }
        }
    }
    for case in doc["host_wildcard_examples"].as_array().expect("hosts") {
        let pattern = HostPattern::parse(case["rule_host"].as_str().unwrap()).unwrap();
        let host = case["request_host_header"].as_str().unwrap();
        assert_eq!(
            pattern.matches(host),
            case["matches"].as_bool().unwrap(),
            "{case}"
        );
        let table = build(&[(case["rule_host"].as_str().unwrap(), "/", PathType::Prefix)]);
        assert_eq!(
            table.lookup(host, "/").is_some(),
            case["matches"].as_bool().unwrap()
        );
    }
}

#[test]
fn exact_beats_prefix_with_trailing_slash() {
    let t = build(&[
        ("", "/match/", PathType::Prefix),
        ("", "/match", PathType::Exact),
    ]);
    assert_eq!(
        t.lookup("h", "/match").unwrap().route.origin.path_type,
        PathType::Exact
    );
    assert_eq!(
        t.lookup("h", "/match/x").unwrap().route.origin.path,
        "/match/"
    );
}

#[test]
fn double_slash_is_a_segment() {
    let t = build(&[("", "/bar/", PathType::Prefix)]);
    assert!(t.lookup("h", "/bar//bershop").is_some());
    assert!(t.lookup("h", "/barber").is_none());
}

#[test]
fn host_precedence_exact_wildcard_any() {
    let t = build(&[
        ("foo.bar.com", "/", PathType::Prefix),
        ("*.bar.com", "/", PathType::Prefix),
        ("", "/", PathType::Prefix),
    ]);
    let backend = |host: &str| {
        t.backend(t.lookup(host, "/").unwrap().route.backend)
            .name
            .clone()
    };
    assert_eq!(backend("FOO.bar.com:8080"), "svc-0");
    assert_eq!(backend("baz.bar.com"), "svc-1");
    assert_eq!(backend("bar.com"), "svc-2");
    assert_eq!(backend("a.b.bar.com"), "svc-2");
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ab]{1,2}",
        Just("A".to_string()),
        Just("ab%2F".to_string())
    ]
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(segs, trailing)| {
        let mut p = format!("/{}", segs.join("/"));
        if trailing && !p.ends_with('/') {
            p.push('/');
        }
        p
    })
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a.example".to_string()),
        Just("b.example".to_string()),
        Just("*.example".to_string()),
        Just("*.a.example".to_string()),
    ]
}

fn path_type() -> impl Strategy<Value = PathType> {
    prop_oneof![
        Just(PathType::Exact),
        Just(PathType::Prefix),
        Just(PathType::ImplementationSpecific)
    ]
}

proptest! {
    /// A Prefix rule only matches paths whose segments start with the rule's segments.
    #[test]
    fn prefix_is_segment_wise(rule in path(), request in path()) {
        let t = build(&[("", &rule, PathType::Prefix)]);
        let matched = t.lookup("h", &request).is_some();
        let rule_segs: Vec<&str> = rule.trim_end_matches('/').split('/').collect();
        let req_segs: Vec<&str> = request.split('/').collect();
        let starts = req_segs.len() >= rule_segs.len() && req_segs[..rule_segs.len()] == rule_segs[..];
        prop_assert_eq!(matched, starts, "rule {} request {}", rule, request);
        prop_assert_eq!(matched, path_matches(PathType::Prefix, &rule, &request));
    }

    /// The hash-based lookup picks the same route as the reference explanation, for random tables.
    #[test]
    fn lookup_agrees_with_reference(
        routes in prop::collection::vec((host(), path(), path_type()), 1..12),
        request_host in prop_oneof![
            Just("a.example"), Just("b.example"), Just("c.example"), Just("x.a.example"),
            Just("x.y.a.example"), Just("example"), Just("A.EXAMPLE:80")
        ],
        request in path(),
    ) {
        let refs: Vec<(&str, &str, PathType)> =
            routes.iter().map(|(h, p, t)| (h.as_str(), p.as_str(), *t)).collect();
        let t = build(&refs);
        let fast = t.lookup(request_host, &request).map(|m| m.route.origin.clone());
        let slow = t.explain(request_host, &request).selected;
        prop_assert_eq!(fast, slow);
    }
}
