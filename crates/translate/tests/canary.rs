//! Canary Ingresses and incremental translation: a change of the canary Service's endpoints
//! reaches the canary backend, and editing a canary or main Ingress gives exactly the table a
//! fresh translation gives.

use model::{parse_manifests, Kind, ObjectKey, Parsed, Snapshot};
use portcullis_translate::{translate, Options, Translation, Translator};

fn insert(snapshot: &mut Snapshot, yaml: &str) {
    for doc in parse_manifests(yaml, "test") {
        match doc {
            Ok(Parsed::Object(o)) => {
                snapshot.insert(o);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// An Ingress `name` for `shop.example` with `paths` to Service `service`.
fn ingress(name: &str, service: &str, paths: &[&str], annotations: &str) -> String {
    let paths: String = paths
        .iter()
        .map(|p| {
            format!("          - {{path: {p}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n")
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: app\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: portcullis\n  rules:\n    - host: shop.example\n      http:\n        paths:\n{paths}"
    )
}

/// An EndpointSlice of Service `service` with the ready addresses `10.2.<s>.<a>`.
fn slice(service: &str, s: u8, ready: &[u8]) -> String {
    let endpoints: Vec<String> = ready
        .iter()
        .map(|a| format!("{{addresses: [\"10.2.{s}.{a}\"], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-a, namespace: app, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    )
}

const CANARY: &str = "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"20\"";

fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    insert(
        &mut snapshot,
        &ingress("main", "stable", &["/", "/api"], ""),
    );
    insert(
        &mut snapshot,
        &ingress("beta", "next", &["/", "/new"], CANARY),
    );
    for (s, service) in ["stable", "next"].iter().enumerate() {
        insert(
            &mut snapshot,
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: app}}\nspec: {{ports: [{{port: 80, targetPort: 8080}}]}}\n"),
        );
        insert(&mut snapshot, &slice(service, s as u8, &[1, 2]));
    }
    snapshot
}

fn observe(t: &Translation) -> (serde_json::Value, Vec<String>) {
    let table = serde_json::to_value(&t.table).expect("table serializes");
    let diagnostics = t.diagnostics.iter().map(|d| format!("{d:?}")).collect();
    (table, diagnostics)
}

/// The ready endpoints of the canary backend of the route of `path`.
fn canary_ready(t: &Translation, path: &str) -> Option<usize> {
    let found = t.table.lookup("shop.example", path)?;
    let canary = found.route.policy.canary.as_ref()?;
    Some(t.table.backend(canary.backend).ready().len())
}

#[test]
fn an_endpoint_change_of_the_canary_service_reaches_the_canary_backend() {
    let mut snapshot = snapshot();
    let options = Options::default();
    let mut translator = Translator::new();
    let first = translator.translate(&snapshot, &options);
    assert_eq!(canary_ready(&first, "/"), Some(2));
    assert_eq!(canary_ready(&first, "/api"), None, "the canary has no /api");
    insert(&mut snapshot, &slice("next", 1, &[3, 4, 5]));
    let changed = [(Kind::EndpointSlice, ObjectKey::new("app", "next-a"))];
    let second = translator.translate_changed(&snapshot, &options, Some(&changed));
    assert_eq!(canary_ready(&second, "/"), Some(3));
    assert_eq!(observe(&second), observe(&translate(&snapshot, &options)));
    assert_eq!(canary_ready(&first, "/"), Some(2), "the table before stays");
}

#[test]
fn editing_a_canary_or_its_main_ingress_gives_what_a_fresh_translation_gives() {
    let mut snapshot = snapshot();
    let options = Options::default();
    let mut translator = Translator::new();
    translator.translate(&snapshot, &options);
    let weight_50 = "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"50\"";
    let edits = [
        ingress("beta", "next", &["/", "/new"], weight_50),
        ingress("beta", "next", &["/api"], weight_50),
        ingress("main", "stable", &["/", "/api", "/new"], ""),
        ingress("beta", "next", &["/api"], ""),
        ingress("beta", "next", &["/new"], CANARY),
        ingress("main", "stable", &["/"], ""),
    ];
    for edit in edits {
        insert(&mut snapshot, &edit);
        let name = if edit.contains("name: main") {
            "main"
        } else {
            "beta"
        };
        let changed = [(Kind::Ingress, ObjectKey::new("app", name))];
        let t = translator.translate_changed(&snapshot, &options, Some(&changed));
        assert_eq!(
            observe(&t),
            observe(&translate(&snapshot, &options)),
            "{edit}"
        );
    }
    // The last state: the canary's /new matches nothing, so nothing has a canary.
    let t = translate(&snapshot, &options);
    assert_eq!(canary_ready(&t, "/"), None);
}
