//! TLS translation: certificates from Secrets, SAN coverage, expiry, bad Secrets, redirects.
//! Certificates are generated here, never checked in.

use model::{parse_manifests, Parsed, Severity, Snapshot};
use portcullis_translate::{translate, Options, Translation};

struct Cert {
    crt: String,
    key: String,
}

fn cert_with(names: &[&str], key: rcgen::KeyPair) -> Cert {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    let crt = params.self_signed(&key).expect("cert");
    Cert {
        crt: crt.pem(),
        key: key.serialize_pem(),
    }
}

/// An ECDSA P-256 certificate.
fn cert(names: &[&str]) -> Cert {
    cert_with(names, rcgen::KeyPair::generate().expect("key"))
}

fn ed25519_cert(names: &[&str]) -> Cert {
    cert_with(
        names,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key"),
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn secret(name: &str, crt: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(crt),
        indent(key)
    )
}

fn ingress(name: &str, annotations: &str, tls: &[(&str, &[&str])], hosts: &[&str]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: portcullis\n"
    );
    if !tls.is_empty() {
        out.push_str("  tls:\n");
        for (secret, hosts) in tls {
            out.push_str(&format!(
                "  - secretName: {secret}\n    hosts: [{}]\n",
                hosts
                    .iter()
                    .map(|h| format!("\"{h}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    out.push_str("  rules:\n");
    for host in hosts {
        out.push_str(&format!(
            "  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
        ));
    }
    out
}

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]\n";

fn run(docs: &[String], options: &Options) -> Translation {
    let mut snapshot = Snapshot::default();
    for doc in docs.iter().map(String::as_str).chain([WEB]) {
        for parsed in parse_manifests(doc, "test") {
            match parsed.expect("parses") {
                Parsed::Object(o) | Parsed::Converted { object: o, .. } => {
                    snapshot.insert(o);
                }
                Parsed::Skipped { .. } => {}
            }
        }
    }
    translate(&snapshot, options)
}

fn messages(t: &Translation, severity: Severity) -> Vec<String> {
    t.diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn certificates_by_exact_and_wildcard_host() {
    let a = cert(&["a.example"]);
    let w = ed25519_cert(&["*.shop.example"]);
    let t = run(
        &[
            secret("a", &a.crt, &a.key),
            secret("w", &w.crt, &w.key),
            ingress(
                "i",
                "",
                &[("a", &["a.example"]), ("w", &["*.shop.example"])],
                &["a.example", "*.shop.example"],
            ),
        ],
        &Options::default(),
    );
    assert!(
        messages(&t, Severity::Error).is_empty(),
        "{:?}",
        t.diagnostics
    );
    assert!(
        messages(&t, Severity::Warning).is_empty(),
        "{:?}",
        t.diagnostics
    );
    let tls = &t.table.tls;
    assert_eq!(tls.resolve(Some("a.example")).unwrap().source, "default/a");
    assert_eq!(tls.resolve(Some("A.Example")).unwrap().source, "default/a");
    assert_eq!(
        tls.resolve(Some("x.shop.example")).unwrap().source,
        "default/w"
    );
    assert!(tls.resolve(Some("x.y.shop.example")).is_none());
    assert!(tls.resolve(None).is_none(), "no SNI: the proxy's default");
    // TLS hosts redirect plain HTTP by default.
    let m = t.table.lookup("a.example", "/").unwrap();
    assert!(m.route.policy.https_redirect);
}

#[test]
fn bad_secrets_are_reported_and_other_hosts_keep_their_certificates() {
    let good = cert(&["good.example"]);
    let other = cert(&["other.example"]);
    let t = run(
        &[
            secret("good", &good.crt, &good.key),
            secret("not-pem", "hello", "world"),
            secret("mismatch", &good.crt, &other.key),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: no-key}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n".to_string(),
            ingress(
                "i",
                "",
                &[
                    ("good", &["good.example"]),
                    ("not-pem", &["bad1.example"]),
                    ("mismatch", &["bad2.example"]),
                    ("no-key", &["bad3.example"]),
                    ("absent", &["bad4.example"]),
                ],
                &["good.example", "bad1.example"],
            ),
        ],
        &Options::default(),
    );
    let errors = messages(&t, Severity::Error).join("\n");
    assert!(
        errors.contains("Secret default/not-pem: data: Secret default/not-pem tls.crt"),
        "{errors}"
    );
    assert!(
        errors.contains("default/mismatch") && errors.contains("does not belong"),
        "{errors}"
    );
    assert!(
        errors.contains("default/no-key") && errors.contains("has no tls.key"),
        "{errors}"
    );
    assert!(
        errors.contains("spec.tls[4].secretName: Secret default/absent not found"),
        "{errors}"
    );
    assert_eq!(
        t.table.tls.resolve(Some("good.example")).unwrap().source,
        "default/good"
    );
    for bad in [
        "bad1.example",
        "bad2.example",
        "bad3.example",
        "bad4.example",
    ] {
        assert!(
            t.table.tls.resolve(Some(bad)).is_none(),
            "{bad} falls back to the default"
        );
    }
    // Routes are unaffected by a broken certificate.
    assert!(t.table.lookup("bad1.example", "/").is_some());
}

#[test]
fn certificate_not_covering_a_host_is_a_warning() {
    let c = cert(&["a.example"]);
    let t = run(
        &[
            secret("c", &c.crt, &c.key),
            ingress("i", "", &[("c", &["b.example"])], &["b.example"]),
        ],
        &Options::default(),
    );
    let warnings = messages(&t, Severity::Warning).join("\n");
    assert!(
        warnings.contains("spec.tls[0].hosts[0]")
            && warnings.contains("does not cover \"b.example\""),
        "{warnings}"
    );
    assert!(
        t.table.tls.resolve(Some("b.example")).is_some(),
        "still served"
    );
}

#[test]
fn expiry_is_checked_against_the_given_time() {
    let c = cert(&["a.example"]);
    let docs = [
        secret("c", &c.crt, &c.key),
        ingress("i", "", &[("c", &["a.example"])], &["a.example"]),
    ];
    let not_after = run(&docs, &Options::default())
        .table
        .tls
        .resolve(Some("a.example"))
        .unwrap()
        .not_after;
    let soon = run(
        &docs,
        &Options {
            now: Some(not_after - 3 * 86_400),
            ..Options::default()
        },
    );
    assert!(
        messages(&soon, Severity::Warning)
            .join("\n")
            .contains("expires in 3 day(s)"),
        "{:?}",
        soon.diagnostics
    );
    let late = run(
        &docs,
        &Options {
            now: Some(not_after + 1),
            ..Options::default()
        },
    );
    assert!(messages(&late, Severity::Error)
        .join("\n")
        .contains("expired"));
}

#[test]
fn redirect_annotations() {
    let c = cert(&["a.example", "b.example"]);
    let t = run(
        &[
            secret("c", &c.crt, &c.key),
            ingress(
                "off",
                "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
                &[("c", &["a.example"])],
                &["a.example"],
            ),
            ingress(
                "forced",
                "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"",
                &[],
                &["c.example"],
            ),
            ingress("plain", "", &[], &["d.example"]),
            ingress(
                "typo",
                "nginx.ingress.kubernetes.io/ssl-redirect: \"yes\"",
                &[("c", &["b.example"])],
                &["b.example"],
            ),
        ],
        &Options::default(),
    );
    let redirects = |host: &str| {
        t.table
            .lookup(host, "/")
            .unwrap()
            .route
            .policy
            .https_redirect
    };
    assert!(!redirects("a.example"), "ssl-redirect: false");
    assert!(
        redirects("c.example"),
        "force-ssl-redirect without a certificate here"
    );
    assert!(!redirects("d.example"), "no TLS, no redirect");
    assert!(
        redirects("b.example"),
        "malformed value falls back to the default (true)"
    );
    assert!(messages(&t, Severity::Error).join("\n").contains(
        "metadata.annotations[nginx.ingress.kubernetes.io/ssl-redirect]: \"yes\" is not"
    ));
}

#[test]
fn default_certificate_flag() {
    let c = cert(&["fallback.example"]);
    let t = run(
        &[secret("fallback", &c.crt, &c.key)],
        &Options {
            default_certificate: Some(model::ObjectKey::new("default", "fallback")),
            ..Options::default()
        },
    );
    assert_eq!(
        t.table.tls.resolve(None).unwrap().source,
        "default/fallback"
    );
    assert_eq!(
        t.table.tls.resolve(Some("unknown.example")).unwrap().source,
        "default/fallback"
    );
    let missing = run(
        &[],
        &Options {
            default_certificate: Some(model::ObjectKey::new("ops", "nope")),
            ..Options::default()
        },
    );
    assert!(missing.table.tls.default.is_none());
    assert!(messages(&missing, Severity::Error)
        .join("\n")
        .contains("--default-ssl-certificate: Secret ops/nope not found"));
}
