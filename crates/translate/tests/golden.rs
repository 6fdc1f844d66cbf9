//! Golden translation tests: each `golden/NAME.yaml` is translated and rendered (routes, backends,
//! diagnostics) and compared with `golden/NAME.expected`.
//!
//! After a deliberate change, `UPDATE_GOLDEN=1 cargo test -p portcullis-translate --test golden`
//! rewrites the expected files. That is a separate mode, not a test run: every golden test fails
//! in it (saying whether it rewrote its file), so a run with the variable set can never pass. Review
//! the diff, then run the tests again without it.

use std::fmt::Write as _;
use std::path::Path;

use model::{parse_manifests, Parsed, Snapshot};
use portcullis_translate::{translate, Options};
use table::{BackendTarget, Table};

fn render(table: &Table, diagnostics: &[model::Diagnostic]) -> String {
    let mut out = String::new();
    let mut rows = Vec::new();
    for vhost in table.virtual_hosts() {
        let host = if vhost.name.is_empty() {
            "*"
        } else {
            &vhost.name
        };
        for route in vhost.exact.values().chain(vhost.prefix.values()) {
            let policy = &route.policy;
            let mut extras = String::new();
            if policy.https_redirect {
                extras.push_str(" [http: 308 to https]");
            }
            if policy.regex {
                extras.push_str(" [asks for regex]");
            }
            if let Some(fallback) = policy.fallback {
                let _ = write!(extras, " [fallback {}]", table.backend(fallback).name);
            }
            if let Some(canary) = &policy.canary {
                let json = serde_json::to_string(&**canary).expect("canary serializes");
                let _ = write!(
                    extras,
                    " [canary {} {json}]",
                    table.backend(canary.backend).name
                );
            }
            if let Some(rules) = &policy.rules {
                let json = serde_json::to_string(&**rules).expect("policy serializes");
                let _ = write!(extras, " policy {json}");
            }
            rows.push(format!(
                "route {host} {} {:?} -> {} ({} {}){extras}",
                route.origin.path_type.as_str(),
                route.origin.path,
                table.backend(route.backend).name,
                route.origin.ingress,
                route.origin.field(),
            ));
        }
        if let Some(regex) = &vhost.regex {
            let order: Vec<String> = regex
                .iter()
                .map(|(re, r)| format!("{} ({})", re.as_str(), r.origin.ingress))
                .collect();
            rows.push(format!("regex host {host}: {}", order.join(", ")));
        }
        if let Some(root) = &vhost.app_root {
            rows.push(format!("app-root host {host}: {root}"));
        }
        if let Some(to) = &vhost.redirect_to {
            rows.push(format!("redirect host {host} -> {to}"));
        }
    }
    rows.sort();
    for r in rows {
        let _ = writeln!(out, "{r}");
    }
    if let Some(d) = &table.default_backend {
        let _ = writeln!(
            out,
            "default -> {} ({})",
            table.backend(d.backend).name,
            d.origin.ingress
        );
    }
    let mut backends: Vec<_> = table.backends.iter().collect();
    backends.sort_by(|a, b| a.name.cmp(&b.name));
    for b in backends {
        let target = match &b.target {
            BackendTarget::Endpoints { ready, not_ready } => format!(
                "ready {:?} not_ready {:?}",
                ready.iter().map(ToString::to_string).collect::<Vec<_>>(),
                not_ready
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            BackendTarget::ExternalName { host, port } => format!("external {host}:{port}"),
            BackendTarget::Unavailable { reason } => format!("unavailable: {reason}"),
        };
        let _ = writeln!(out, "backend {} = {target}", b.name);
    }
    for d in diagnostics {
        let _ = writeln!(out, "{d}");
    }
    out
}

fn run_case(name: &str, options: &Options) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).expect("input");
    let mut snapshot = Snapshot::default();
    for parsed in parse_manifests(&input, name) {
        match parsed.expect("golden inputs parse") {
            Parsed::Object(o) | Parsed::Converted { object: o, .. } => {
                snapshot.insert(o);
            }
            Parsed::Skipped { .. } => {}
        }
    }
    let translation = translate(&snapshot, options);
    let actual = render(&translation.table, &translation.diagnostics);
    let expected_path = dir.join(format!("{name}.expected"));
    let expected = std::fs::read_to_string(&expected_path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let what = if expected.as_deref().ok() == Some(actual.as_str()) {
            "is unchanged"
        } else {
            std::fs::write(&expected_path, &actual).expect("write golden");
            "was rewritten"
        };
        panic!(
            "UPDATE_GOLDEN is set, so no test passes: {} {what}; review the diff and run the tests \
             again without UPDATE_GOLDEN",
            expected_path.display()
        );
    }
    let expected = expected.unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with UPDATE_GOLDEN=1 and review it",
            expected_path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "golden mismatch for {name}; if the change is deliberate, rewrite the expected file with \
         UPDATE_GOLDEN=1 and review the diff"
    );
}

#[test]
fn class_selection() {
    run_case("class_selection", &Options::default());
}

#[test]
fn class_default_ingress_class() {
    run_case("class_default", &Options::default());
}

#[test]
fn class_without_class_flag() {
    run_case(
        "class_without_class_flag",
        &Options {
            watch_ingress_without_class: true,
            ..Options::default()
        },
    );
}

#[test]
fn port_resolution() {
    run_case("ports", &Options::default());
}

#[test]
fn host_precedence() {
    run_case("hosts", &Options::default());
}

#[test]
fn path_precedence_across_ingresses() {
    run_case("path_precedence", &Options::default());
}

#[test]
fn default_backend() {
    run_case("default_backend", &Options::default());
}

#[test]
fn bad_objects() {
    run_case("bad_objects", &Options::default());
}

#[test]
fn annotations_paths_and_rewrites() {
    run_case("annotations_rewrite", &Options::nginx_compat());
}

#[test]
fn annotations_redirects_and_aliases() {
    run_case("annotations_redirect", &Options::nginx_compat());
}

#[test]
fn annotations_upstream() {
    run_case("annotations_upstream", &Options::nginx_compat());
}

#[test]
fn annotations_responses() {
    run_case(
        "annotations_response",
        &Options {
            allowed_response_headers: vec!["X-Frame-Options".into(), "X-Served-By".into()],
            ..Options::nginx_compat()
        },
    );
}

#[test]
fn annotations_refused_unknown_and_not_yet() {
    run_case("annotations_refused", &Options::nginx_compat());
}

#[test]
fn annotations_canary_attach_to_the_main_routes() {
    run_case("annotations_canary", &Options::nginx_compat());
}

#[test]
fn annotations_balance_affinity_hash_and_ewma() {
    run_case("annotations_balance", &Options::nginx_compat());
}

#[test]
fn source_range_annotations() {
    run_case("annotations_access", &Options::nginx_compat());
}

#[test]
fn authentication_annotations() {
    run_case("annotations_auth", &Options::nginx_compat());
}

#[test]
fn limit_annotations() {
    run_case("annotations_limits", &Options::nginx_compat());
}

#[test]
fn portcullis_health_check_annotations() {
    run_case("annotations_health", &Options::nginx_compat());
}

#[test]
fn annotations_under_another_prefix() {
    run_case(
        "annotations_prefix",
        &Options {
            annotations_prefix: "example.com/ingress".into(),
            ..Options::nginx_compat()
        },
    );
}

#[test]
fn course_manifests_as_ingress_nginx_class() {
    run_case(
        "course_master",
        &Options {
            ingress_classes: vec!["nginx".into()],
            ..Options::default()
        },
    );
}
