//! What the fuzz targets share: building a snapshot from parsed manifests the way the folder
//! source does, and the checks every translated table must pass.

use std::sync::OnceLock;

use model::{parse_manifests, Parsed, Snapshot};
use table::{HostPattern, Table};

/// A snapshot of every object `text` holds, read as the folder source reads a file: objects and
/// objects converted from older API versions are kept; skipped kinds and errors are not.
pub fn snapshot_of(text: &str, origin: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for parsed in parse_manifests(text, origin) {
        match parsed {
            Ok(Parsed::Object(object)) | Ok(Parsed::Converted { object, .. }) => {
                snapshot.insert(object);
            }
            Ok(Parsed::Skipped { .. }) | Err(_) => {}
        }
    }
    snapshot
}

/// A host name that a pattern as written in a rule matches (`*.a.b` → `x.a.b`).
pub fn host_for(pattern: &str) -> String {
    match pattern.strip_prefix("*.") {
        Some(suffix) => format!("x.{suffix}"),
        None => pattern.to_string(),
    }
}

/// The proxy settings the targets describe requests with (the defaults).
pub fn proxy_config() -> &'static proxy::ProxyConfig {
    static CONFIG: OnceLock<proxy::ProxyConfig> = OnceLock::new();
    CONFIG.get_or_init(|| proxy::ProxyConfig {
        workers: 1,
        ..proxy::ProxyConfig::default()
    })
}

/// Checks a translated table: for the path of every route, the fast lookup picks what the
/// reference explanation picks, and describing the request does not panic.
pub fn check_table(table: &Table, extra_paths: &[&str]) {
    let headers = http::HeaderMap::new();
    for vhost in table.virtual_hosts() {
        let host = host_for(&vhost.name);
        let routes = vhost.exact.values().chain(vhost.prefix.values());
        let paths = routes
            .map(|r| r.origin.path.as_str())
            .chain(extra_paths.iter().copied());
        for path in paths {
            let fast = table.lookup(&host, path).map(|m| m.route.origin.clone());
            let slow = table.explain(&host, path).selected;
            assert_eq!(fast, slow, "lookup and explain disagree on {host} {path}");
            if HostPattern::parse(&vhost.name).is_ok() {
                for https in [false, true] {
                    proxy::describe(
                        table,
                        proxy_config(),
                        https,
                        &http::Method::GET,
                        &host,
                        path,
                        &headers,
                    );
                }
            }
        }
    }
}
