//! A [`Translator`] kept across a sequence of changed snapshots returns, after every change,
//! exactly what a fresh [`translate`] returns for the same snapshot: the same table (routes with
//! their backends, order and policy, backends, certificates), diagnostics and Ingresses — whether
//! it finds the changes itself or is told them, and when only endpoints changed, with every
//! virtual host shared with the table before.

use std::sync::{Arc, OnceLock};

use model::{parse_manifests, Kind, Object, ObjectKey, Parsed, Snapshot};
use portcullis_translate::{translate, Options, Translation, Translator};
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["default", "other"];
const SERVICES: [&str; 3] = ["s0", "s1", "s2"];
const HOSTS: [&str; 5] = [
    "",
    "x.example.com",
    "*.example.com",
    "y.example.com",
    "Bad_Host",
];
const PATHS: [&str; 5] = ["/", "/a", "/a/", "/b", "b"];
const PATH_TYPES: [&str; 4] = ["Prefix", "Exact", "ImplementationSpecific", "Regex"];
const SECRETS: [&str; 3] = ["tls0", "tls1", "tls2"];
/// Annotations that make hosts of their own or change how a host is served.
const EXTRA: [&str; 6] = [
    "nginx.ingress.kubernetes.io/server-alias: \"y.example.com, z.example.com\"",
    "nginx.ingress.kubernetes.io/from-to-www-redirect: \"true\"",
    "nginx.ingress.kubernetes.io/app-root: /a",
    "nginx.ingress.kubernetes.io/use-regex: \"true\"",
    "nginx.ingress.kubernetes.io/default-backend: s1",
    "nginx.ingress.kubernetes.io/server-alias: z.example.com",
];
const NOW: i64 = 1_800_000_000;

/// PEM certificate and key pairs, generated once.
fn certs() -> &'static [(String, String); 2] {
    static CERTS: OnceLock<[(String, String); 2]> = OnceLock::new();
    CERTS.get_or_init(|| {
        let make = |names: &[&str]| {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .expect("params");
            let crt = params.self_signed(&key).expect("cert");
            (crt.pem(), key.serialize_pem())
        };
        [
            make(&["x.example.com", "*.example.com"]),
            make(&["y.example.com"]),
        ]
    })
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A backend reference: Service, and port by number (80, 81) or by name.
#[derive(Clone, Debug)]
struct BackendRef {
    service: usize,
    port: usize,
}

fn backend_yaml(b: &BackendRef, by: usize) -> String {
    let port = match b.port {
        0 => "number: 80".to_string(),
        1 => "number: 81".to_string(),
        2 => "name: http".to_string(),
        _ => "name: missing".to_string(),
    };
    indent(
        &format!(
            "service:\n  name: {}\n  port:\n    {port}\n",
            SERVICES[b.service]
        ),
        by,
    )
}

/// A rule: host, and paths (path, pathType, backend).
type Rule = (usize, Vec<(usize, usize, BackendRef)>);

/// One change to the objects.
#[derive(Clone, Debug)]
enum Change {
    Ingress {
        ns: usize,
        name: usize,
        class: usize,
        created: Option<u8>,
        ssl_redirect: usize,
        force: bool,
        /// One of [`EXTRA`], or none.
        extra: usize,
        default: Option<BackendRef>,
        rules: Vec<Rule>,
        tls: Vec<(Vec<usize>, Option<usize>)>,
    },
    Service {
        ns: usize,
        name: usize,
        ports: usize,
        external: bool,
        selector: bool,
    },
    Slice {
        ns: usize,
        name: usize,
        service: Option<usize>,
        port_name: bool,
        addresses: Vec<(u8, bool)>,
        fqdn: bool,
    },
    Endpoints {
        ns: usize,
        name: usize,
        addresses: Vec<(u8, bool)>,
    },
    Secret {
        ns: usize,
        name: usize,
        content: usize,
    },
    Class {
        name: usize,
        ours: bool,
        default: bool,
    },
    Remove {
        kind: usize,
        ns: usize,
        name: usize,
    },
    /// Replaces an object by an equal copy in a new allocation.
    Copy {
        kind: usize,
        index: usize,
    },
}

fn backend_ref() -> impl Strategy<Value = BackendRef> {
    (0..SERVICES.len(), 0..4usize).prop_map(|(service, port)| BackendRef { service, port })
}

