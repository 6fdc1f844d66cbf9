//! Per-client limits (`limit-rps`, `limit-rpm`, `limit-connections`): the state behind them,
//! which outlives tables and is shared by every worker of the process.
//!
//! Each Ingress's limits have a zone: a map from client address to that client's state. A rate
//! is a token bucket kept as a theoretical arrival time (GCRA): a request is admitted while
//! the client's backlog is no more than the burst, so a fresh client gets `burst + 1` requests
//! at once and then one per interval, as nginx's `limit_req … nodelay` does. A concurrency limit
//! counts the client's requests in flight; each admitted one holds a [`Guard`] until its
//! exchange ends, however it ends.
//!
//! Memory is bounded: a zone tracks at most its capacity of addresses (default
//! [`ZONE_CAPACITY`]). A full zone first forgets clients whose buckets have refilled (they are
//! as good as new), then the least recently seen eighth; a client with requests in flight is
//! never forgotten, and a new client finding every slot so held is refused. At most
//! [`MAX_ZONES`] zones exist; zones not used for ten minutes and holding no request go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use table::RateLimit;

/// Client addresses one zone tracks at most, by default (about a megabyte of state).
pub const ZONE_CAPACITY: usize = 16_384;
/// Zones (Ingresses with limits, and their earlier settings) kept at most.
pub(crate) const MAX_ZONES: usize = 4_096;
/// A zone unused for this long may be dropped to make room for another.
const ZONE_IDLE: Duration = Duration::from_secs(600);

/// What the limits say about a request.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Admitted; the guard (when a concurrency limit applies) is held for the exchange.
    Pass(Option<Guard>),
    /// Over a request rate (`limit-req-status-code`).
    Rate,
    /// Over the concurrency limit (`limit-conn-status-code`).
    Busy,
}

/// The process's limit state.
#[derive(Debug)]
pub struct Limiter {
    epoch: Instant,
    capacity: usize,
    zones: Mutex<HashMap<RateLimit, Arc<Zone>>>,
}

/// One bucket's shape: the time one request takes to drain, and how far ahead of now a client's
/// backlog may run.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    interval: u64,
    tolerance: u64,
}

impl Bucket {
    /// `rate` requests per `per` with a burst of `rate × multiplier`.
    fn new(rate: u32, per: Duration, multiplier: u32) -> Bucket {
        let interval = (per.as_nanos() as u64 / u64::from(rate.max(1))).max(1);
        let burst = u64::from(rate) * u64::from(multiplier);
        Bucket {
            interval,
            tolerance: interval.saturating_mul(burst),
        }
    }

    fn admits(self, tat: u64, now: u64) -> bool {
        tat.max(now) - now <= self.tolerance
    }

    fn after(self, tat: u64, now: u64) -> u64 {
        tat.max(now).saturating_add(self.interval)
    }
}

/// One Ingress's limits and its clients.
#[derive(Debug)]
pub(crate) struct Zone {
    rps: Option<Bucket>,
    rpm: Option<Bucket>,
    connections: Option<u32>,
    capacity: usize,
    last_used: AtomicU64,
    clients: Mutex<HashMap<IpAddr, Client>>,
}

/// One client's state in a zone: the theoretical arrival times of its buckets, its requests
/// in flight, and when it was last seen (nanoseconds after the limiter's epoch).
#[derive(Clone, Copy, Debug, Default)]
struct Client {
    rps_tat: u64,
    rpm_tat: u64,
    in_flight: u32,
    seen: u64,
}

impl Client {
    /// Whether the client's state is as good as a new one's.
    fn is_fresh(&self, now: u64) -> bool {
        self.in_flight == 0 && self.rps_tat <= now && self.rpm_tat <= now
    }
}

/// A request in flight under a concurrency limit; dropping it ends the request's count.
#[derive(Debug)]
pub(crate) struct Guard {
    zone: Arc<Zone>,
    client: IpAddr,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut clients = lock(&self.zone.clients);
        if let Some(c) = clients.get_mut(&self.client) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(ZONE_CAPACITY)
    }
}

impl Limiter {
    /// A limiter whose zones track at most `capacity` client addresses each.
    pub fn new(capacity: usize) -> Self {
        Limiter {
            epoch: Instant::now(),
            capacity: capacity.max(1),
            zones: Mutex::new(HashMap::new()),
        }
    }

    /// Nanoseconds since the epoch, never 0.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// What `rule`'s limits say about a request from `client` now.
    pub(crate) fn check(&self, rule: &RateLimit, client: IpAddr) -> Verdict {
        if rule.exempts(client) {
            return Verdict::Pass(None);
        }
        self.check_at(rule, client, self.now())
    }

