//! Endpoint health: passive outlier detection (consecutive failures eject an endpoint for a
//! time that grows with each ejection) and the verdicts of active checks.
//!
//! State is process-wide and keyed by endpoint identity (backend name and address), so it
//! survives table swaps and all workers see the same ejections. Only troubled endpoints have an
//! entry: while none has, a request costs one atomic load here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use table::fasthash::BuildFast;

/// How failures turn into ejections.
#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    /// Consecutive failures (connect errors, broken connections, timeouts, 5xx) that eject an
    /// endpoint; 0 turns passive detection off.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one lasts this much longer.
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    pub max_ejection: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// What is known about one troubled endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Failures since the last success.
    pub failures: AtomicU32,
    /// How many times it was ejected.
    pub ejections: AtomicU32,
    /// Until when it is ejected, in milliseconds since the registry started (0: not ejected).
    ejected_until: AtomicU64,
    /// Whether active health checks find it down.
    pub active_down: AtomicBool,
}

/// Troubled endpoints by address, then by backend name (an address usually serves one).
type Map = HashMap<SocketAddr, Vec<(Arc<str>, Arc<EndpointHealth>)>, BuildFast>;

fn count(map: &Map) -> usize {
    map.values().map(Vec::len).sum()
}

/// The health of every troubled endpoint.
#[derive(Debug)]
pub struct Health {
    config: HealthConfig,
    start: Instant,
    endpoints: RwLock<Map>,
    troubled: AtomicUsize,
    /// Ejections so far, for `/metrics`.
    pub ejections_total: AtomicU64,
}

/// One endpoint's health as shown on `/metrics` and the admin page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    /// The backend's name.
    pub backend: String,
    /// The endpoint.
    pub addr: SocketAddr,
    /// Whether it gets requests now.
    pub usable: bool,
    /// Failures since the last success.
    pub failures: u32,
    /// Times ejected.
    pub ejections: u32,
    /// Whether active checks find it down.
    pub active_down: bool,
}