fn change() -> impl Strategy<Value = Change> {
    let ingress = (
        (
            0..2usize,
            0..4usize,
            0..3usize,
            proptest::option::of(0..3u8),
        ),
        (
            0..4usize,
            any::<bool>(),
            prop_oneof![3 => Just(EXTRA.len()), 2 => 0..EXTRA.len()],
        ),
        proptest::option::weighted(0.3, backend_ref()),
        proptest::collection::vec(
            (
                0..HOSTS.len(),
                proptest::collection::vec(
                    (0..PATHS.len(), 0..PATH_TYPES.len(), backend_ref()),
                    0..3,
                ),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                proptest::collection::vec(0..HOSTS.len(), 0..3),
                proptest::option::weighted(0.8, 0..SECRETS.len()),
            ),
            0..2,
        ),
    )
        .prop_map(
            |((ns, name, class, created), (ssl_redirect, force, extra), default, rules, tls)| {
                Change::Ingress {
                    ns,
                    name,
                    class,
                    created,
                    ssl_redirect,
                    force,
                    extra,
                    default,
                    rules,
                    tls,
                }
            },
        );
    let addresses = proptest::collection::vec((0..4u8, any::<bool>()), 0..3);
    prop_oneof![
        4 => ingress,
        2 => (0..2usize, 0..SERVICES.len(), 0..4usize, proptest::bool::weighted(0.1), any::<bool>())
            .prop_map(|(ns, name, ports, external, selector)| Change::Service {
                ns, name, ports, external, selector
            }),
        2 => (
            0..2usize,
            0..4usize,
            proptest::option::weighted(0.9, 0..SERVICES.len()),
            any::<bool>(),
            addresses.clone(),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(ns, name, service, port_name, addresses, fqdn)| Change::Slice {
                ns, name, service, port_name, addresses, fqdn
            }),
        1 => (0..2usize, 0..SERVICES.len(), addresses)
            .prop_map(|(ns, name, addresses)| Change::Endpoints { ns, name, addresses }),
        1 => (0..2usize, 0..SECRETS.len(), 0..5usize)
            .prop_map(|(ns, name, content)| Change::Secret { ns, name, content }),
        1 => (0..2usize, any::<bool>(), any::<bool>())
            .prop_map(|(name, ours, default)| Change::Class { name, ours, default }),
        2 => (0..6usize, 0..2usize, 0..4usize)
            .prop_map(|(kind, ns, name)| Change::Remove { kind, ns, name }),
        1 => (0..6usize, 0..8usize).prop_map(|(kind, index)| Change::Copy { kind, index }),
    ]
}

fn ingress_yaml(change: &Change) -> String {
    let Change::Ingress {
        ns,
        name,
        class,
        created,
        ssl_redirect,
        force,
        extra,
        default,
        rules,
        tls,
    } = change
    else {
        unreachable!()
    };
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing{name}\n  namespace: {}\n",
        NAMESPACES[*ns]
    );
    if let Some(t) = created {
        out += &format!("  creationTimestamp: \"2024-01-0{}T00:00:00Z\"\n", t + 1);
    }
    out += "  annotations:\n";
    out += match ssl_redirect {
        0 => "    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"\n",
        1 => "    nginx.ingress.kubernetes.io/ssl-redirect: \"maybe\"\n",
        _ => "    unrelated: \"x\"\n",
    };
    if *force {
        out += "    nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"\n";
    }
    if let Some(extra) = EXTRA.get(*extra) {
        out += &format!("    {extra}\n");
    }
    out += "spec:\n";
    match class {
        0 => out += "  ingressClassName: portcullis\n",
        1 => out += "  ingressClassName: c1\n",
        _ => {}
    }
    if let Some(b) = default {
        out += "  defaultBackend:\n";
        out += &backend_yaml(b, 4);
    }
    if !tls.is_empty() {
        out += "  tls:\n";
        for (hosts, secret) in tls {
            out += "    - hosts: [";
            out += &hosts
                .iter()
                .map(|h| format!("{:?}", HOSTS[*h]))
                .collect::<Vec<_>>()
                .join(", ");
            out += "]\n";
            if let Some(s) = secret {
                out += &format!("      secretName: {}\n", SECRETS[*s]);
            }
        }
    }
    if !rules.is_empty() {
        out += "  rules:\n";
        for (host, paths) in rules {
            out += &format!("    - host: {:?}\n", HOSTS[*host]);
            if paths.is_empty() {
                continue;
            }
            out += "      http:\n        paths:\n";
            for (path, ty, backend) in paths {
                out += &format!(
                    "          - path: {:?}\n            pathType: {}\n            backend:\n",
                    PATHS[*path], PATH_TYPES[*ty]
                );
                out += &backend_yaml(backend, 14);
            }
        }
    }
    out
}

