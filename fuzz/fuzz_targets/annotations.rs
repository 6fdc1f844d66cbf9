//! One Ingress with any annotations (names from the catalog of ingress-nginx annotations, or
//! any text; values from a list of meaningful ones, or any text), translated beside the
//! Services, EndpointSlices, ConfigMap and Secret its annotations may read. Nothing may panic,
//! and every rejection is a diagnostic: a refused annotation leaves the Ingress unserved with
//! an error naming it, an unknown or unimplemented one is warned about, and any route of the
//! Ingress missing from the table is accounted for by an error about the Ingress.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use model::{ObjectKey, Severity, Snapshot, Subject};
use table::Table;
use translate::annotations::catalog::{self, Support, CATALOG};
use translate::{translate, Diagnostic, Options};

/// The objects around the fuzzed Ingress; the Ingress itself is `app/fuzz`.
const BASE: &str = include_str!("annotations.yaml");

/// Values that mean something to at least one annotation.
const VALUES: &[&str] = &[
    "true",
    "false",
    "on",
    "off",
    "0",
    "1",
    "-1",
    "3",
    "10",
    "65536",
    "18446744073709551616",
    "10s",
    "5m",
    "1h",
    "1.5s",
    "0s",
    "8k",
    "1m",
    "1g",
    "10M",
    "0k",
    "/",
    "/$1",
    "/$2/$9",
    "$1",
    "/x/$0",
    "/api",
    "https://example.com",
    "https://example.com/$1?a=b",
    "http://[::1]:80/x",
    "GRPC",
    "GRPCS",
    "HTTP",
    "HTTPS",
    "AUTO_HTTP",
    "FCGI",
    "h2c",
    "*",
    "null",
    "https://a.example, https://*.b.example:8443",
    "GET, POST",
    "X-A, X-B",
    "headers",
    "app/headers",
    "other/headers",
    "missing",
    "upstream-ca",
    "fallback",
    "api",
    "error timeout http_502",
    "http_503 non_idempotent",
    "1.1",
    "1.0",
    "2",
    "www.app.example",
    "a.example,b.example",
    "*.example",
    "TLSv1.2 TLSv1.3",
    "301",
    "308",
    "302",
    "999",
    "",
    " ",
    "a\nb",
    "${jndi:x}",
    "';}",
    "location / { return 200; }",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Catalog(u16),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Known(u8),
    KnownAnd(u8, String),
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    annotations: Vec<(Name, Value)>,
    foreign: Option<(String, String)>,
    path: String,
}

/// The routes of an Ingress: (rule, path index).
type Routes = BTreeSet<(Option<usize>, Option<usize>)>;

/// The objects, the options, and the routes `app/fuzz` has without annotations.
fn base() -> &'static (Snapshot, Options, Routes) {
    static BASE_SNAPSHOT: OnceLock<(Snapshot, Options, Routes)> = OnceLock::new();
    BASE_SNAPSHOT.get_or_init(|| {
        let options = Options {
            allowed_response_headers: vec!["X-Frame-Options".into(), "X-Served-By".into()],
            now: Some(1_750_000_000),
            ..Options::nginx_compat()
        };
        let snapshot = portcullis_fuzz::snapshot_of(BASE, "base");
        let routes = routes(&translate(&snapshot, &options).table);
        assert_eq!(routes.len(), 4, "the base Ingress serves all of its paths");
        (snapshot, options, routes)
    })
}

fn key() -> ObjectKey {
    ObjectKey::new("app", "fuzz")
}

/// The routes of `app/fuzz` in the table, by rule and path index.
fn routes(table: &Table) -> Routes {
    let routes = table
        .virtual_hosts()
        .flat_map(|v| v.exact.values().chain(v.prefix.values()));
    routes
        .chain(table.default_backend.iter())
        .filter(|r| r.origin.ingress == "app/fuzz")
        .map(|r| (r.origin.rule, r.origin.path_index))
        .collect()
}

fn about(d: &Diagnostic, severity: Severity, field: Option<&str>) -> bool {
    let ours = matches!(&d.subject, Subject::Object { key: k, .. } if *k == key());
    ours && d.severity == severity && field.is_none_or(|f| d.field.as_deref() == Some(f))
}