impl Health {
    /// An empty registry.
    pub fn new(config: HealthConfig) -> Self {
        Health {
            config,
            start: Instant::now(),
            endpoints: RwLock::new(HashMap::default()),
            troubled: AtomicUsize::new(0),
            ejections_total: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Whether any endpoint is troubled (the only case in which the others are looked at).
    pub fn any_trouble(&self) -> bool {
        self.troubled.load(Ordering::Relaxed) > 0
    }

    fn get(&self, backend: &str, addr: SocketAddr) -> Option<Arc<EndpointHealth>> {
        let map = self.endpoints.read().unwrap_or_else(|e| e.into_inner());
        map.get(&addr)?
            .iter()
            .find(|(b, _)| &**b == backend)
            .map(|(_, h)| h.clone())
    }

    fn entry(&self, backend: &str, addr: SocketAddr) -> Arc<EndpointHealth> {
        if let Some(h) = self.get(backend, addr) {
            return h;
        }
        let mut map = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(addr).or_default();
        let h = match list.iter().find(|(b, _)| &**b == backend) {
            Some((_, h)) => h.clone(),
            None => {
                let h = Arc::new(EndpointHealth::default());
                list.push((Arc::from(backend), h.clone()));
                h
            }
        };
        self.troubled.store(count(&map), Ordering::Relaxed);
        h
    }

    /// Whether `addr` of `backend` should get requests now.
    pub fn usable(&self, backend: &str, addr: SocketAddr) -> bool {
        match self.get(backend, addr) {
            None => true,
            Some(h) => {
                !h.active_down.load(Ordering::Relaxed)
                    && h.ejected_until.load(Ordering::Relaxed) <= self.now_ms()
            }
        }
    }

    /// Records a failed attempt at `addr` of `backend`; ejects it after enough in a row.
    pub fn failure(&self, backend: &str, addr: SocketAddr) {
        if self.config.consecutive_failures == 0 {
            return;
        }
        let h = self.entry(backend, addr);
        let failures = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.now_ms();
        if failures >= self.config.consecutive_failures
            && h.ejected_until.load(Ordering::Relaxed) <= now
        {
            let n = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            let time = (self.config.base_ejection * n).min(self.config.max_ejection);
            h.ejected_until
                .store(now + time.as_millis() as u64, Ordering::Relaxed);
            h.failures.store(0, Ordering::Relaxed);
            self.ejections_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(backend, endpoint = %addr, ejection = n, seconds = time.as_secs(), "endpoint ejected after {failures} failures in a row");
        }
    }

    /// Records a successful exchange with `addr` of `backend`.
    pub fn success(&self, backend: &str, addr: SocketAddr) {
        if !self.any_trouble() {
            return;
        }
        let Some(h) = self.get(backend, addr) else {
            return;
        };
        h.failures.store(0, Ordering::Relaxed);
        let until = h.ejected_until.load(Ordering::Relaxed);
        let now = self.now_ms();
        // The ejection count is kept (a relapse is ejected longer) until an endpoint has been
        // back for the longest ejection; then it is forgotten like one that never failed.
        let forgotten = h.ejections.load(Ordering::Relaxed) == 0
            || now > until + self.config.max_ejection.as_millis() as u64;
        if until <= now && forgotten && !h.active_down.load(Ordering::Relaxed) {
            let mut map = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = map.get_mut(&addr) {
                list.retain(|(b, _)| &**b != backend);
                if list.is_empty() {
                    map.remove(&addr);
                }
            }
            self.troubled.store(count(&map), Ordering::Relaxed);
        }
    }

    /// Sets what active checks found for `addr` of `backend`.
    pub fn set_active(&self, backend: &str, addr: SocketAddr, down: bool) {
        if !down && self.get(backend, addr).is_none() {
            return;
        }
        let h = self.entry(backend, addr);
        h.active_down.store(down, Ordering::Relaxed);
    }

    /// Forgets endpoints no backend has any more (`live` says which still exist).
    pub fn retain(&self, live: impl Fn(&str, SocketAddr) -> bool) {
        let mut map = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        for (addr, list) in map.iter_mut() {
            list.retain(|(b, _)| live(b, *addr));
        }
        map.retain(|_, list| !list.is_empty());
        self.troubled.store(count(&map), Ordering::Relaxed);
    }

    /// Every troubled endpoint.
    pub fn view(&self) -> Vec<EndpointView> {
        let map = self.endpoints.read().unwrap_or_else(|e| e.into_inner());
        let now = self.now_ms();
        let mut out: Vec<EndpointView> = map
            .iter()
            .flat_map(|(a, list)| list.iter().map(move |(b, h)| (b, a, h)))
            .map(|(b, a, h)| {
                let active_down = h.active_down.load(Ordering::Relaxed);
                EndpointView {
                    backend: b.to_string(),
                    addr: *a,
                    usable: !active_down && h.ejected_until.load(Ordering::Relaxed) <= now,
                    failures: h.failures.load(Ordering::Relaxed),
                    ejections: h.ejections.load(Ordering::Relaxed),
                    active_down,
                }
            })
            .collect();
        out.sort_by(|x, y| (&x.backend, x.addr).cmp(&(&y.backend, y.addr)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn health(base: Duration) -> Health {
        Health::new(HealthConfig {
            consecutive_failures: 3,
            base_ejection: base,
            max_ejection: base * 3,
        })
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_resets() {
        let h = health(Duration::from_secs(60));
        assert!(!h.any_trouble());
        h.failure("b", addr(1));
        h.failure("b", addr(1));
        h.success("b", addr(1));
        h.failure("b", addr(1));
        h.failure("b", addr(1));
        assert!(h.usable("b", addr(1)), "two in a row are not three");
        h.failure("b", addr(1));
        assert!(!h.usable("b", addr(1)), "three in a row eject");
        assert!(h.usable("b", addr(2)), "other endpoints are unaffected");
        assert!(
            h.usable("other", addr(1)),
            "the same address of another backend too"
        );
        assert_eq!(h.ejections_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn ejections_end_and_grow_with_relapses() {
        let h = Health::new(HealthConfig {
            consecutive_failures: 3,
            base_ejection: Duration::ZERO,
            max_ejection: Duration::from_secs(60),
        });
        for _ in 0..3 {
            h.failure("b", addr(1));
        }
        // A zero-length ejection is over at once; the count remains for the next one.
        assert!(h.usable("b", addr(1)));
        h.success("b", addr(1));
        assert_eq!(h.view()[0].ejections, 1);
        for _ in 0..3 {
            h.failure("b", addr(1));
        }
        assert_eq!(h.view()[0].ejections, 2);
    }

    #[test]
    fn active_checks_mark_endpoints_down_and_up() {
        let h = health(Duration::from_secs(60));
        h.set_active("b", addr(1), false);
        assert!(
            !h.any_trouble(),
            "a healthy verdict for an untroubled endpoint adds nothing"
        );
        h.set_active("b", addr(1), true);
        assert!(!h.usable("b", addr(1)));
        h.set_active("b", addr(1), false);
        assert!(h.usable("b", addr(1)));
        h.retain(|_, _| false);
        assert!(!h.any_trouble());
    }
}