fn addresses_yaml(addresses: &[(u8, bool)]) -> (String, String) {
    let ready: Vec<String> = addresses
        .iter()
        .filter(|(_, r)| *r)
        .map(|(a, _)| format!("{{ip: 10.0.0.{a}}}"))
        .collect();
    let not_ready: Vec<String> = addresses
        .iter()
        .filter(|(_, r)| !*r)
        .map(|(a, _)| format!("{{ip: 10.0.0.{a}}}"))
        .collect();
    (ready.join(", "), not_ready.join(", "))
}

/// The manifest for a change, or `None` for removals and copies.
fn manifest(change: &Change) -> Option<String> {
    Some(match change {
        Change::Ingress { .. } => ingress_yaml(change),
        Change::Service {
            ns,
            name,
            ports,
            external,
            selector,
        } => {
            let ports = match ports {
                0 => "[]",
                1 => "[{port: 80, targetPort: 8080}]",
                2 => "[{port: 80, name: http, targetPort: 8080}, {port: 81, name: admin}]",
                _ => "[{port: 81, name: http}]",
            };
            let mut spec = format!("  ports: {ports}\n");
            if *external {
                spec += "  type: ExternalName\n  externalName: ext.example.org.\n";
            }
            if *selector {
                spec += "  selector: {app: x}\n";
            }
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: {}}}\nspec:\n{spec}",
                SERVICES[*name], NAMESPACES[*ns]
            )
        }
        Change::Slice {
            ns,
            name,
            service,
            port_name,
            addresses,
            fqdn,
        } => {
            let labels = match service {
                Some(s) => format!("{{kubernetes.io/service-name: {}}}", SERVICES[*s]),
                None => "{}".into(),
            };
            let port = if *port_name {
                "{name: http, port: 8080}"
            } else {
                "{port: 8080}"
            };
            let endpoints: Vec<String> = addresses
                .iter()
                .map(|(a, ready)| {
                    format!("{{addresses: [\"10.0.1.{a}\"], conditions: {{ready: {ready}}}}}")
                })
                .collect();
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: sl{name}, namespace: {}, labels: {labels}}}\naddressType: {}\nports: [{port}]\nendpoints: [{}]\n",
                NAMESPACES[*ns],
                if *fqdn { "FQDN" } else { "IPv4" },
                endpoints.join(", ")
            )
        }
        Change::Endpoints {
            ns,
            name,
            addresses,
        } => {
            let (ready, not_ready) = addresses_yaml(addresses);
            format!(
                "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {}, namespace: {}}}\nsubsets:\n  - addresses: [{ready}]\n    notReadyAddresses: [{not_ready}]\n    ports: [{{port: 8080}}, {{name: http, port: 8081}}]\n",
                SERVICES[*name], NAMESPACES[*ns]
            )
        }
        Change::Secret { ns, name, content } => {
            let (ty, crt, key) = match content {
                0 | 1 => (
                    "kubernetes.io/tls",
                    certs()[*content].0.clone(),
                    certs()[*content].1.clone(),
                ),
                2 => (
                    "kubernetes.io/tls",
                    certs()[0].0.clone(),
                    certs()[1].1.clone(),
                ),
                3 => ("Opaque", certs()[1].0.clone(), certs()[1].1.clone()),
                _ => ("kubernetes.io/tls", "garbage".into(), "garbage".into()),
            };
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: {}}}\ntype: {ty}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
                SECRETS[*name],
                NAMESPACES[*ns],
                indent(&crt, 4),
                indent(&key, 4)
            )
        }
        Change::Class { name, ours, default } => format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: c{name}\n  annotations: {{ingressclass.kubernetes.io/is-default-class: \"{default}\"}}\nspec:\n  controller: {}\n",
            if *ours {
                "portcullis.io/ingress-controller"
            } else {
                "example.com/other"
            }
        ),
        Change::Remove { .. } | Change::Copy { .. } => return None,
    })
}

fn object(text: &str) -> Object {
    match parse_manifests(text, "test") {
        mut docs if docs.len() == 1 => match docs.remove(0) {
            Ok(Parsed::Object(o)) | Ok(Parsed::Converted { object: o, .. }) => o,
            other => panic!("{text}\n{other:?}"),
        },
        docs => panic!("{text}\n{docs:?}"),
    }
}

const KINDS: [Kind; 6] = [
    Kind::Ingress,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Endpoints,
    Kind::Secret,
    Kind::IngressClass,
];

fn copy_nth<T: Clone>(map: &mut std::collections::BTreeMap<ObjectKey, Arc<T>>, index: usize) {
    if map.is_empty() {
        return;
    }
    let key = map.keys().nth(index % map.len()).cloned();
    if let Some(key) = key {
        let copy = Arc::new((*map[&key]).clone());
        map.insert(key, copy);
    }
}

