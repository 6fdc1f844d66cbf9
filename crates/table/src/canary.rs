//! Canary releases: a route's alternative backend and when a request goes to it (ingress-nginx's
//! `canary-*` annotations).

use serde::{Serialize, Serializer};

use crate::backend::BackendId;
use crate::balance::Balance;

/// The alternative backend of a route and the rules that send a request to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Canary {
    /// The canary Ingress's backend.
    pub backend: BackendId,
    /// The canary Ingress, `namespace/name`.
    pub ingress: String,
    /// `canary-by-header` and how its value is matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<CanaryHeader>,
    /// `canary-by-cookie`: the cookie whose value `always` or `never` decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `canary-weight`: requests out of [`Canary::total`] sent to the canary.
    pub weight: u32,
    /// `canary-weight-total` (at least 1).
    pub total: u32,
    /// `affinity-canary-behavior: sticky` (the default): a request holding the canary's affinity
    /// cookie stays on the canary; `legacy` leaves affinity out of the choice.
    pub sticky: bool,
    /// The canary Ingress's own balancing settings, used for the canary backend's endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
}

/// `canary-by-header`: the header (lower case) and what its value must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CanaryHeader {
    /// The header name, lower case.
    pub name: String,
    /// How the value is matched.
    pub matches: HeaderMatch,
}

/// How a `canary-by-header` value sends a request to the canary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum HeaderMatch {
    /// `always` sends it to the canary, `never` to the main backend; other values decide nothing.
    AlwaysNever,
    /// `canary-by-header-value`: exactly this value sends it to the canary.
    Value(String),
    /// `canary-by-header-pattern`: a value the expression matches (anywhere) sends it to the
    /// canary.
    Pattern(CanaryPattern),
}

/// A compiled `canary-by-header-pattern`; compared and shown by its source.
#[derive(Clone, Debug)]
pub struct CanaryPattern(pub regex::Regex);

impl PartialEq for CanaryPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for CanaryPattern {}

impl Serialize for CanaryPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl Canary {
    /// Whether a request goes to the canary: by its `header` value (the first field named
    /// [`CanaryHeader::name`]), else by its `cookie` value, else by weight, with `roll` a
    /// number drawn uniformly from `0..total` (called only when the weight decides).
    pub fn chooses(
        &self,
        header: Option<&[u8]>,
        cookie: Option<&[u8]>,
        roll: impl FnOnce(u32) -> u32,
    ) -> bool {
        if let (Some(rule), Some(value)) = (&self.header, header) {
            match &rule.matches {
                HeaderMatch::Value(want) => {
                    if value == want.as_bytes() {
                        return true;
                    }
                }
                HeaderMatch::Pattern(p) => {
                    if std::str::from_utf8(value).is_ok_and(|v| p.0.is_match(v)) {
                        return true;
                    }
                }
                HeaderMatch::AlwaysNever => match value {
                    b"always" => return true,
                    b"never" => return false,
                    _ => {}
                },
            }
        }
        match cookie {
            Some(b"always") if self.cookie.is_some() => return true,
            Some(b"never") if self.cookie.is_some() => return false,
            _ => {}
        }
        match self.weight {
            0 => false,
            w if w >= self.total => true,
            w => roll(self.total) < w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(matches: Option<HeaderMatch>, weight: u32) -> Canary {
        Canary {
            backend: BackendId(1),
            ingress: "default/c".into(),
            header: matches.map(|matches| CanaryHeader {
                name: "x-canary".into(),
                matches,
            }),
            cookie: Some("canary".into()),
            weight,
            total: 100,
            sticky: true,
            balance: None,
        }
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = canary(Some(HeaderMatch::AlwaysNever), 100);
        assert!(c.chooses(Some(b"always"), Some(b"never"), |_| 99));
        assert!(!c.chooses(Some(b"never"), Some(b"always"), |_| 0));
        assert!(!c.chooses(Some(b"other"), Some(b"never"), |_| 0));
        assert!(c.chooses(Some(b"other"), Some(b"other"), |_| 99));
        let c = canary(None, 0);
        assert!(c.chooses(Some(b"never"), Some(b"always"), |_| 0));
        assert!(!c.chooses(None, None, |_| 0));
    }

    #[test]
    fn value_and_pattern_match_or_fall_through() {
        let c = canary(Some(HeaderMatch::Value("blue".into())), 0);
        assert!(c.chooses(Some(b"blue"), None, |_| 0));
        assert!(!c.chooses(Some(b"always"), None, |_| 0));
        assert!(c.chooses(Some(b"green"), Some(b"always"), |_| 0));
        let re = regex::Regex::new("^v[0-9]+$").unwrap();
        let c = canary(Some(HeaderMatch::Pattern(CanaryPattern(re))), 0);
        assert!(c.chooses(Some(b"v12"), None, |_| 0));
        assert!(!c.chooses(Some(b"x12"), None, |_| 0));
    }

    #[test]
    fn weight_out_of_total() {
        let c = canary(None, 30);
        assert!(c.chooses(None, None, |_| 29));
        assert!(!c.chooses(None, None, |_| 30));
    }
}
