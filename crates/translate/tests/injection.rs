//! The IngressNightmare family (CVE-2025-1974 and its siblings): annotation values that carried
//! nginx configuration or Lua into ingress-nginx's rendered config. Portcullis renders nothing,
//! but every such value must still be rejected with a diagnostic on that annotation, or be inert
//! (an annotation Portcullis ignores), and never reach the compiled table.

use model::{parse_manifests, Parsed, Severity, Snapshot};
use portcullis_translate::annotations::catalog::{self, Support};
use portcullis_translate::{translate, Options};

/// Payloads published for the family: config-block escapes, module loading, Lua, header
/// injection, quote breaking.
const PAYLOADS: &[&str] = &[
    "}\nload_module /tmp/evil.so;\n#",
    "/x; ssl_engine /tmp/evil.so;",
    "${lua: os.execute('id')}",
    "\"; } location /pwned { return 200 'x'; } #",
    "/$1{ content_by_lua_block { os.execute('id') } }",
    "https://a.example/\r\nX-Injected: 1",
    "app.internal; proxy_pass http://169.254.169.254/",
    "GET, POST; more_set_headers 'X-Injected: 1'",
    "1; include /etc/passwd",
    "default/evil; #",
];

/// Markers that must not appear anywhere in the compiled table.
const MARKERS: &[&str] = &[
    "load_module",
    "ssl_engine",
    "os.execute",
    "pwned",
    "X-Injected",
    "169.254.169.254",
    "/etc/passwd",
    "evil",
];

fn snapshot(annotation: &str, value: &str) -> Snapshot {
    let ingress = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "target",
            "namespace": "default",
            "annotations": { format!("nginx.ingress.kubernetes.io/{annotation}"): value }
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "a.example", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}
            }]}}]
        }
    });
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}
    });
    let mut snapshot = Snapshot::default();
    for text in [ingress.to_string(), service.to_string()] {
        for parsed in parse_manifests(&text, "injection") {
            if let Ok(Parsed::Object(o)) = parsed {
                snapshot.insert(o);
            }
        }
    }
    snapshot
}

#[test]
fn every_annotation_rejects_or_ignores_configuration_payloads() {
    let options = Options::nginx_compat();
    let mut checked = 0;
    for entry in catalog::CATALOG {
        let field = format!(
            "metadata.annotations[nginx.ingress.kubernetes.io/{}]",
            entry.name
        );
        for payload in PAYLOADS {
            let t = translate(&snapshot(entry.name, payload), &options);
            let on_field: Vec<_> = t
                .diagnostics
                .iter()
                .filter(|d| d.field.as_deref() == Some(field.as_str()))
                .collect();
            let rejected = on_field.iter().any(|d| d.severity == Severity::Error);
            let ignored = matches!(entry.support, Support::NotYet)
                && on_field
                    .iter()
                    .any(|d| d.severity == Severity::Warning && d.message.contains("ignored"));
            assert!(
                rejected || ignored,
                "{} = {payload:?} was neither rejected nor ignored: {:?}",
                entry.name,
                t.diagnostics
            );
            if matches!(entry.support, Support::Refused(_)) {
                assert_eq!(
                    t.table.route_count(),
                    0,
                    "{}: the Ingress is not served",
                    entry.name
                );
            }
            let compiled = serde_json::to_string(&t.table).expect("the table serializes");
            for marker in MARKERS {
                assert!(
                    !compiled.contains(marker),
                    "{} = {payload:?} reached the table: {compiled}",
                    entry.name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, catalog::CATALOG.len() * PAYLOADS.len());
}
