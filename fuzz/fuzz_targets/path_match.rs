//! Path and host matching against the Ingress specification: `Prefix` is element-wise on `/`
//! (`/foo` matches `/foo`, `/foo/`, `/foo/x`, never `/foobar`), a trailing `/` on the rule
//! changes nothing, matching is case-sensitive, an `Exact` match implies the `Prefix` match;
//! host patterns match their own names whatever the case, port or trailing dot, and a wildcard
//! covers exactly one label. A table built from arbitrary routes picks what the reference
//! explanation picks, and only routes whose path matches.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use table::{
    normalize_host, path_matches, BackendTarget, HostMatch, HostPattern, PathType, RouteOrigin,
    RoutePolicy, TableBuilder,
};

/// Text over a small alphabet, so paths share segments and hosts share labels often.
#[derive(Arbitrary, Debug)]
enum Text {
    Small(Vec<u8>),
    Any(String),
}

impl Text {
    fn path(&self) -> String {
        self.over(b"/ab.%A")
    }

    fn host(&self) -> String {
        self.over(b"ab.*-:X")
    }

    fn over(&self, alphabet: &[u8]) -> String {
        match self {
            Text::Small(bytes) => bytes
                .iter()
                .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
                .collect(),
            Text::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    rule: Text,
    request: Text,
    tail: Text,
    host: Text,
    label: Text,
    routes: Vec<(Text, Text, u8)>,
    lookups: Vec<(Text, Text)>,
}

fn path_type(n: u8) -> PathType {
    [
        PathType::Exact,
        PathType::Prefix,
        PathType::ImplementationSpecific,
    ][usize::from(n % 3)]
}

fn check_paths(rule: &str, request: &str, tail: &str) {
    let prefix = path_matches(PathType::Prefix, rule, request);
    if path_matches(PathType::Exact, rule, request) {
        assert!(
            prefix,
            "Exact {rule:?} matches {request:?} but Prefix does not"
        );
    }
    assert_eq!(
        prefix,
        path_matches(PathType::ImplementationSpecific, rule, request)
    );
    assert_eq!(
        prefix,
        path_matches(PathType::Prefix, &format!("{rule}/"), request)
    );
    let base = rule.trim_end_matches('/');
    for matching in [
        base.to_string(),
        format!("{base}/"),
        format!("{base}/{tail}"),
    ] {
        assert!(
            path_matches(PathType::Prefix, rule, &matching),
            "{rule:?} misses {matching:?}"
        );
    }
    if !tail.is_empty() && !tail.starts_with('/') {
        let longer = format!("{base}{tail}");
        assert!(
            !path_matches(PathType::Prefix, rule, &longer),
            "{rule:?} matches {longer:?}"
        );
    }
    let upper = base.to_ascii_uppercase();
    if upper != base {
        assert!(
            !path_matches(PathType::Prefix, rule, &upper),
            "{rule:?} matches {upper:?}"
        );
    }
}

fn check_host(host: &str, label: &str) {
    let normalized = normalize_host(host);
    assert!(!normalized.bytes().any(|b| b.is_ascii_uppercase()));
    let Ok(pattern) = HostPattern::parse(host) else {
        return;
    };
    assert_eq!(
        HostPattern::parse(&pattern.display()).as_ref(),
        Ok(&pattern)
    );
    match &pattern {
        HostPattern::Any => assert!(host.is_empty()),
        HostPattern::Exact(name) => {
            for spelling in [
                host.to_string(),
                format!("{}:8080", host.to_ascii_uppercase()),
                format!("{host}."),
            ] {
                assert!(
                    pattern.matches(&normalize_host(&spelling)),
                    "{host:?} misses {spelling:?}"
                );
            }
            assert!(!pattern.matches(&format!("x.{name}")));
        }
        HostPattern::Wildcard(suffix) => {
            let label: String = label.chars().filter(|c| *c != '.' && *c != ':').collect();
            if !label.is_empty() {
                let name = format!("{label}.{suffix}");
                assert!(
                    pattern.matches(&normalize_host(&name)) || label.starts_with('['),
                    "{host:?} misses {name:?}"
                );
                assert!(
                    !pattern.matches(&format!("{label}.{name}")),
                    "{host:?} covers two labels"
                );
            }
            assert!(!pattern.matches(suffix), "{host:?} matches its bare suffix");
        }
    }
}

fn check_table(input: &Input) {
    let mut builder = TableBuilder::new();
    for (i, (host, path, kind)) in input.routes.iter().take(16).enumerate() {
        let Ok(host) = HostPattern::parse(&host.host()) else {
            continue;
        };
        let path = path.path();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let id = builder.backend(format!("svc-{i}"), || BackendTarget::Endpoints {
            ready: vec![],
            not_ready: vec![],
        });
        let origin = RouteOrigin {
            ingress: "default/fuzz".into(),
            rule: Some(0),
            path_index: Some(i),
            host: host.display(),
            path,
            path_type: path_type(*kind),
        };
        let _ = builder.add_route(&host, id, origin, RoutePolicy::default());
    }
    let table = builder.build();
    for (host, path) in input.lookups.iter().take(16) {
        let (host, path) = (host.host(), path.path());
        let found = table.lookup(&host, &path);
        let fast = found.map(|m| m.route.origin.clone());
        assert_eq!(
            fast,
            table.explain(&host, &path).selected,
            "{host:?} {path:?}"
        );
        if let Some(m) = found {
            assert_ne!(m.host, HostMatch::DefaultBackend);
            let origin = &m.route.origin;
            assert!(
                path_matches(origin.path_type, &origin.path, &path),
                "{origin:?} took {path:?}"
            );
            let pattern = HostPattern::parse(&origin.host).unwrap_or(HostPattern::Any);
            assert!(
                pattern.matches(&normalize_host(&host)),
                "{origin:?} took host {host:?}"
            );
        }
    }
}

/// An input written as text (how the seeds from the Kubernetes documentation's path examples
/// are written): after a first line `#!paths`, lines `<pathType> <rule path> <request path>`.
fn from_text(text: &str) -> Input {
    let text_of = |s: &str| Text::Any(s.to_string());
    let mut input = Input {
        rule: text_of(""),
        request: text_of(""),
        tail: text_of("x"),
        host: text_of("*.foo.com"),
        label: text_of("bar"),
        routes: Vec::new(),
        lookups: Vec::new(),
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let [kind, rule, request] = words[..] else {
            continue;
        };
        let kind = match kind {
            "Exact" => 0,
            "Prefix" => 1,
            _ => 2,
        };
        check_paths(rule, request, "x");
        input.routes.push((text_of("foo.com"), text_of(rule), kind));
        input.lookups.push((text_of("foo.com"), text_of(request)));
    }
    input
}

fn run(input: &Input) {
    let (rule, request, tail) = (input.rule.path(), input.request.path(), input.tail.path());
    check_paths(&rule, &request, &tail);
    check_host(&input.host.host(), &input.label.host());
    check_table(input);
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = data.strip_prefix(b"#!paths\n") {
        run(&from_text(&String::from_utf8_lossy(text)));
        return;
    }
    if let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        run(&input);
    }
});