    /// [`Limiter::check`] at `now` (nanoseconds after the epoch).
    fn check_at(&self, rule: &RateLimit, client: IpAddr, now: u64) -> Verdict {
        let zone = self.zone(rule, now);
        zone.check(&zone, client, now)
    }

    /// The zone of `rule`, made when missing.
    fn zone(&self, rule: &RateLimit, now: u64) -> Arc<Zone> {
        let mut zones = lock(&self.zones);
        if let Some(zone) = zones.get(rule) {
            zone.last_used.store(now, Ordering::Relaxed);
            return zone.clone();
        }
        if zones.len() >= MAX_ZONES {
            let idle = ZONE_IDLE.as_nanos() as u64;
            zones.retain(|_, z| {
                Arc::strong_count(z) > 1
                    || z.last_used.load(Ordering::Relaxed).saturating_add(idle) > now
            });
            if zones.len() >= MAX_ZONES {
                zones.retain(|_, z| Arc::strong_count(z) > 1);
            }
        }
        let zone = Arc::new(Zone {
            rps: rule
                .rps
                .map(|r| Bucket::new(r, Duration::from_secs(1), rule.burst_multiplier)),
            rpm: rule
                .rpm
                .map(|r| Bucket::new(r, Duration::from_secs(60), rule.burst_multiplier)),
            connections: rule.connections,
            capacity: self.capacity,
            last_used: AtomicU64::new(now),
            clients: Mutex::new(HashMap::new()),
        });
        zones.insert(rule.clone(), zone.clone());
        zone
    }

    /// How many client addresses the zones track together.
    pub fn tracked(&self) -> usize {
        let zones: Vec<Arc<Zone>> = lock(&self.zones).values().cloned().collect();
        zones.iter().map(|z| lock(&z.clients).len()).sum()
    }
}

impl Zone {
    fn check(&self, this: &Arc<Zone>, ip: IpAddr, now: u64) -> Verdict {
        let mut clients = lock(&self.clients);
        if !clients.contains_key(&ip) && clients.len() >= self.capacity {
            make_room(&mut clients, self.capacity, now);
            if clients.len() >= self.capacity {
                return Verdict::Busy;
            }
        }
        let c = clients.entry(ip).or_default();
        c.seen = now;
        let over = |b: Option<Bucket>, tat: u64| b.is_some_and(|b| !b.admits(tat, now));
        if over(self.rps, c.rps_tat) || over(self.rpm, c.rpm_tat) {
            return Verdict::Rate;
        }
        if self.connections.is_some_and(|max| c.in_flight >= max) {
            return Verdict::Busy;
        }
        if let Some(b) = self.rps {
            c.rps_tat = b.after(c.rps_tat, now);
        }
        if let Some(b) = self.rpm {
            c.rpm_tat = b.after(c.rpm_tat, now);
        }
        if self.connections.is_none() {
            return Verdict::Pass(None);
        }
        c.in_flight += 1;
        Verdict::Pass(Some(Guard {
            zone: this.clone(),
            client: ip,
        }))
    }
}

