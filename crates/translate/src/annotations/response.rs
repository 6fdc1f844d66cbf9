//! What is added to responses: `enable-cors` with its `cors-*` options, and `custom-headers`.

use http::{HeaderName, HeaderValue};
use table::{Cors, CorsOrigins, Policy};

use super::{values, Reader};
use crate::Severity;

const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,\
                               Cache-Control,Content-Type,Range,Authorization";
const DEFAULT_MAX_AGE: u64 = 1_728_000;

pub(super) fn read(r: &mut Reader<'_>, policy: &mut Policy) {
    policy.cors = cors(r);
    custom_headers(r, policy);
}

const CORS_OPTIONS: [&str; 6] = [
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

/// CORS, with every option read (and checked) whether or not CORS is enabled.
fn cors(r: &mut Reader<'_>) -> Option<Cors> {
    let enabled = r.boolean("enable-cors", false);
    let cors = cors_options(r);
    if enabled {
        return Some(cors);
    }
    for name in CORS_OPTIONS {
        if r.get(name).is_some() {
            r.note(
                Severity::Warning,
                name,
                "has no effect without enable-cors: \"true\"",
            );
        }
    }
    None
}

fn cors_options(r: &mut Reader<'_>) -> Cors {
    let origins = match r.get("cors-allow-origin") {
        None => CorsOrigins::Any,
        Some(v) => {
            let mut list = Vec::new();
            let mut any = false;
            for origin in values::list(v) {
                if origin == "*" {
                    any = true;
                } else if valid_origin(origin) {
                    list.push(origin.to_ascii_lowercase());
                } else {
                    r.note(
                        Severity::Error,
                        "cors-allow-origin",
                        format!("{origin:?} is not scheme://host[:port], scheme://*.domain[:port], null or *; skipped"),
                    );
                }
            }
            if any {
                CorsOrigins::Any
            } else {
                CorsOrigins::List(list)
            }
        }
    };
    let header = |r: &mut Reader<'_>, name: &str, valid: fn(&str) -> bool, default: &str| {
        let value = r
            .parse(name, |v| {
                let v = v.trim();
                if valid(v) {
                    Ok(v.to_string())
                } else {
                    Err(format!(
                        "is not a valid list; using the default {default:?}"
                    ))
                }
            })
            .unwrap_or_else(|| default.to_string());
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    };
    let allow_methods = header(r, "cors-allow-methods", valid_methods, DEFAULT_METHODS);
    let allow_headers = header(r, "cors-allow-headers", valid_headers, DEFAULT_HEADERS);
    let expose_headers = r
        .get("cors-expose-headers")
        .is_some()
        .then(|| header(r, "cors-expose-headers", valid_expose, ""))
        .filter(|v| !v.is_empty());
    let allow_credentials = r.boolean("cors-allow-credentials", true);
    let max_age = r
        .parse("cors-max-age", |v| {
            u64::try_from(values::integer(v)?).map_err(|_| "is negative".to_string())
        })
        .unwrap_or(DEFAULT_MAX_AGE);
    Cors {
        origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials,
        max_age,
    }
}

/// `scheme://host[:port]` with an optional `*.` before the host, or `null`.
fn valid_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let rest = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_lowercase())
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_methods(v: &str) -> bool {
    !v.is_empty()
        && v.split(',')
            .map(str::trim)
            .all(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()))
}

fn valid_headers(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b',' | b' '))
}

fn valid_expose(v: &str) -> bool {
    !v.is_empty()
        && v.split(',').map(str::trim).all(|h| {
            h == "*"
                || (!h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
}

/// `custom-headers`: response headers from a ConfigMap in the Ingress's namespace. As in
/// ingress-nginx, a header not listed in `--global-allowed-response-headers`, an invalid header,
/// or a missing ConfigMap denies the Ingress's routes (503) rather than serving without them.
fn custom_headers(r: &mut Reader<'_>, policy: &mut Policy) {
    let namespace = r.namespace();
    let Some(name) = r.parse("custom-headers", |v| {
        values::local_object(v, namespace).map(str::to_string)
    }) else {
        return;
    };
    let deny = |r: &mut Reader<'_>, policy: &mut Policy, why: String| {
        r.note(
            Severity::Error,
            "custom-headers",
            format!("{why}; requests to this Ingress's paths get 503"),
        );
        policy.denied = Some(format!("custom-headers: {why}"));
    };
    let Some(map) = r.config_map(&name) else {
        return deny(r, policy, format!("ConfigMap {namespace}/{name} not found"));
    };
    let allowed = &r.options().allowed_response_headers;
    let mut headers = Vec::new();
    for (key, value) in map.data.iter().flatten() {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(key)) {
            let why = format!(
                "header {key:?} from ConfigMap {namespace}/{name} is not allowed (allowed by --global-allowed-response-headers: {})",
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            );
            return deny(r, policy, why);
        }
        let name_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let parsed = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(value),
        );
        match parsed {
            (Ok(n), Ok(v)) if name_ok && !value.is_empty() => headers.push((n, v)),
            _ => {
                let why = format!("ConfigMap {namespace}/{name} has an invalid header {key:?}");
                return deny(r, policy, why);
            }
        }
    }
    headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    policy.response_headers = headers;
}
