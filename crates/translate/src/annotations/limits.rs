//! Per-client limits: `limit-rps`, `limit-rpm`, `limit-connections`, `limit-burst-multiplier`
//! and `limit-allowlist` (older name `limit-whitelist`), with ingress-nginx's meaning: counted
//! per client address and per replica, shared by every route of the Ingress, a burst of the rate
//! times the multiplier (default 5) admitted at once and anything beyond it refused.

use table::{Cidr, Policy, RateLimit};

use super::Reader;
use crate::Severity;

const RPS: &str = "limit-rps";
const RPM: &str = "limit-rpm";
const CONNECTIONS: &str = "limit-connections";
const MULTIPLIER: &str = "limit-burst-multiplier";
const ALLOW: &str = "limit-allowlist";
const ALLOW_OLD: &str = "limit-whitelist";
/// ingress-nginx's default `limit-burst-multiplier`.
const DEFAULT_MULTIPLIER: u32 = 5;
/// The largest rate, concurrency or multiplier accepted.
const MAX: u32 = 1_000_000;

/// Reads the limits into `policy`. A bad value is reported and that annotation ignored; the
/// rest of the Ingress is served.
pub(super) fn read(r: &mut Reader<'_>, policy: &mut Policy) {
    let rps = r.parse(RPS, count).filter(|&n| n > 0);
    let rpm = r.parse(RPM, count).filter(|&n| n > 0);
    let connections = r.parse(CONNECTIONS, count).filter(|&n| n > 0);
    let fallback = format!("using the default ({DEFAULT_MULTIPLIER})");
    let multiplier = r.parse_or(MULTIPLIER, count, &fallback);
    let allow = match (r.get(ALLOW), r.get(ALLOW_OLD)) {
        (Some(_), Some(_)) => {
            let note = format!("is ignored: {} is set too", r.field(ALLOW));
            r.note(Severity::Warning, ALLOW_OLD, note);
            Some(ALLOW)
        }
        (Some(_), None) => Some(ALLOW),
        (None, Some(_)) => Some(ALLOW_OLD),
        (None, None) => None,
    };
    let exempt = match allow.and_then(|name| Some((name, r.get(name)?))) {
        Some((name, value)) => networks(value).unwrap_or_else(|why| {
            let why = format!("{why}; no client is exempt from the limits");
            r.note(Severity::Error, name, why);
            Vec::new()
        }),
        None => Vec::new(),
    };
    if rps.is_none() && rpm.is_none() && connections.is_none() {
        let idle = multiplier.map(|_| MULTIPLIER).into_iter().chain(allow);
        for name in idle {
            r.note(
                Severity::Warning,
                name,
                "has no effect without limit-rps, limit-rpm or limit-connections; ignored",
            );
        }
        return;
    }
    policy.rate_limit = Some(RateLimit {
        zone: format!("{}/{}", r.namespace(), r.name()),
        rps,
        rpm,
        connections,
        burst_multiplier: multiplier.unwrap_or(DEFAULT_MULTIPLIER),
        exempt,
    });
}

/// A whole number from 0 to [`MAX`].
fn count(value: &str) -> Result<u32, String> {
    let n = super::values::integer(value)?;
    if n < 0 {
        return Err("is negative".into());
    }
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= MAX)
        .ok_or_else(|| format!("is larger than {MAX}"))
}

/// A comma-separated list of addresses and networks.
fn networks(value: &str) -> Result<Vec<Cidr>, String> {
    value.split(',').map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_whole_and_bounded() {
        assert_eq!(count(" 10 "), Ok(10));
        assert_eq!(count("0"), Ok(0));
        assert_eq!(count("1000000"), Ok(1_000_000));
        for bad in ["-1", "1.5", "ten", "", "1000001", "99999999999999999999"] {
            assert!(count(bad).is_err(), "{bad:?}");
        }
    }
}
