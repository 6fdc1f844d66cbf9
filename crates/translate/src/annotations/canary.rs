//! `canary: "true"` and the `canary-by-*` and `canary-weight*` settings: an Ingress whose
//! backend is the alternative of the routes of other Ingresses on the same host and path.

use table::{BackendId, Canary, CanaryHeader, CanaryPattern, HeaderMatch, Policy};

use super::{balance, catalog, values, Reader, Rules};
use crate::Severity;

/// The settings read on a canary Ingress; every other implemented annotation has no effect there.
const CANARY_SETTINGS: &[&str] = &[
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
    "affinity-canary-behavior",
];

/// `canary-weight-total` when not set.
const DEFAULT_TOTAL: u32 = 100;

/// Reads `canary` and, on a canary Ingress, its settings into `rules.canary`; returns whether
/// the Ingress is a canary (then nothing else of its annotations applies).
pub(super) fn read(r: &mut Reader<'_>, rules: &mut Rules) -> bool {
    if !r.boolean("canary", false) {
        r.inert(&CANARY_SETTINGS[1..], "canary: \"true\"", |r| {
            settings(r);
        });
        return false;
    }
    let mut canary = settings(r);
    let mut own = Policy::default();
    balance::read(r, &mut own);
    canary.balance = own.balance;
    rules.canary = Some(Box::new(canary));
    ignored(r);
    true
}

/// The canary settings (with a placeholder backend and no balancing).
fn settings(r: &mut Reader<'_>) -> Canary {
    let name = r.parse("canary-by-header", header_name);
    let matches = matcher(r);
    let header = name.map(|name| CanaryHeader {
        name: name.to_ascii_lowercase(),
        matches,
    });
    if header.is_none() {
        for name in ["canary-by-header-value", "canary-by-header-pattern"] {
            if r.get(name).is_some() {
                r.note(
                    Severity::Warning,
                    name,
                    "has no effect without canary-by-header; ignored",
                );
            }
        }
    }
    let cookie = r.parse("canary-by-cookie", header_name).map(str::to_string);
    let total = r
        .parse_or("canary-weight-total", positive, "using 100")
        .unwrap_or(DEFAULT_TOTAL);
    let weight = r
        .parse_or(
            "canary-weight",
            |v| {
                let w = values::integer(v)?;
                u32::try_from(w)
                    .ok()
                    .filter(|w| *w <= total)
                    .ok_or_else(|| format!("is not a whole number from 0 to {total}"))
            },
            "using 0",
        )
        .unwrap_or(0);
    let sticky = r
        .parse_or(
            "affinity-canary-behavior",
            |v| match v {
                "sticky" => Ok(true),
                "legacy" => Ok(false),
                _ => Err("is not sticky or legacy".to_string()),
            },
            "using sticky",
        )
        .unwrap_or(true);
    Canary {
        backend: BackendId(0),
        ingress: crate::key_text(r.key, 0),
        header,
        cookie,
        weight,
        total,
        sticky,
        balance: None,
    }
}

/// `canary-by-header-value`, else `canary-by-header-pattern`, else `always`/`never`.
fn matcher(r: &mut Reader<'_>) -> HeaderMatch {
    if let Some(value) = r.parse("canary-by-header-value", basic) {
        if r.get("canary-by-header-pattern").is_some() {
            r.note(
                Severity::Warning,
                "canary-by-header-pattern",
                "has no effect with canary-by-header-value; ignored",
            );
        }
        return HeaderMatch::Value(value.to_string());
    }
    let pattern = r.parse("canary-by-header-pattern", |v| {
        if !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:^$[](){}*+?|&=\\".contains(&b))
        {
            return Err(
                "has characters other than letters, digits and -._~/:^$[](){}*+?|&=\\".to_string(),
            );
        }
        regex::Regex::new(v).map_err(|_| "is not a valid regular expression".to_string())
    });
    match pattern {
        Some(re) => HeaderMatch::Pattern(CanaryPattern(re)),
        None => HeaderMatch::AlwaysNever,
    }
}

/// Warns about the implemented annotations a canary Ingress carries besides its canary and
/// balancing settings.
fn ignored(r: &mut Reader<'_>) {
    let names: Vec<&str> = r
        .values
        .keys()
        .copied()
        .filter(|name| !r.used.contains(name) && !CANARY_SETTINGS.contains(name))
        .filter(|name| {
            catalog::lookup(name).is_some_and(|e| {
                matches!(
                    e.support,
                    catalog::Support::Supported | catalog::Support::Partly(_)
                )
            })
        })
        .collect();
    for name in names {
        r.get(name);
        r.note(
            Severity::Warning,
            name,
            "has no effect on a canary Ingress (it contributes only its backend and balancing); ignored",
        );
    }
}

/// A header or cookie name: an HTTP token.
fn header_name(value: &str) -> Result<&str, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(value)
        .ok_or_else(|| "is not a valid header or cookie name".to_string())
}

/// A header value of letters, digits and `-._~/:` (as ingress-nginx accepts).
fn basic(value: &str) -> Result<&str, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:".contains(&b));
    ok.then_some(value)
        .ok_or_else(|| "has characters other than letters, digits and -._~/:".to_string())
}

/// A whole number of at least 1.
fn positive(value: &str) -> Result<u32, String> {
    values::integer(value)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| "is not a whole number of at least 1".to_string())
}
