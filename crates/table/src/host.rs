//! Host names as written in Ingress rules and as received in requests.

use std::borrow::Cow;

use serde::Serialize;

/// The host of an Ingress rule, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum HostPattern {
    /// No host: the rule applies to every Host header.
    Any,
    /// An exact host name (lower-case).
    Exact(String),
    /// `*.suffix`: exactly one extra DNS label in front of `suffix` (stored without `*.`).
    Wildcard(String),
}

impl HostPattern {
    /// Parses the `host` field of an Ingress rule; the error says what is wrong with it.
    pub fn parse(host: &str) -> Result<HostPattern, String> {
        if host.is_empty() {
            return Ok(HostPattern::Any);
        }
        let mut lower = host.to_ascii_lowercase();
        let wildcard = lower.starts_with("*.");
        if wildcard {
            lower.drain(..2);
        }
        let name = lower.as_str();
        if name.is_empty() {
            return Err(format!("{host:?} has no domain after the wildcard"));
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() || host.contains(':') {
            return Err(format!(
                "{host:?} is an IP address or has a port; Ingress hosts are DNS names"
            ));
        }
        for label in name.split('.') {
            let valid = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(format!(
                    "{host:?} is not a valid DNS name (label {label:?}); a wildcard may only be the whole first label"
                ));
            }
        }
        Ok(if wildcard {
            HostPattern::Wildcard(lower)
        } else {
            HostPattern::Exact(lower)
        })
    }

    /// The pattern as it would be written in a rule (`""`, `a.example.com`, `*.example.com`).
    pub fn display(&self) -> String {
        match self {
            HostPattern::Any => String::new(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
        }
    }

    /// Whether a normalized request host matches this pattern (the slow, obviously-correct way).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

/// A Host header or `:authority` reduced to what routing compares: lower-case, without a port and
/// without a trailing dot. Allocates only when the input needs changing.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_port_and_dot() {
        assert_eq!(normalize_host("Foo.Example.COM:8080"), "foo.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:443"), "::1");
        assert_eq!(normalize_host("10.0.0.1"), "10.0.0.1");
        assert!(matches!(normalize_host("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn parses_patterns() {
        assert_eq!(HostPattern::parse(""), Ok(HostPattern::Any));
        assert_eq!(
            HostPattern::parse("*.Foo.com"),
            Ok(HostPattern::Wildcard("foo.com".into()))
        );
        assert_eq!(
            HostPattern::parse("foo.bar.com"),
            Ok(HostPattern::Exact("foo.bar.com".into()))
        );
        for bad in [
            "*.",
            "foo.*.com",
            "a..b",
            "1.2.3.4",
            "h:80",
            "-a.com",
            "a_b.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let p = HostPattern::Wildcard("foo.com".into());
        assert!(p.matches("bar.foo.com"));
        assert!(!p.matches("baz.bar.foo.com"));
        assert!(!p.matches("foo.com"));
        assert!(!p.matches(".foo.com"));
        assert!(!p.matches("barfoo.com"));
    }
}