fn field(name: &str) -> String {
    format!(
        "metadata.annotations[{}/{name}]",
        translate::annotations::DEFAULT_PREFIX
    )
}

fn annotations(input: &Input) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in input.annotations.iter().take(24) {
        let name = match name {
            Name::Catalog(i) => CATALOG[usize::from(*i) % CATALOG.len()].name.to_string(),
            Name::Other(s) => s.clone(),
        };
        let value = match value {
            Value::Known(i) => VALUES[usize::from(*i) % VALUES.len()].to_string(),
            Value::KnownAnd(i, s) => format!("{}{s}", VALUES[usize::from(*i) % VALUES.len()]),
            Value::Any(s) => s.clone(),
        };
        out.insert(
            format!("{}/{name}", translate::annotations::DEFAULT_PREFIX),
            value,
        );
    }
    if let Some((k, v)) = &input.foreign {
        out.insert(k.clone(), v.clone());
    }
    out
}

fn check(annotations: &BTreeMap<String, String>, table: &Table, diagnostics: &[Diagnostic]) {
    let served = routes(table);
    let baseline = &base().2;
    let error = |f: Option<&str>| diagnostics.iter().any(|d| about(d, Severity::Error, f));
    let warning = |f: &str| {
        diagnostics
            .iter()
            .any(|d| about(d, Severity::Warning, Some(f)))
    };
    let prefix = format!("{}/", translate::annotations::DEFAULT_PREFIX);
    for name in annotations.keys().filter_map(|k| k.strip_prefix(&prefix)) {
        match catalog::lookup(name).map(|e| e.support) {
            Some(Support::Refused(_)) => {
                assert!(error(Some(&field(name))), "refused {name} without an error");
                assert!(served.is_empty(), "served despite {name}");
            }
            Some(Support::NotYet) | None => {
                assert!(warning(&field(name)), "{name} ignored without a warning");
            }
            Some(_) => {}
        }
    }
    if !baseline.is_subset(&served) {
        assert!(
            error(None),
            "routes {baseline:?} became {served:?} without an error"
        );
    }
}

fn describe(table: &Table, path: &str) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::ORIGIN,
        http::HeaderValue::from_static("https://a.example"),
    );
    let config = portcullis_fuzz::proxy_config();
    for host in ["app.example", "www.app.example", "other.example"] {
        for target in ["/", "/api/x?q=1", "/exact", "/app/y", path] {
            for method in [http::Method::GET, http::Method::OPTIONS] {
                proxy::describe(table, config, false, &method, host, target, &headers);
                proxy::describe(table, config, true, &method, host, target, &headers);
            }
        }
    }
}

/// The annotations of an input written as text (how the seeds taken from the repository's
/// manifests are written): after a first line `#!annotations`, one `name: value` per line; a
/// name without `/` gets the ingress-nginx prefix.
fn from_text(text: &str) -> BTreeMap<String, String> {
    let prefix = translate::annotations::DEFAULT_PREFIX;
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| match name.contains('/') {
            true => (name.to_string(), value.to_string()),
            false => (format!("{prefix}/{name}"), value.to_string()),
        })
        .collect()
}

fn run(annotations: BTreeMap<String, String>, path: &str) {
    let (snapshot, options, _) = base();
    let mut snapshot = snapshot.clone();
    let Some(ingress) = snapshot.ingresses.get(&key()) else {
        panic!("the base manifest has no app/fuzz Ingress");
    };
    let mut ingress = (**ingress).clone();
    ingress.metadata.annotations = Some(annotations.clone());
    snapshot.ingresses.insert(key(), Arc::new(ingress));
    let translation = translate(&snapshot, options);
    check(&annotations, &translation.table, &translation.diagnostics);
    portcullis_fuzz::check_table(&translation.table, &[]);
    describe(&translation.table, path);
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = data.strip_prefix(b"#!annotations\n") {
        let text = String::from_utf8_lossy(text);
        run(from_text(&text), "/");
        return;
    }
    let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    let path = match input.path.starts_with('/') {
        true => input.path.clone(),
        false => format!("/{}", input.path),
    };
    run(annotations(&input), &path);
});