/// Frees slots in a full zone: clients as good as new go, then the least recently seen of the
/// rest (none with requests in flight) until an eighth of the capacity is free.
fn make_room(clients: &mut HashMap<IpAddr, Client>, capacity: usize, now: u64) {
    clients.retain(|_, c| !c.is_fresh(now));
    let keep = capacity - capacity / 8 - 1;
    if clients.len() <= keep {
        return;
    }
    let mut seen: Vec<u64> = clients
        .values()
        .filter(|c| c.in_flight == 0)
        .map(|c| c.seen)
        .collect();
    if seen.is_empty() {
        return;
    }
    let drop = (clients.len() - keep).min(seen.len());
    let (_, cut, _) = seen.select_nth_unstable(drop - 1);
    let cut = *cut;
    clients.retain(|_, c| c.in_flight > 0 || c.seen > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn rule(rps: Option<u32>, rpm: Option<u32>, conns: Option<u32>, mult: u32) -> RateLimit {
        RateLimit {
            zone: "default/site".into(),
            rps,
            rpm,
            connections: conns,
            burst_multiplier: mult,
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn passes(v: &Verdict) -> bool {
        matches!(v, Verdict::Pass(_))
    }

    #[test]
    fn a_rate_admits_its_burst_at_once_then_one_per_interval() {
        let limiter = Limiter::default();
        // 2 r/s with a multiplier of 2: a burst of 4, so 5 at once.
        let r = rule(Some(2), None, None, 2);
        let t = 10 * SEC;
        let admitted = (0..8)
            .filter(|_| passes(&limiter.check_at(&r, ip(1), t)))
            .count();
        assert_eq!(admitted, 5);
        assert!(matches!(limiter.check_at(&r, ip(1), t), Verdict::Rate));
        // Half a second later one more request has drained; another client is untouched.
        assert!(passes(&limiter.check_at(&r, ip(1), t + SEC / 2)));
        assert!(matches!(
            limiter.check_at(&r, ip(1), t + SEC / 2),
            Verdict::Rate
        ));
        assert!(passes(&limiter.check_at(&r, ip(2), t)));
        // After the whole backlog drains the client is as new.
        let later = t + 10 * SEC;
        let admitted = (0..8)
            .filter(|_| passes(&limiter.check_at(&r, ip(1), later)))
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_zero_multiplier_means_no_burst_and_both_rates_apply() {
        let limiter = Limiter::default();
        let r = rule(Some(10), Some(2), None, 0);
        let t = SEC;
        assert!(passes(&limiter.check_at(&r, ip(1), t)));
        // The per-second rate allows the next a tenth of a second later, the per-minute one not
        // before thirty seconds.
        assert!(matches!(
            limiter.check_at(&r, ip(1), t + SEC / 20),
            Verdict::Rate
        ));
        assert!(matches!(
            limiter.check_at(&r, ip(1), t + SEC),
            Verdict::Rate
        ));
        assert!(passes(&limiter.check_at(&r, ip(1), t + 30 * SEC)));
    }

    #[test]
    fn exempt_clients_are_never_limited() {
        let limiter = Limiter::default();
        let r = rule(None, Some(1), None, 0);
        let exempt: IpAddr = "192.0.2.9".parse().unwrap();
        assert!((0..10).all(|_| passes(&limiter.check(&r, exempt))));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn concurrency_is_counted_until_each_guard_drops() {
        let limiter = Limiter::default();
        let r = rule(None, None, Some(2), 5);
        let Verdict::Pass(Some(a)) = limiter.check_at(&r, ip(1), SEC) else {
            panic!("first admitted with a guard");
        };
        let Verdict::Pass(Some(b)) = limiter.check_at(&r, ip(1), SEC) else {
            panic!("second admitted with a guard");
        };
        assert!(matches!(limiter.check_at(&r, ip(1), SEC), Verdict::Busy));
        assert!(passes(&limiter.check_at(&r, ip(2), SEC)));
        drop(a);
        let Verdict::Pass(Some(_c)) = limiter.check_at(&r, ip(1), SEC) else {
            panic!("admitted again once one ended");
        };
        drop(b);
    }

    #[test]
    fn a_full_zone_forgets_fresh_then_least_recent_clients() {
        let limiter = Limiter::new(16);
        let r = rule(None, Some(1), None, 0);
        // A thousand addresses, one request each, a second apart: the zone never holds more
        // than its capacity.
        for n in 0..1000 {
            assert!(passes(&limiter.check_at(&r, ip(n), SEC * u64::from(n + 1))));
            assert!(limiter.tracked() <= 16);
        }
        // The latest client is remembered (refused), the first long forgotten (admitted).
        let now = SEC * 1001;
        assert!(matches!(limiter.check_at(&r, ip(999), now), Verdict::Rate));
        assert!(passes(&limiter.check_at(&r, ip(0), now)));
        // Clients whose buckets refilled are dropped before any other.
        let mut clients: HashMap<IpAddr, Client> = (0..16)
            .map(|n| {
                let tat = if n < 3 { SEC } else { 100 * SEC };
                (
                    ip(n),
                    Client {
                        rpm_tat: tat,
                        seen: SEC,
                        ..Client::default()
                    },
                )
            })
            .collect();
        make_room(&mut clients, 16, 50 * SEC);
        assert_eq!(clients.len(), 13);
        assert!((0..3).all(|n| !clients.contains_key(&ip(n))));
    }

    #[test]
    fn clients_with_requests_in_flight_are_never_forgotten() {
        let limiter = Limiter::new(4);
        let r = rule(None, None, Some(1), 5);
        let guards: Vec<Verdict> = (0..4).map(|n| limiter.check_at(&r, ip(n), SEC)).collect();
        assert!(guards.iter().all(passes));
        // A fifth address finds every slot held and is refused rather than tracked.
        assert!(matches!(limiter.check_at(&r, ip(9), SEC), Verdict::Busy));
        assert_eq!(limiter.tracked(), 4);
        drop(guards);
        assert!(passes(&limiter.check_at(&r, ip(9), SEC)));
        assert!(limiter.tracked() <= 4);
    }

    #[test]
    fn zones_are_per_ingress_and_setting() {
        let limiter = Limiter::default();
        let a = rule(None, Some(1), None, 0);
        let mut b = a.clone();
        b.zone = "default/other".into();
        assert!(passes(&limiter.check_at(&a, ip(1), SEC)));
        assert!(passes(&limiter.check_at(&b, ip(1), SEC)));
        assert!(matches!(limiter.check_at(&a, ip(1), SEC), Verdict::Rate));
        assert_eq!(lock(&limiter.zones).len(), 2);
    }
}
