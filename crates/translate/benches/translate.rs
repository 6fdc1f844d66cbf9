//! Translation cost for 1 000 and 10 000 Ingresses, each with its own Service and EndpointSlice:
//! what every configuration change costs before the new table is published. Parsing the manifest
//! text is measured separately, since `portcullis check` and a cold start pay for both.
//!
//! `cargo bench -p portcullis-translate --bench translate` (add `-- --quick` for a short run).

// `criterion_group!` defines a public function it cannot document.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use model::{parse_manifests, Parsed, Snapshot};
use portcullis_translate::{translate, Options};

const SIZES: [usize; 2] = [1_000, 10_000];

/// Manifest text for `n` Ingresses (host `h<i>.bench.local`, path `/p<i>`), each with a Service and
/// an EndpointSlice of two ready addresses.
fn manifests(n: usize) -> String {
    let mut out = String::with_capacity(n * 1200);
    for i in 0..n {
        let (a, b) = (i / 250 % 250, i % 250);
        write!(
            out,
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ing-{i}
  namespace: bench
  annotations:
    nginx.ingress.kubernetes.io/ssl-redirect: "false"
spec:
  ingressClassName: portcullis
  rules:
    - host: h{i}.bench.local
      http:
        paths:
          - path: /p{i}
            pathType: Prefix
            backend:
              service:
                name: svc-{i}
                port:
                  number: 80
---
apiVersion: v1
kind: Service
metadata:
  name: svc-{i}
  namespace: bench
spec:
  ports:
    - port: 80
      targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i}-1
  namespace: bench
  labels:
    kubernetes.io/service-name: svc-{i}
addressType: IPv4
ports:
  - port: 8080
endpoints:
  - addresses: ["10.{a}.{b}.1"]
    conditions:
      ready: true
  - addresses: ["10.{a}.{b}.2"]
    conditions:
      ready: true
"#
        )
        .expect("writing to a String");
    }
    out
}

fn snapshot(text: &str) -> Snapshot {
    Snapshot::from_objects(parse_manifests(text, "bench.yaml").into_iter().map(|r| {
        match r.expect("generated manifests parse") {
            Parsed::Object(o) | Parsed::Converted { object: o, .. } => o,
            Parsed::Skipped { kind, .. } => panic!("unexpected kind {kind}"),
        }
    }))
}

fn bench_translate(c: &mut Criterion) {
    let options = Options::default();
    let mut group = c.benchmark_group("translate");
    group.sample_size(10);
    for n in SIZES {
        let snap = snapshot(&manifests(n));
        // A benchmark of a translation that rejected everything would measure the wrong thing.
        let t = translate(&snap, &options);
        assert!(!t.has_errors(), "{:?}", t.diagnostics.first());
        assert_eq!(t.table.route_count(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("ingresses", n), &snap, |b, snap| {
            b.iter(|| black_box(translate(black_box(snap), &options)))
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_manifests");
    group.sample_size(10);
    let n = 1_000;
    let text = manifests(n);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_with_input(BenchmarkId::new("ingresses", n), &text, |b, text| {
        b.iter(|| black_box(parse_manifests(black_box(text), "bench.yaml")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_translate, bench_parse
}
criterion_main!(benches);
