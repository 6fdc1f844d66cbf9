//! Route lookup cost with 1 route and with 10 000 routes of the same kind, for each way a request
//! can be matched: exact host, wildcard host, host-less rules, `Exact` and `Prefix` paths, and a
//! miss that falls through to the default backend. The requested route is always the last one
//! added, so nothing benefits from insertion order.
//!
//! `cargo bench -p portcullis-table --bench lookup` (add `-- --quick` for a short run).

// `criterion_group!` defines a public function it cannot document.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis_table::{
    BackendTarget, HostMatch, HostPattern, PathType, RouteOrigin, RoutePolicy, Table, TableBuilder,
};

const SIZES: [usize; 2] = [1, 10_000];

/// How the `n` routes of a table are written, and the request that hits the last of them.
#[derive(Clone, Copy)]
enum Scenario {
    /// `h<i>.bench.local` with `Exact /e<i>`.
    ExactHostExactPath,
    /// `h<i>.bench.local` with `Prefix /p<i>/api`, requested 5 segments deep.
    ExactHostPrefixDeep,
    /// As above, but the Host header arrives in mixed case with a port (normalization cost).
    ExactHostMixedCasePort,
    /// `*.w<i>.bench.local` with `Prefix /`, requested 5 segments deep.
    WildcardHost,
    /// Host-less `Prefix /p<i>`, requested 5 segments deep under an unknown host.
    HostlessPrefixDeep,
    /// Host-less `Exact /e<i>`.
    HostlessExactPath,
    /// `h<i>.bench.local` routes plus a default backend; the request names an unknown host.
    MissToDefaultBackend,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::ExactHostExactPath,
        Scenario::ExactHostPrefixDeep,
        Scenario::ExactHostMixedCasePort,
        Scenario::WildcardHost,
        Scenario::HostlessPrefixDeep,
        Scenario::HostlessExactPath,
        Scenario::MissToDefaultBackend,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::ExactHostExactPath => "exact_host/exact_path",
            Scenario::ExactHostPrefixDeep => "exact_host/prefix_5_segments",
            Scenario::ExactHostMixedCasePort => "exact_host/mixed_case_with_port",
            Scenario::WildcardHost => "wildcard_host/prefix_5_segments",
            Scenario::HostlessPrefixDeep => "hostless/prefix_5_segments",
            Scenario::HostlessExactPath => "hostless/exact_path",
            Scenario::MissToDefaultBackend => "miss/default_backend",
        }
    }

    /// The host pattern and path of route `i`.
    fn route(self, i: usize) -> (String, String, PathType) {
        match self {
            Scenario::ExactHostExactPath => (
                format!("h{i}.bench.local"),
                format!("/e{i}"),
                PathType::Exact,
            ),
            Scenario::ExactHostPrefixDeep
            | Scenario::ExactHostMixedCasePort
            | Scenario::MissToDefaultBackend => (
                format!("h{i}.bench.local"),
                format!("/p{i}/api"),
                PathType::Prefix,
            ),
            Scenario::WildcardHost => (
                format!("*.w{i}.bench.local"),
                "/".to_string(),
                PathType::Prefix,
            ),
            Scenario::HostlessPrefixDeep => (String::new(), format!("/p{i}"), PathType::Prefix),
            Scenario::HostlessExactPath => (String::new(), format!("/e{i}"), PathType::Exact),
        }
    }

    /// The request (Host header, path) and what must serve it.
    fn request(self, n: usize) -> (String, String, HostMatch) {
        let last = n - 1;
        match self {
            Scenario::ExactHostExactPath => (
                format!("h{last}.bench.local"),
                format!("/e{last}"),
                HostMatch::Exact,
            ),
            Scenario::ExactHostPrefixDeep => (
                format!("h{last}.bench.local"),
                format!("/p{last}/api/v1/users/42"),
                HostMatch::Exact,
            ),
            Scenario::ExactHostMixedCasePort => (
                format!("H{last}.Bench.Local:8080"),
                format!("/p{last}/api/v1/users/42"),
                HostMatch::Exact,
            ),
            Scenario::WildcardHost => (
                format!("app.w{last}.bench.local"),
                "/a/b/c/d/e".to_string(),
                HostMatch::Wildcard,
            ),
            Scenario::HostlessPrefixDeep => (
                "unknown.example.org".to_string(),
                format!("/p{last}/a/b/c/d"),
                HostMatch::AnyHost,
            ),
            Scenario::HostlessExactPath => (
                "unknown.example.org".to_string(),
                format!("/e{last}"),
                HostMatch::AnyHost,
            ),
            Scenario::MissToDefaultBackend => (
                "unknown.example.org".to_string(),
                "/x/y/z".to_string(),
                HostMatch::DefaultBackend,
            ),
        }
    }

    fn table(self, n: usize) -> Table {
        let mut b = TableBuilder::new();
        for i in 0..n {
            let (host, path, path_type) = self.route(i);
            let backend = b.backend(format!("bench/svc-{i}:80"), || endpoints(i));
            let pattern = HostPattern::parse(&host).expect("generated hosts are valid");
            let origin = RouteOrigin {
                ingress: format!("bench/ing-{i}"),
                rule: Some(0),
                path_index: Some(0),
                host: pattern.display(),
                path,
                path_type,
            };
            b.add_route(&pattern, backend, origin, RoutePolicy::default())
                .expect("generated routes do not collide");
        }
        if let Scenario::MissToDefaultBackend = self {
            let backend = b.backend("bench/default:80", || endpoints(n));
            let origin = RouteOrigin {
                ingress: "bench/default".to_string(),
                rule: None,
                path_index: None,
                host: String::new(),
                path: String::new(),
                path_type: PathType::Prefix,
            };
            b.set_default_backend(backend, origin)
                .expect("only one default backend");
        }
        b.build()
    }
}

fn endpoints(i: usize) -> BackendTarget {
    let ip = std::net::Ipv4Addr::new(10, 1, (i / 256 % 256) as u8, (i % 256) as u8);
    BackendTarget::Endpoints {
        ready: vec![std::net::SocketAddr::from((ip, 8080))],
        not_ready: vec![],
    }
}

fn lookup(c: &mut Criterion) {
    for scenario in Scenario::ALL {
        let mut group = c.benchmark_group(format!("lookup/{}", scenario.name()));
        for n in SIZES {
            let table = scenario.table(n);
            let (host, path, expected) = scenario.request(n);
            // The benchmark would be meaningless if the request missed its route.
            let found = table.lookup(&host, &path).expect("request matches");
            assert_eq!(found.host, expected, "{}: {host}{path}", scenario.name());
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
                bench.iter(|| {
                    let m = table.lookup(black_box(&host), black_box(&path));
                    black_box(m.map(|m| m.route.backend))
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookup
}
criterion_main!(benches);
