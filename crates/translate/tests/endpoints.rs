//! A change of endpoints alone, told to a [`Translator`], gives exactly the table and diagnostics
//! a fresh translation gives, in a table that shares every virtual host, route, certificate and
//! unchanged backend with the one before; only the changed Services' backends are new.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use model::{parse_manifests, Kind, ObjectKey, Parsed, Snapshot};
use portcullis_translate::{translate, Options, Translation, Translator};

/// Ingresses in the generated configuration; they share hosts and Services.
const INGRESSES: usize = 120;
const HOSTS: usize = 40;
const SERVICES: usize = 30;
/// The certificate of the TLS Ingresses expires at 2027-01-20T00:00:00Z…
const NOT_AFTER: i64 = 1_800_403_200;
/// …three days and a bit after this.
const NOW: i64 = NOT_AFTER - 3 * 86_400 - 100;

/// A PEM certificate for `*.example.com` valid until [`NOT_AFTER`], and its key.
fn cert() -> &'static (String, String) {
    static CERT: OnceLock<(String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["*.example.com".to_string()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2027, 1, 20);
        let crt = params.self_signed(&key).expect("cert");
        (crt.pem(), key.serialize_pem())
    })
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// An EndpointSlice of Service `svc-<s>` with ready addresses `10.1.<s>.<a>` for `a` in `ready`
/// and one address that is not ready.
fn slice(s: usize, ready: &[u8]) -> String {
    let mut endpoints: Vec<String> = ready
        .iter()
        .map(|a| format!("{{addresses: [\"10.1.{s}.{a}\"], conditions: {{ready: true}}}}"))
        .collect();
    endpoints.push(format!(
        "{{addresses: [\"10.1.{s}.200\"], conditions: {{ready: false}}}}"
    ));
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{s}-a, namespace: app, labels: {{kubernetes.io/service-name: svc-{s}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    )
}

/// Ingresses sharing hosts (so some paths are shadowed) and Services, some with TLS, some with a
/// `default-backend` annotation, one host in regex mode; every Service with an EndpointSlice.
fn manifests() -> String {
    let mut out = String::new();
    for i in 0..INGRESSES {
        let host = format!("h{}.example.com", i % HOSTS);
        let path = if i % 7 == 3 {
            "/shared".to_string()
        } else {
            format!("/p{i}")
        };
        let mut annotations = Vec::new();
        if i % 11 == 0 {
            annotations.push(format!(
                "nginx.ingress.kubernetes.io/default-backend: svc-{}",
                (i + 1) % SERVICES
            ));
        }
        if i % HOSTS == 5 {
            annotations.push("nginx.ingress.kubernetes.io/use-regex: \"true\"".to_string());
        }
        let tls = if i % 9 == 0 {
            format!("  tls: [{{hosts: [{host}], secretName: tls}}]\n")
        } else {
            String::new()
        };
        write!(
            out,
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing-{i}\n  namespace: app\n  annotations: {{{}}}\nspec:\n  ingressClassName: portcullis\n{tls}  rules:\n    - host: {host}\n      http:\n        paths:\n          - path: {path}\n            pathType: Prefix\n            backend: {{service: {{name: svc-{}, port: {{number: 80}}}}}}\n",
            annotations.join(", "),
            i % SERVICES
        )
        .expect("a String takes any text");
    }
    for s in 0..SERVICES {
        write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: app}}\nspec: {{ports: [{{port: 80, targetPort: 8080}}]}}\n---\n{}",
            slice(s, &[1, 2])
        )
        .expect("a String takes any text");
    }
    let (crt, key) = cert();
    write!(
        out,
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls, namespace: app}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
    .expect("a String takes any text");
    out
}

fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    for doc in parse_manifests(&manifests(), "test") {
        match doc {
            Ok(Parsed::Object(o)) => {
                snapshot.insert(o);
            }
            other => panic!("{other:?}"),
        }
    }
    snapshot
}

/// Replaces the EndpointSlice of Service `svc-<s>`; returns the change as a source reports it.
fn set_slice(snapshot: &mut Snapshot, s: usize, ready: &[u8]) -> Vec<(Kind, ObjectKey)> {
    for doc in parse_manifests(&slice(s, ready), "test") {
        if let Ok(Parsed::Object(o)) = doc {
            snapshot.insert(o);
        }
    }
    vec![(
        Kind::EndpointSlice,
        ObjectKey::new("app", format!("svc-{s}-a")),
    )]
}

fn options(now: i64) -> Options {
    Options {
        now: Some(now),
        ..Options::default()
    }
}

fn observe(t: &Translation) -> (serde_json::Value, Vec<String>, Vec<ObjectKey>) {
    let table = serde_json::to_value(&t.table).expect("table serializes");
    let diagnostics = t.diagnostics.iter().map(|d| format!("{d:?}")).collect();
    (table, diagnostics, t.ingresses.to_vec())
}

/// Whether a backend is one of Service `svc-<s>`'s.
fn on_service(name: &str, s: usize) -> bool {
    name.starts_with(&format!("app/svc-{s}:"))
}

