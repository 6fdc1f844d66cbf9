//! Portcullis's own annotations, under `portcullis.io/`: active health checks of a route's
//! backend.

use std::time::Duration;

use table::{HealthCheck, Policy};

use super::Reader;
use crate::Severity;

/// The prefix of Portcullis's own annotations.
pub const PREFIX: &str = "portcullis.io";

const PATH: &str = "health-check-path";
const INTERVAL: &str = "health-check-interval";
const TIMEOUT: &str = "health-check-timeout";
const HEALTHY: &str = "health-check-healthy-threshold";
const UNHEALTHY: &str = "health-check-unhealthy-threshold";
/// Every annotation Portcullis reads under its own prefix.
pub const NAMES: [&str; 5] = [PATH, INTERVAL, TIMEOUT, HEALTHY, UNHEALTHY];

/// Reads the `portcullis.io/` annotations into `policy`.
pub(super) fn read(r: &mut Reader<'_>, policy: &mut Policy) {
    let unknown: Vec<&str> = r
        .values
        .keys()
        .copied()
        .filter(|name| !NAMES.contains(name))
        .collect();
    for name in unknown {
        r.note(
            Severity::Warning,
            name,
            format!(
                "is not a Portcullis annotation; ignored (known: {})",
                NAMES.join(", ")
            ),
        );
    }
    let Some(path) = r.parse(PATH, check_path) else {
        for name in &NAMES[1..] {
            if r.get(name).is_some() {
                r.note(
                    Severity::Warning,
                    name,
                    format!("has no effect without {}; ignored", r.field(PATH)),
                );
            }
        }
        return;
    };
    let mut check = HealthCheck::new(path);
    if let Some(d) = r.parse_or(INTERVAL, interval, "using 10s") {
        check.interval = d;
    }
    let given = r.parse_or(TIMEOUT, timeout, "using 2s");
    if let Some(d) = given {
        check.timeout = d;
    }
    if let Some(n) = r.parse_or(HEALTHY, threshold, "using 2") {
        check.healthy_threshold = n;
    }
    if let Some(n) = r.parse_or(UNHEALTHY, threshold, "using 3") {
        check.unhealthy_threshold = n;
    }
    if given.is_some() && check.timeout > check.interval {
        r.note(
            Severity::Warning,
            TIMEOUT,
            format!(
                "is longer than the interval ({:?}); checks time out after the interval instead",
                check.interval
            ),
        );
    }
    // The default timeout shrinks to a shorter interval without a word.
    check.timeout = check.timeout.min(check.interval);
    policy.health_check = Some(check);
}

/// An absolute path of visible ASCII, at most 1 KiB.
fn check_path(value: &str) -> Result<String, String> {
    let v = value.trim();
    if !v.starts_with('/') {
        return Err("is not a path starting with /".into());
    }
    if v.len() > 1024 {
        return Err("is longer than 1024 characters".into());
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("has a space or a character that is not visible ASCII".into());
    }
    Ok(v.to_string())
}

/// A duration: a whole number with `ms`, `s` or `m` (bare numbers are seconds).
fn duration(value: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "is not a duration (a whole number with ms, s or m, e.g. 5s)";
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| EXPECTED.to_string())?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => return Err(EXPECTED.into()),
    };
    ms.map(Duration::from_millis).ok_or_else(|| EXPECTED.into())
}

/// How often to check: 100 ms to an hour.
fn interval(value: &str) -> Result<Duration, String> {
    let d = duration(value)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err("is outside 100ms..1h".into());
    }
    Ok(d)
}

/// How long a check may take: 10 ms to a minute.
fn timeout(value: &str) -> Result<Duration, String> {
    let d = duration(value)?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(60) {
        return Err("is outside 10ms..60s".into());
    }
    Ok(d)
}

/// A count of checks in a row: 1 to 100.
fn threshold(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n @ 1..=100) => Ok(n),
        _ => Err("is not a whole number from 1 to 100".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "5h", "-1s", "1.5s", "5 s", "99999999999999999999m"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
        assert!(interval("50ms").is_err());
        assert!(interval("2h").is_err());
        assert!(timeout("5ms").is_err());
    }

    #[test]
    fn paths_and_thresholds_are_checked() {
        assert_eq!(
            check_path(" /healthz?full=1 "),
            Ok("/healthz?full=1".into())
        );
        for bad in ["healthz", "/a b", "/a\u{7f}", ""] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(threshold("1"), Ok(1));
        for bad in ["0", "101", "-1", "x"] {
            assert!(threshold(bad).is_err(), "{bad:?}");
        }
    }
}
