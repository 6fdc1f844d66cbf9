//! Which endpoint serves a request: `affinity: cookie` with `affinity-mode` and the
//! `session-cookie-*` settings, `upstream-hash-by`, and `load-balance`.

use table::{Affinity, AffinityMode, Algorithm, Balance, HashKey, Policy, SameSite};

use super::{values, Reader};
use crate::Severity;

/// The cookie name ingress-nginx uses when `session-cookie-name` is not set.
pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

/// Reads the balancing annotations into `policy`; a bad value is reported and that setting
/// left at its default.
pub(super) fn read(r: &mut Reader<'_>, policy: &mut Policy) {
    let algorithm = r
        .parse_or("load-balance", Algorithm::parse, "using round_robin")
        .unwrap_or_default();
    let hash_by = r.parse("upstream-hash-by", HashKey::parse);
    let affinity = match r.get("affinity") {
        Some("cookie") => Some(cookie(r)),
        other => {
            if let Some(other) = other {
                r.note(
                    Severity::Error,
                    "affinity",
                    format!("{other:?} is not an affinity type (only \"cookie\" is); no affinity"),
                );
            }
            r.inert(COOKIE_SETTINGS, "affinity: cookie", |r| {
                cookie(r);
            });
            None
        }
    };
    if algorithm != Algorithm::RoundRobin || hash_by.is_some() || affinity.is_some() {
        policy.balance = Some(Balance {
            algorithm,
            hash_by,
            affinity,
        });
    }
}

/// The annotations that only mean something with `affinity: cookie`.
const COOKIE_SETTINGS: &[&str] = &[
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-samesite",
    "session-cookie-secure",
    "session-cookie-conditional-samesite-none",
    "session-cookie-change-on-failure",
];

/// The cookie settings of `affinity: cookie`.
fn cookie(r: &mut Reader<'_>) -> Affinity {
    let mode = r
        .parse_or(
            "affinity-mode",
            |v| match v {
                "balanced" => Ok(AffinityMode::Balanced),
                "persistent" => Ok(AffinityMode::Persistent),
                _ => Err("is not an affinity mode (balanced or persistent)".to_string()),
            },
            "using balanced",
        )
        .unwrap_or_default();
    let name = r
        .parse_or("session-cookie-name", token, "using INGRESSCOOKIE")
        .unwrap_or(DEFAULT_COOKIE)
        .to_string();
    let path = r
        .parse("session-cookie-path", attribute)
        .map(str::to_string);
    let domain = r
        .parse("session-cookie-domain", attribute)
        .map(str::to_string);
    let max_age = r.parse("session-cookie-max-age", values::integer);
    let expires = r.parse("session-cookie-expires", values::integer);
    let same_site = r.parse("session-cookie-samesite", SameSite::parse);
    Affinity {
        mode,
        name,
        path,
        domain,
        max_age,
        expires,
        secure: r.boolean("session-cookie-secure", false),
        same_site,
        conditional_same_site_none: r.boolean("session-cookie-conditional-samesite-none", false),
        change_on_failure: r.boolean("session-cookie-change-on-failure", false),
    }
}

/// A cookie name: an HTTP token.
fn token(value: &str) -> Result<&str, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(value)
        .ok_or_else(|| "is not a valid cookie name".to_string())
}

/// A cookie attribute value: printable, without `;` or `,`.
fn attribute(value: &str) -> Result<&str, String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    ok.then_some(value)
        .ok_or_else(|| "is not a valid cookie attribute value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_and_attributes_cannot_carry_other_fields() {
        assert_eq!(token("route_1"), Ok("route_1"));
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            assert!(token(bad).is_err(), "{bad:?}");
        }
        assert_eq!(attribute("/api"), Ok("/api"));
        for bad in ["", "/a; Secure", "a b", "x,y"] {
            assert!(attribute(bad).is_err(), "{bad:?}");
        }
    }
}
