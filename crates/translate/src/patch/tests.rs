//! Local changes against full translations: after each edit of a generated configuration, the
//! patched translation is what a fresh one gives, and most edits do patch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use model::{parse_manifests, Kind, ObjectKey, Parsed, Snapshot};
use proptest::prelude::*;

use crate::{backend, translate, Options, Translation, Translator};

/// Ingresses `0..PLAIN` have a Service each and nothing special; the others share Services, list
/// TLS hosts, ask for a default backend or claim a path another Ingress has.
const PLAIN: usize = 24;
const OTHERS: usize = 12;
const HOSTS: usize = 8;

/// How plain Ingress `i` is written: host, path, and which of its Services it uses.
#[derive(Clone, Debug)]
struct Shape {
    host: usize,
    path: usize,
    service: usize,
}

fn ingress(name: &str, host: &str, path: &str, service: &str, extra: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: app\n  annotations: {{{extra}}}\nspec:\n  ingressClassName: portcullis\n  rules:\n    - host: {host}\n      http:\n        paths:\n          - path: {path}\n            pathType: Prefix\n            backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
    )
}

fn service(name: &str, address: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: app}}\nspec: {{ports: [{{port: 80, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-a, namespace: app, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{{addresses: [\"10.2.0.{address}\"]}}]\n"
    )
}

fn insert(snapshot: &mut Snapshot, text: &str) {
    for doc in parse_manifests(text, "test") {
        match doc {
            Ok(Parsed::Object(o)) => {
                snapshot.insert(o);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The Service plain Ingress `i` uses in `shape`: one of its own, one the others share, or its
/// neighbour's first.
fn service_of(i: usize, shape: &Shape) -> String {
    match shape.service {
        4 => "shared-0".to_string(),
        5 => format!("svc-{}-0", (i + 1) % PLAIN),
        s => format!("svc-{i}-{s}"),
    }
}

fn plain(i: usize, shape: &Shape) -> String {
    ingress(
        &format!("plain-{i}"),
        &format!("h{}.example.com", shape.host),
        &format!("/p{}", shape.path),
        &service_of(i, shape),
        "",
    )
}

/// The configuration with every plain Ingress in its first shape.
fn start() -> (Snapshot, Vec<Shape>) {
    let mut snapshot = Snapshot::default();
    let mut text = String::new();
    let shapes: Vec<Shape> = (0..PLAIN)
        .map(|i| Shape {
            host: i % HOSTS,
            path: i,
            service: 0,
        })
        .collect();
    for (i, shape) in shapes.iter().enumerate() {
        let _ = write!(
            text,
            "---\n{}---\n{}",
            plain(i, shape),
            service(&format!("svc-{i}-0"), 1)
        );
    }
    for j in 0..OTHERS {
        let host = format!("h{}.example.com", j % HOSTS);
        let extra = match j % 4 {
            0 => "nginx.ingress.kubernetes.io/default-backend: shared-1",
            1 => "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
            _ => "",
        };
        // Some claim a path a plain Ingress has: they lose it to the older one.
        let path = if j % 3 == 0 {
            format!("/p{j}")
        } else {
            format!("/o{j}")
        };
        let _ = write!(
            text,
            "---\n{}",
            ingress(
                &format!("other-{j}"),
                &host,
                &path,
                &format!("shared-{}", j % 3),
                extra
            )
        );
    }
    for s in 0..3 {
        let _ = write!(text, "---\n{}", service(&format!("shared-{s}"), 2));
    }
    insert(&mut snapshot, &text);
    (snapshot, shapes)
}

/// The objects that differ between two snapshots, as a source reports them.
fn differences(before: &Snapshot, after: &Snapshot) -> Vec<(Kind, ObjectKey)> {
    fn diff<T>(
        kind: Kind,
        a: &BTreeMap<ObjectKey, Arc<T>>,
        b: &BTreeMap<ObjectKey, Arc<T>>,
        out: &mut Vec<(Kind, ObjectKey)>,
    ) {
        let keys: std::collections::BTreeSet<&ObjectKey> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let same = match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            };
            if !same {
                out.push((kind, key.clone()));
            }
        }
    }
    let mut out = Vec::new();
    diff(Kind::Ingress, &before.ingresses, &after.ingresses, &mut out);
    diff(Kind::Service, &before.services, &after.services, &mut out);
    diff(
        Kind::EndpointSlice,
        &before.endpoint_slices,
        &after.endpoint_slices,
        &mut out,
    );
    out
}

fn observe(t: &Translation) -> (serde_json::Value, Vec<String>, Vec<ObjectKey>) {
    let table = serde_json::to_value(&t.table).expect("table serializes");
    let diagnostics = t.diagnostics.iter().map(|d| format!("{d:?}")).collect();
    (table, diagnostics, t.ingresses.to_vec())
}

/// Translates the change, locally when it can; says whether it did.
fn step(
    translator: &mut Translator,
    snapshot: &Snapshot,
    options: &Options,
    changed: &[(Kind, ObjectKey)],
) -> (Translation, bool) {
    let services = translator.index.apply(snapshot, changed);
    let local = match &services {
        backend::Changed::Services(keys) if translator.can_keep_all_but_backends(options) => {
            translator.ingresses_changed(snapshot, options, changed, keys)
        }
        _ => None,
    };
    match local {
        Some(t) => (t, true),
        None => (translator.translate_all(snapshot, options, services), false),
    }
}

/// An edit of plain Ingress `which`: a new host, path or Service (one never used before, or
/// one of its own used before), or its Service's endpoints.
#[derive(Clone, Debug)]
enum Edit {
    Host(usize),
    Path(usize),
    Service(usize),
    Endpoints(u8),
}

fn edit() -> impl Strategy<Value = (usize, Edit)> {
    (
        0..PLAIN,
        prop_oneof![
            (0..HOSTS + 3).prop_map(Edit::Host),
            (0..PLAIN + 6).prop_map(Edit::Path),
            (0..6usize).prop_map(Edit::Service),
            (3..9u8).prop_map(Edit::Endpoints),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn local_changes_match_a_fresh_translation(edits in proptest::collection::vec(edit(), 1..30)) {
        let options = Options::default();
        let (mut snapshot, mut shapes) = start();
        let mut translator = Translator::new();
        let first = translator.translate(&snapshot, &options);
        prop_assert_eq!(observe(&first), observe(&translate(&snapshot, &options)));
        let mut locals = 0;
        for (n, (i, e)) in edits.iter().enumerate() {
            let before = snapshot.clone();
            let mut shape = shapes[*i].clone();
            match e {
                Edit::Host(h) => shape.host = *h,
                Edit::Path(p) => shape.path = *p,
                Edit::Service(s) => shape.service = *s,
                Edit::Endpoints(a) => {
                    insert(&mut snapshot, &service(&service_of(*i, &shape), *a));
                }
            }
            if !matches!(e, Edit::Endpoints(_)) && shape.service < 4 {
                insert(&mut snapshot, &service(&service_of(*i, &shape), 1));
            }
            insert(&mut snapshot, &plain(*i, &shape));
            shapes[*i] = shape;
            let changed = differences(&before, &snapshot);
            let (kept, local) = step(&mut translator, &snapshot, &options, &changed);
            prop_assert_eq!(
                observe(&kept),
                observe(&translate(&snapshot, &options)),
                "edit {} ({:?} of plain-{}), local: {}", n, e, i, local
            );
            locals += usize::from(local);
        }
        // Edits of Ingresses whose paths others claim too, or that move a route onto a path
        // another has, are translated in full; most are not.
        if edits.len() >= 10 {
            prop_assert!(locals * 3 >= edits.len(), "only {} of {} edits were local", locals, edits.len());
        }
    }
}

#[test]
fn a_changed_service_path_and_host_are_swapped_in_place() {
    let options = Options::default();
    let (mut snapshot, mut shapes) = start();
    let mut translator = Translator::new();
    let first = translator.translate(&snapshot, &options);
    // plain-5 (whose path no other Ingress claims) moves to a Service never used before, a new
    // path, then a new host.
    for change in 0..3 {
        let before = snapshot.clone();
        let shape = &mut shapes[5];
        match change {
            0 => shape.service = 7,
            1 => shape.path = 99,
            _ => shape.host = 42,
        }
        let shape = shape.clone();
        insert(
            &mut snapshot,
            &service(&format!("svc-5-{}", shape.service), 5),
        );
        insert(&mut snapshot, &plain(5, &shape));
        let changed = differences(&before, &snapshot);
        let (kept, local) = step(&mut translator, &snapshot, &options, &changed);
        assert!(local, "change {change} was not local");
        assert_eq!(observe(&kept), observe(&translate(&snapshot, &options)));
        // Every host but plain-5's is the same allocation as at first.
        for (name, vhost) in first.table.exact_hosts.iter() {
            if **name != *"h5.example.com" {
                assert!(Arc::ptr_eq(vhost, &kept.table.exact_hosts[name]), "{name}");
            }
        }
        assert!(Arc::ptr_eq(&first.table.tls, &kept.table.tls));
    }
}
