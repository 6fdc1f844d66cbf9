//! Who may use a route: `allowlist-source-range` (and its older name `whitelist-source-range`)
//! and `denylist-source-range`, lists of client networks.

use table::{Cidr, Policy, SourceRanges};

use super::Reader;
use crate::Severity;

const ALLOW: &str = "allowlist-source-range";
const ALLOW_OLD: &str = "whitelist-source-range";
const DENY: &str = "denylist-source-range";

/// Reads the source lists into `policy`. A list that cannot be read closes the route (503)
/// rather than leaving it open to every client, as ingress-nginx does.
pub(super) fn read(r: &mut Reader<'_>, policy: &mut Policy) {
    let allow = match (r.get(ALLOW), r.get(ALLOW_OLD)) {
        (Some(v), Some(_)) => {
            r.note(
                Severity::Warning,
                ALLOW_OLD,
                format!("is ignored: {} is set too", r.field(ALLOW)),
            );
            Some((ALLOW, v))
        }
        (Some(v), None) => Some((ALLOW, v)),
        (None, Some(v)) => Some((ALLOW_OLD, v)),
        (None, None) => None,
    };
    let deny = r.get(DENY).map(|v| (DENY, v));
    let mut ranges = SourceRanges::default();
    for (name, value) in allow.into_iter().chain(deny) {
        match networks(value) {
            Ok(list) if name == DENY => ranges.deny = list,
            Ok(list) => ranges.allow = list,
            Err(why) => {
                r.note(
                    Severity::Error,
                    name,
                    format!("{why}; the route answers 503 until the list is fixed"),
                );
                policy.denied = Some(format!("{} is not a valid list of networks", r.field(name)));
            }
        }
    }
    if ranges != SourceRanges::default() {
        policy.source = Some(ranges);
    }
}

/// A comma-separated list of addresses and networks.
fn networks(value: &str) -> Result<Vec<Cidr>, String> {
    value.split(',').map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_read_whole_or_not_at_all() {
        let list = networks("10.0.0.0/8, 192.0.2.1,2001:db8::/32").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
        for bad in ["", "10.0.0.0/8,", "ww", "10.0.0.0/8\"rm /tmp\",11.0.0.0/8"] {
            assert!(networks(bad).is_err(), "{bad:?}");
        }
    }
}