fn apply(snapshot: &mut Snapshot, change: &Change) {
    match change {
        Change::Remove { kind, ns, name } => {
            let kind = KINDS[*kind];
            let (ns, name) = match kind {
                Kind::Ingress => (NAMESPACES[*ns].to_string(), format!("ing{name}")),
                Kind::Service | Kind::Endpoints => (
                    NAMESPACES[*ns].to_string(),
                    SERVICES[name % SERVICES.len()].to_string(),
                ),
                Kind::EndpointSlice => (NAMESPACES[*ns].to_string(), format!("sl{name}")),
                Kind::Secret => (
                    NAMESPACES[*ns].to_string(),
                    SECRETS[name % SECRETS.len()].to_string(),
                ),
                Kind::IngressClass => (String::new(), format!("c{}", name % 2)),
                Kind::ConfigMap => (NAMESPACES[*ns].to_string(), format!("cm{name}")),
            };
            snapshot.remove(kind, &ObjectKey::new(ns, name));
        }
        Change::Copy { kind, index } => match KINDS[*kind] {
            Kind::Ingress => copy_nth(&mut snapshot.ingresses, *index),
            Kind::Service => copy_nth(&mut snapshot.services, *index),
            Kind::EndpointSlice => copy_nth(&mut snapshot.endpoint_slices, *index),
            Kind::Endpoints => copy_nth(&mut snapshot.endpoints, *index),
            Kind::Secret => copy_nth(&mut snapshot.secrets, *index),
            Kind::IngressClass => copy_nth(&mut snapshot.ingress_classes, *index),
            Kind::ConfigMap => copy_nth(&mut snapshot.config_maps, *index),
        },
        other => {
            let text = manifest(other).expect("a manifest");
            snapshot.insert(object(&text));
        }
    }
}

/// Options that vary between steps: classes, the default certificate and the clock.
fn options(choice: u8) -> Options {
    let mut options = Options::default();
    if choice & 1 == 1 {
        options.watch_ingress_without_class = true;
    }
    if choice & 2 == 2 {
        options.default_certificate = Some(ObjectKey::new("default", "tls0"));
    }
    if choice & 4 == 4 {
        options.ingress_classes.push("c1".into());
    }
    options.now = Some(NOW + i64::from(choice % 3) * 400 * 86_400);
    options
}