#[test]
fn an_endpoint_change_shares_everything_but_its_backends() {
    let mut snapshot = snapshot();
    let mut translator = Translator::new();
    let first = translator.translate(&snapshot, &options(NOW));
    assert!(
        first.table.backends.iter().any(|b| on_service(&b.name, 7)),
        "the configuration uses svc-7"
    );
    let changed = set_slice(&mut snapshot, 7, &[3, 4, 5]);
    let second = translator.translate_changed(&snapshot, &options(NOW + 10), Some(&changed));
    assert_eq!(
        observe(&second),
        observe(&translate(&snapshot, &options(NOW + 10)))
    );

    let (a, b) = (&first.table, &second.table);
    assert!(Arc::ptr_eq(&a.exact_hosts, &b.exact_hosts), "virtual hosts");
    assert!(Arc::ptr_eq(&a.wildcard_hosts, &b.wildcard_hosts));
    assert!(Arc::ptr_eq(&a.tls, &b.tls), "certificates");
    assert_eq!(a.backends.len(), b.backends.len());
    let mut replaced = 0;
    for (i, (old, new)) in a.backends.iter().zip(&b.backends).enumerate() {
        assert_eq!(old.name, new.name);
        if on_service(&new.name, 7) {
            replaced += 1;
            assert!(!Arc::ptr_eq(old, new), "{}", new.name);
            assert_eq!(new.ready().len(), 3, "{}", new.name);
            assert_eq!(old.ready().len(), 2, "the table before stays as it was");
        } else {
            assert!(b.backends.shares(&a.backends, i), "{}", new.name);
        }
    }
    assert!(replaced >= 1);
    // Every route is the same allocation, and routes to the same backend as before.
    for (name, vhost) in a.exact_hosts.iter() {
        let routes = vhost.exact.values().chain(vhost.prefix.values());
        for route in routes {
            let found = b
                .lookup(name, &route.origin.path)
                .expect("still routed")
                .route;
            assert!(Arc::ptr_eq(route, found) || vhost.regex.is_some(), "{name}");
        }
    }

    // A full translation afterwards (told nothing) shares the backends the change made.
    let third = translator.translate(&snapshot, &options(NOW + 20));
    assert_eq!(
        observe(&third),
        observe(&translate(&snapshot, &options(NOW + 20)))
    );
    for (i, backend) in second.table.backends.iter().enumerate() {
        assert!(
            third.table.backends.shares(&second.table.backends, i),
            "{}",
            backend.name
        );
    }
    for (name, vhost) in second.table.exact_hosts.iter() {
        assert!(
            Arc::ptr_eq(vhost, &third.table.exact_hosts[name]) || vhost.regex.is_some(),
            "{name}"
        );
    }
}

#[test]
fn losing_and_regaining_ready_endpoints_is_reported_like_a_full_translation() {
    let mut snapshot = snapshot();
    let mut translator = Translator::new();
    let first = translator.translate(&snapshot, &options(NOW));
    let no_ready = |t: &Translation| {
        t.diagnostics
            .iter()
            .filter(|d| d.message.contains("svc-7 port 80 has no ready endpoints"))
            .count()
    };
    assert_eq!(no_ready(&first), 0);

    let changed = set_slice(&mut snapshot, 7, &[]);
    let down = translator.translate_changed(&snapshot, &options(NOW), Some(&changed));
    assert_eq!(
        observe(&down),
        observe(&translate(&snapshot, &options(NOW)))
    );
    assert!(no_ready(&down) >= 1, "{:?}", down.diagnostics);
    assert!(Arc::ptr_eq(
        &first.table.exact_hosts,
        &down.table.exact_hosts
    ));

    let changed = set_slice(&mut snapshot, 7, &[1, 2]);
    let up = translator.translate_changed(&snapshot, &options(NOW), Some(&changed));
    assert_eq!(observe(&up), observe(&translate(&snapshot, &options(NOW))));
    assert_eq!(no_ready(&up), 0);
    assert_eq!(up.diagnostics, first.diagnostics);

    // Several Services at once, one of them removed.
    let mut changed = set_slice(&mut snapshot, 3, &[9]);
    changed.extend(set_slice(&mut snapshot, 4, &[8, 9]));
    let gone = ObjectKey::new("app", "svc-5-a");
    snapshot.remove(Kind::EndpointSlice, &gone);
    changed.push((Kind::EndpointSlice, gone));
    let many = translator.translate_changed(&snapshot, &options(NOW), Some(&changed));
    assert_eq!(
        observe(&many),
        observe(&translate(&snapshot, &options(NOW)))
    );
    assert!(Arc::ptr_eq(
        &first.table.exact_hosts,
        &many.table.exact_hosts
    ));
}

#[test]
fn certificate_expiry_is_judged_at_the_time_of_each_translation() {
    let mut snapshot = snapshot();
    let mut translator = Translator::new();
    let first = translator.translate(&snapshot, &options(NOW));
    let expiry = |t: &Translation| {
        t.diagnostics
            .iter()
            .filter(|d| d.message.starts_with("certificate expires in"))
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(expiry(&first), ["certificate expires in 3 day(s)"]);

    // Within the same day the certificate reads as before: only backends change.
    let changed = set_slice(&mut snapshot, 7, &[6]);
    let later = NOW + 50;
    let same_day = translator.translate_changed(&snapshot, &options(later), Some(&changed));
    assert_eq!(
        observe(&same_day),
        observe(&translate(&snapshot, &options(later)))
    );
    assert!(Arc::ptr_eq(
        &first.table.exact_hosts,
        &same_day.table.exact_hosts
    ));

    // A day later it reads differently, so everything is translated again.
    let changed = set_slice(&mut snapshot, 7, &[7]);
    let next_day = NOW + 200;
    let t = translator.translate_changed(&snapshot, &options(next_day), Some(&changed));
    assert_eq!(
        observe(&t),
        observe(&translate(&snapshot, &options(next_day)))
    );
    assert_eq!(expiry(&t), ["certificate expires in 2 day(s)"]);
    // A clock that goes back is not trusted either.
    let changed = set_slice(&mut snapshot, 7, &[8]);
    let t = translator.translate_changed(&snapshot, &options(NOW), Some(&changed));
    assert_eq!(observe(&t), observe(&translate(&snapshot, &options(NOW))));
}
