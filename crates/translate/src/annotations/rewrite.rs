//! Paths and redirects: `use-regex`, `rewrite-target`, `app-root`, `x-forwarded-prefix`,
//! `permanent-redirect`, `temporal-redirect`, `from-to-www-redirect`, `ssl-redirect`,
//! `force-ssl-redirect`.

use http::HeaderValue;
use table::{Policy, Redirect, RewriteTarget};

use super::{values, Reader, Rules};
use crate::Severity;

pub(super) fn read(r: &mut Reader<'_>, rules: &mut Rules, policy: &mut Policy) {
    rules.ssl_redirect = r.boolean("ssl-redirect", true);
    rules.force_ssl_redirect = r.boolean("force-ssl-redirect", false);
    rules.use_regex = r.boolean("use-regex", false);
    policy.rewrite = r
        .parse("rewrite-target", |v| {
            let v = values::path_with_captures(v)?;
            RewriteTarget::parse(v)
        })
        .filter(|t| !t.written.is_empty());
    policy.app_root = r.parse("app-root", |v| {
        let v = values::path_with_captures(v)?;
        if !v.starts_with('/') || v.contains('$') {
            return Err("is not an absolute path (it must start with /)".into());
        }
        Ok(v.to_string())
    });
    policy.x_forwarded_prefix = r.parse("x-forwarded-prefix", |v| {
        let v = values::path_with_captures(v)?;
        HeaderValue::from_str(v).map_err(|_| "is not a header value".to_string())
    });
    if policy.x_forwarded_prefix.is_some() && policy.rewrite.is_none() {
        r.note(
            Severity::Info,
            "x-forwarded-prefix",
            "is only sent with a rewrite-target (as in ingress-nginx); no path of this Ingress is rewritten",
        );
    }
    policy.from_to_www = r.boolean("from-to-www-redirect", false);
    aliases(r, rules);
    policy.redirect = redirect(r);
}

/// `server-alias`: a comma-separated list of exact host names.
fn aliases(r: &mut Reader<'_>, rules: &mut Rules) {
    let Some(value) = r.get("server-alias") else {
        return;
    };
    let field = r.field("server-alias");
    for alias in values::list(value) {
        match table::HostPattern::parse(alias) {
            Ok(table::HostPattern::Exact(name)) => rules.aliases.push((name, field.clone())),
            Ok(_) | Err(_) => r.note(
                Severity::Error,
                "server-alias",
                format!("{alias:?} is not an exact host name (wildcards and regular expressions are not supported); skipped"),
            ),
        }
    }
}

/// `temporal-redirect` (302 unless `temporal-redirect-code` says otherwise) wins over
/// `permanent-redirect` (301 unless `permanent-redirect-code`), as in ingress-nginx; a code out of
/// range falls back to the default with a warning.
fn redirect(r: &mut Reader<'_>) -> Option<Redirect> {
    let forms = [
        (
            "temporal-redirect",
            "temporal-redirect-code",
            302,
            300..=307,
        ),
        (
            "permanent-redirect",
            "permanent-redirect-code",
            301,
            300..=308,
        ),
    ];
    let mut found = None;
    for (name, code_name, default, range) in forms {
        let location = r.parse(name, |v| values::url(v).map(str::to_string));
        let code = r.parse(code_name, values::integer);
        let Some(location) = location else {
            if code.is_some() {
                r.note(
                    Severity::Warning,
                    code_name,
                    format!("has no effect without {name}"),
                );
            }
            continue;
        };
        if found.is_some() {
            r.note(
                Severity::Warning,
                name,
                "is ignored: temporal-redirect takes precedence, as in ingress-nginx",
            );
            continue;
        }
        let status = match code {
            Some(code) if range.contains(&code) => code as u16,
            Some(code) => {
                r.note(
                    Severity::Warning,
                    code_name,
                    format!(
                        "{code} is not between {} and {}; using {default}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
            None => default,
        };
        found = Some(Redirect { location, status });
    }
    found
}