/// Everything a translation says, in a form that compares as a whole.
fn observe(t: &Translation) -> (serde_json::Value, Vec<String>, Vec<ObjectKey>) {
    let table = serde_json::to_value(&t.table).expect("table serializes");
    let diagnostics = t.diagnostics.iter().map(|d| format!("{d:?}")).collect();
    (table, diagnostics, t.ingresses.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn translator_matches_a_fresh_translation(
        steps in proptest::collection::vec((change(), 0..8u8), 1..40)
    ) {
        let mut snapshot = Snapshot::default();
        let mut translator = Translator::new();
        for (i, (change, choice)) in steps.iter().enumerate() {
            apply(&mut snapshot, change);
            let options = options(*choice);
            let kept = translator.translate(&snapshot, &options);
            let fresh = translate(&snapshot, &options);
            prop_assert_eq!(observe(&kept), observe(&fresh), "step {}: {:?}", i, change);
        }
    }
}

/// The objects that differ between two snapshots (added, removed or replaced by a different
/// object), as a source reports them.
fn differences(before: &Snapshot, after: &Snapshot) -> Vec<(Kind, ObjectKey)> {
    fn diff<T: PartialEq>(
        kind: Kind,
        a: &std::collections::BTreeMap<ObjectKey, Arc<T>>,
        b: &std::collections::BTreeMap<ObjectKey, Arc<T>>,
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
    diff(
        Kind::IngressClass,
        &before.ingress_classes,
        &after.ingress_classes,
        &mut out,
    );
    diff(Kind::Service, &before.services, &after.services, &mut out);
    diff(
        Kind::EndpointSlice,
        &before.endpoint_slices,
        &after.endpoint_slices,
        &mut out,
    );
    diff(
        Kind::Endpoints,
        &before.endpoints,
        &after.endpoints,
        &mut out,
    );
    diff(Kind::Secret, &before.secrets, &after.secrets, &mut out);
    diff(
        Kind::ConfigMap,
        &before.config_maps,
        &after.config_maps,
        &mut out,
    );
    out
}

/// A change of endpoints alone: an EndpointSlice or Endpoints written or removed.
fn endpoint_change() -> impl Strategy<Value = Change> {
    let addresses = proptest::collection::vec((0..4u8, any::<bool>()), 0..3);
    prop_oneof![
        4 => (
            0..2usize,
            0..4usize,
            proptest::option::weighted(0.9, 0..SERVICES.len()),
            any::<bool>(),
            addresses.clone(),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(ns, name, service, port_name, addresses, fqdn)| Change::Slice {
                ns, name, service, port_name, addresses, fqdn
            }),
        2 => (0..2usize, 0..SERVICES.len(), addresses)
            .prop_map(|(ns, name, addresses)| Change::Endpoints { ns, name, addresses }),
        1 => (prop_oneof![Just(2usize), Just(3usize)], 0..2usize, 0..4usize)
            .prop_map(|(kind, ns, name)| Change::Remove { kind, ns, name }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Told what changed, a translator still returns what a fresh translation returns; after a
    /// change of endpoints alone (options and clock as before) it shares every virtual host with
    /// the table before.
    #[test]
    fn translator_told_what_changed_matches_a_fresh_translation(
        steps in proptest::collection::vec(
            (
                prop_oneof![2 => change(), 3 => endpoint_change()],
                prop_oneof![6 => Just(0u8), 1 => 0..8u8],
            ),
            1..40,
        )
    ) {
        let mut snapshot = Snapshot::default();
        let mut translator = Translator::new();
        let mut last: Option<(Translation, u8)> = None;
        for (i, (change, choice)) in steps.iter().enumerate() {
            let before = snapshot.clone();
            apply(&mut snapshot, change);
            let changed = differences(&before, &snapshot);
            let options = options(*choice);
            let kept = translator.translate_changed(&snapshot, &options, Some(&changed));
            let fresh = translate(&snapshot, &options);
            prop_assert_eq!(observe(&kept), observe(&fresh), "step {}: {:?}", i, change);
            let endpoints_only = changed
                .iter()
                .all(|(kind, _)| matches!(kind, Kind::EndpointSlice | Kind::Endpoints));
            if let Some((previous, was)) = &last {
                if endpoints_only && was == choice {
                    prop_assert!(
                        Arc::ptr_eq(&previous.table.exact_hosts, &kept.table.exact_hosts)
                            && Arc::ptr_eq(&previous.table.tls, &kept.table.tls),
                        "step {}: an endpoint change rebuilt the hosts", i
                    );
                }
            }
            last = Some((kept, *choice));
        }
    }
}

/// Certificates, backends and unchanged routes of a kept translator are shared with the table it
/// built before, not rebuilt.
#[test]
fn unchanged_objects_are_reused() {
    let mut snapshot = Snapshot::default();
    let ingress = |name: usize, service: usize| Change::Ingress {
        ns: 0,
        name,
        class: 0,
        created: None,
        ssl_redirect: 2,
        force: false,
        extra: EXTRA.len(),
        default: None,
        rules: vec![([1, 3][name], vec![(1, 0, BackendRef { service, port: 0 })])],
        tls: vec![(vec![[1, 3][name]], Some(name))],
    };
    for change in [
        ingress(0, 0),
        ingress(1, 1),
        Change::Service {
            ns: 0,
            name: 0,
            ports: 1,
            external: false,
            selector: false,
        },
        Change::Service {
            ns: 0,
            name: 1,
            ports: 1,
            external: false,
            selector: false,
        },
        Change::Secret {
            ns: 0,
            name: 0,
            content: 0,
        },
        Change::Secret {
            ns: 0,
            name: 1,
            content: 1,
        },
    ] {
        apply(&mut snapshot, &change);
    }
    let options = options(0);
    let mut translator = Translator::new();
    let first = translator.translate(&snapshot, &options);
    apply(&mut snapshot, &ingress(1, 2));
    let second = translator.translate(&snapshot, &options);
    assert_eq!(observe(&second), observe(&translate(&snapshot, &options)));

    let cert = |t: &Translation, host: &str| t.table.tls.exact[host].clone();
    assert!(Arc::ptr_eq(
        &cert(&first, "x.example.com"),
        &cert(&second, "x.example.com")
    ));
    assert!(Arc::ptr_eq(
        &cert(&first, "y.example.com"),
        &cert(&second, "y.example.com")
    ));
    let route =
        |t: &Translation, host: &str| t.table.lookup(host, "/a").expect("routed").route.clone();
    assert!(Arc::ptr_eq(
        &route(&first, "x.example.com"),
        &route(&second, "x.example.com")
    ));
    assert!(!Arc::ptr_eq(
        &route(&first, "y.example.com"),
        &route(&second, "y.example.com")
    ));
    assert!(Arc::ptr_eq(
        &first.table.backends[0],
        &second.table.backends[0]
    ));
}
