//! Recent request and error rates for the admin page, from the data plane's cumulative counters.
//!
//! Nothing runs in the background: a sample is taken when the page asks for the status and the
//! last sample is older than [`MIN_INTERVAL`]; a rate is the difference between the last two
//! samples over the time between them. Two samples are kept, each with one entry per backend of
//! the served table, so memory stays bounded by the table whatever the traffic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proxy::stats::Totals;
use table::{Route, Table};

/// The shortest time between two samples: viewers polling faster share the last one.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// A previous sample older than this is dropped rather than averaged over (the page was closed).
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Requests and how many of them were answered with a 5xx.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Of them, answered with a status of 500 or more.
    pub errors: u64,
}

impl Counts {
    fn add(&mut self, status: u16, n: u64) {
        self.requests += n;
        if status >= 500 {
            self.errors += n;
        }
    }
}

/// Cumulative counts at one moment: by backend name, and over all requests (unrouted included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// By backend name (`namespace/service:port`).
    pub backends: HashMap<String, Counts>,
    /// Every request.
    pub total: Counts,
}

/// Requests and errors per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rate {
    /// Requests per second.
    pub requests: f64,
    /// 5xx answers per second.
    pub errors: f64,
}

/// The rates between two samples, and the seconds they span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    /// By backend name; backends without a previous count are absent.
    pub backends: HashMap<String, Rate>,
    /// Over all requests.
    pub total: Rate,
    /// The time the rates are averaged over.
    pub window: Duration,
}

impl Rates {
    /// The rate of the backend named `name` (zero when it had no traffic or is new).
    pub fn backend(&self, name: &str) -> Rate {
        self.backends.get(name).copied().unwrap_or_default()
    }
}

/// The counts of `totals` attributed to the backends of `table`. Counters are keyed by what a
/// route is (Ingress, host, path as written), so each is matched to the route of `table` that
/// carries the same; counters of routes the table no longer has are left out.
pub fn sample(table: &Table, totals: &Totals) -> Sample {
    let mut owner: HashMap<(&str, &str, &str), &str> = HashMap::new();
    let routes = table
        .virtual_hosts()
        .flat_map(|v| v.exact.values().chain(v.prefix.values()))
        .chain(table.default_backend.iter());
    for route in routes {
        owner
            .entry(route_key(route))
            .or_insert_with(|| table.backend(route.backend).name.as_str());
    }
    let mut out = Sample::default();
    for (labels, counters) in &totals.routes {
        // The inverse of how the counters split an Ingress's `namespace/name`.
        let ingress = if labels.namespace.is_empty() {
            labels.ingress.clone()
        } else {
            format!("{}/{}", labels.namespace, labels.ingress)
        };
        let backend = owner
            .get(&(ingress.as_str(), labels.host.as_str(), labels.path.as_str()))
            .copied();
        for (status, _, n) in counters.requests() {
            out.total.add(status, n);
            if let Some(name) = backend {
                out.backends
                    .entry(name.to_string())
                    .or_default()
                    .add(status, n);
            }
        }
    }
    out
}

fn route_key(route: &Route) -> (&str, &str, &str) {
    (
        route.origin.ingress.as_str(),
        route.origin.host.as_str(),
        route.origin.path.as_str(),
    )
}

fn per_second(now: Counts, before: Counts, secs: f64) -> Rate {
    // A backend whose routes changed can count less than before: no negative rates.
    Rate {
        requests: now.requests.saturating_sub(before.requests) as f64 / secs,
        errors: now.errors.saturating_sub(before.errors) as f64 / secs,
    }
}

/// The rates from `before` to `now`, `elapsed` apart.
pub fn between(before: &Sample, now: &Sample, elapsed: Duration) -> Rates {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return Rates::default();
    }
    let backends = now
        .backends
        .iter()
        .map(|(name, counts)| {
            let was = before.backends.get(name).copied().unwrap_or_default();
            (name.clone(), per_second(*counts, was, secs))
        })
        .collect();
    Rates {
        backends,
        total: per_second(now.total, before.total, secs),
        window: elapsed,
    }
}

#[derive(Debug, Default)]
struct Held {
    last: Option<(Instant, Sample)>,
    rates: Option<Rates>,
}

/// The last sample and the rates it gave, shared by every viewer of the admin page.
#[derive(Debug, Default)]
pub struct Sampler {
    held: Mutex<Held>,
}

impl Sampler {
    /// Whether a new sample is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.last
            .as_ref()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= MIN_INTERVAL)
    }

    /// Takes `sample`, taken at `now`, as the newest; the rates are then those from the previous
    /// sample to it, unless the previous one is older than [`MAX_AGE`].
    pub fn record(&self, now: Instant, sample: Sample) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.rates = match &held.last {
            Some((at, before)) if now.saturating_duration_since(*at) <= MAX_AGE => {
                Some(between(before, &sample, now.saturating_duration_since(*at)))
            }
            _ => None,
        };
        held.last = Some((now, sample));
    }

    /// The latest rates (`None` until two samples close enough in time were taken).
    pub fn rates(&self) -> Option<Rates> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.rates.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(backend: &str, requests: u64, errors: u64) -> Sample {
        let counts = Counts { requests, errors };
        Sample {
            backends: HashMap::from([(backend.to_string(), counts)]),
            total: counts,
        }
    }

    #[test]
    fn rates_are_differences_over_the_time_between_samples() {
        let r = between(
            &sample("b", 10, 1),
            &sample("b", 40, 7),
            Duration::from_secs(6),
        );
        assert_eq!(
            r.backend("b"),
            Rate {
                requests: 5.0,
                errors: 1.0
            }
        );
        assert_eq!(r.total.requests, 5.0);
        assert_eq!(r.backend("other"), Rate::default());
        assert_eq!(r.window, Duration::from_secs(6));
    }

    #[test]
    fn a_count_that_went_down_gives_no_negative_rate() {
        let r = between(
            &sample("b", 40, 7),
            &sample("b", 10, 1),
            Duration::from_secs(1),
        );
        assert_eq!(r.backend("b"), Rate::default());
    }

    #[test]
    fn the_sampler_waits_between_samples_and_forgets_old_ones() {
        let s = Sampler::default();
        let t0 = Instant::now();
        assert!(s.due(t0));
        s.record(t0, sample("b", 0, 0));
        assert_eq!(s.rates(), None, "one sample gives no rate");
        assert!(!s.due(t0 + Duration::from_secs(1)));
        let t1 = t0 + MIN_INTERVAL;
        assert!(s.due(t1));
        s.record(t1, sample("b", 50, 5));
        let rates = s.rates().expect("two samples give rates");
        assert_eq!(rates.backend("b").requests, 10.0);
        assert_eq!(rates.backend("b").errors, 1.0);
        let late = t1 + MAX_AGE + Duration::from_secs(1);
        s.record(late, sample("b", 5000, 5));
        assert_eq!(s.rates(), None, "no average over a long gap");
    }
}
