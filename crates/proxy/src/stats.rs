//! Request statistics kept by the data plane, for `/metrics`.
//!
//! Counting must stay cheap: each worker thread counts into its own shard (no cache line is
//! shared between workers on the request path), and finds a route's counters through a
//! per-thread cache keyed by the route's address in the current table. Counters are keyed by
//! what the route is (its Ingress, Service, host and path), not by the table, so they survive
//! table swaps. The scraper sums the shards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use table::fasthash::BuildFast;
use table::{Route, Table};

/// Upper bounds of the latency histograms in seconds (ingress-nginx's buckets).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the size histograms in bytes.
pub const SIZE_BUCKETS: [f64; 7] = [10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];

/// The methods counted by name; others are counted as `OTHER`.
pub const METHODS: [&str; 10] = [
    "OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

fn method_index(m: &Method) -> u32 {
    match *m {
        Method::GET => 1,
        Method::HEAD => 2,
        Method::POST => 3,
        Method::PUT => 4,
        Method::DELETE => 5,
        Method::PATCH => 6,
        Method::OPTIONS => 7,
        Method::CONNECT => 8,
        Method::TRACE => 9,
        _ => 0,
    }
}

/// What a route's requests are counted under (ingress-nginx's labels).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteLabels {
    /// The Ingress's namespace (empty when no route matched).
    pub namespace: String,
    /// The Ingress's name.
    pub ingress: String,
    /// The backend Service's name.
    pub service: String,
    /// The rule's host as written.
    pub host: String,
    /// The rule's path as written.
    pub path: String,
}

impl RouteLabels {
    fn of(table: &Table, route: &Route) -> Self {
        let (namespace, ingress) = route
            .origin
            .ingress
            .split_once('/')
            .unwrap_or(("", route.origin.ingress.as_str()));
        let backend = &table.backend(route.backend).name;
        let service = backend
            .split_once('/')
            .map_or(backend.as_str(), |(_, s)| s)
            .split(':')
            .next()
            .unwrap_or_default();
        RouteLabels {
            namespace: namespace.to_string(),
            ingress: ingress.to_string(),
            service: service.to_string(),
            host: route.origin.host.clone(),
            path: route.origin.path.clone(),
        }
    }
}

/// A histogram whose buckets are counted one by one (cumulated when scraped).
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    /// Sum of the observations in microseconds (durations) or bytes (sizes).
    sum: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], value: f64, sum: u64) {
        match bounds.iter().position(|b| value <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(sum, Ordering::Relaxed);
    }

    /// The cumulative counts per bound, the total count and the raw sum.
    pub fn read(&self) -> ([u64; N], u64, u64) {
        let mut cumulative = [0; N];
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            cumulative[i] = total;
        }
        total += self.overflow.load(Ordering::Relaxed);
        (cumulative, total, self.sum.load(Ordering::Relaxed))
    }

    fn add(&self, other: &Self) {
        for (a, b) in self.buckets.iter().zip(&other.buckets) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.overflow
            .fetch_add(other.overflow.load(Ordering::Relaxed), Ordering::Relaxed);
        self.sum
            .fetch_add(other.sum.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// How many status × method combinations a route counts apart; the rest share one slot.
const SLOTS: usize = 24;

/// The counters of one route in one worker.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// `status << 8 | method` per slot (0: unused), and the count.
    keys: [AtomicU32; SLOTS],
    counts: [AtomicU64; SLOTS],
    /// Request durations, from the request head to the end of the response.
    pub request_duration: Histogram<11>,
    /// Upstream durations, from sending the request to the end of the response.
    pub response_duration: Histogram<11>,
    /// Request sizes (head and body).
    pub request_size: Histogram<7>,
    /// Response sizes (head and body).
    pub response_size: Histogram<7>,
}

/// One finished request, as counted.
#[derive(Clone, Copy, Debug)]
pub struct Outcome<'a> {
    /// The status answered.
    pub status: u16,
    /// The request method.
    pub method: &'a Method,
    /// From the request head to the end of the response.
    pub duration: Duration,
    /// From sending upstream to the end of the response, when it was forwarded.
    pub upstream: Option<Duration>,
    /// Request head and body bytes.
    pub request_bytes: u64,
    /// Response head and body bytes.
    pub response_bytes: u64,
}

impl RouteCounters {
    /// Counts one finished request.
    pub fn record(&self, o: &Outcome<'_>) {
        let slot = self.slot(o.status, method_index(o.method));
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let secs = o.duration.as_secs_f64();
        self.request_duration
            .observe(&DURATION_BUCKETS, secs, o.duration.as_micros() as u64);
        if let Some(up) = o.upstream {
            self.response_duration.observe(
                &DURATION_BUCKETS,
                up.as_secs_f64(),
                up.as_micros() as u64,
            );
        }
        self.request_size
            .observe(&SIZE_BUCKETS, o.request_bytes as f64, o.request_bytes);
        self.response_size
            .observe(&SIZE_BUCKETS, o.response_bytes as f64, o.response_bytes);
    }

    /// Requests by (status, method name); the last slot may mix what did not fit.
    pub fn requests(&self) -> Vec<(u16, &'static str, u64)> {
        self.keys
            .iter()
            .zip(&self.counts)
            .filter_map(|(k, c)| {
                let key = k.load(Ordering::Relaxed);
                let count = c.load(Ordering::Relaxed);
                (key != 0 && count > 0).then(|| {
                    let method = METHODS
                        .get((key & 0xff) as usize)
                        .copied()
                        .unwrap_or("OTHER");
                    (((key >> 8) & 0xffff) as u16, method, count)
                })
            })
            .collect()
    }

    /// The slot counting `status` × `method`, claimed on first use; the last slot takes what
    /// does not fit.
    fn slot(&self, status: u16, method: u32) -> usize {
        // The top bit marks a claimed slot, so status 0 is still a key.
        let key = u32::from(status) << 8 | method | 1 << 31;
        self.keys
            .iter()
            .position(|k| {
                let seen = k.load(Ordering::Relaxed);
                seen == key
                    || (seen == 0
                        && k.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok())
            })
            .unwrap_or(SLOTS - 1)
    }

    fn add(&self, other: &RouteCounters) {
        for (status, method, count) in other.requests() {
            let index = METHODS.iter().position(|m| *m == method).unwrap_or(0) as u32;
            let slot = self.slot(status, index);
            self.counts[slot].fetch_add(count, Ordering::Relaxed);
        }
        self.request_duration.add(&other.request_duration);
        self.response_duration.add(&other.response_duration);
        self.request_size.add(&other.request_size);
        self.response_size.add(&other.response_size);
    }
}

/// Connections a worker has open, by protocol and transport.
#[derive(Debug, Default)]
pub struct Connections {
    /// HTTP/1.x over TCP.
    pub http1: AtomicI64,
    /// HTTP/1.x over TLS.
    pub https1: AtomicI64,
    /// HTTP/2 over TCP (prior knowledge).
    pub http2: AtomicI64,
    /// HTTP/2 over TLS.
    pub https2: AtomicI64,
    /// Connections closed for want of a valid PROXY protocol header (a count, not a gauge).
    pub refused_proxy_headers: AtomicU64,
}

/// Failures towards one backend, counted by a worker.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Connections that could not be made.
    pub connect_errors: AtomicU64,
    /// Attempts repeated on another endpoint.
    pub retries: AtomicU64,
}

/// One worker's counts.
#[derive(Debug, Default)]
pub struct WorkerStats {
    routes: Mutex<HashMap<RouteLabels, Arc<RouteCounters>, BuildFast>>,
    backends: Mutex<HashMap<String, Arc<BackendCounters>, BuildFast>>,
    /// Open client connections.
    pub connections: Connections,
}

/// A route-address cache entry: the route (kept alive so its address is not reused while
/// cached) and its counters.
type Cached = (Arc<Route>, Arc<RouteCounters>);

thread_local! {
    /// The table the cache was filled from, and route address → counters.
    static CACHE: RefCell<(usize, HashMap<usize, Cached, BuildFast>)> =
        RefCell::new((0, HashMap::default()));
}

impl WorkerStats {
    fn counters_for(&self, labels: RouteLabels) -> Arc<RouteCounters> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.entry(labels).or_default().clone()
    }

    /// The counters of the requests no route took (404s and the like).
    pub fn unrouted(&self) -> Arc<RouteCounters> {
        self.counters_for(RouteLabels::default())
    }

    /// The counters of `route` in `table`, found through this thread's cache.
    pub fn route(&self, table: &Arc<Table>, route: &Arc<Route>) -> Arc<RouteCounters> {
        let table_id = Arc::as_ptr(table) as usize;
        let key = Arc::as_ptr(route) as usize;
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.0 != table_id {
                // A new table: its routes may be new objects. Bounded by one table's routes.
                cache.0 = table_id;
                cache.1.clear();
            }
            if let Some((_, counters)) = cache.1.get(&key) {
                return counters.clone();
            }
            let counters = self.counters_for(RouteLabels::of(table, route));
            cache.1.insert(key, (route.clone(), counters.clone()));
            counters
        })
    }

    /// The failure counters of the backend named `name`.
    pub fn backend(&self, name: &str) -> Arc<BackendCounters> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = backends.get(name) {
            return c.clone();
        }
        backends.entry(name.to_string()).or_default().clone()
    }
}

/// Every worker's counts, for scraping.
#[derive(Debug, Default)]
pub struct Stats {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
}

/// The counts of all workers, summed.
#[derive(Debug, Default)]
pub struct Totals {
    /// Per route.
    pub routes: Vec<(RouteLabels, RouteCounters)>,
    /// Per backend: connect errors and retries.
    pub backends: Vec<(String, u64, u64)>,
    /// Open connections: HTTP/1.x cleartext, HTTP/1.x TLS, HTTP/2 cleartext, HTTP/2 TLS.
    pub connections: [i64; 4],
    /// Connections closed for want of a valid PROXY protocol header.
    pub refused_proxy_headers: u64,
}

impl Stats {
    /// A new shard for one worker.
    pub fn worker(&self) -> Arc<WorkerStats> {
        let shard = Arc::new(WorkerStats::default());
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shard.clone());
        shard
    }

    /// The sums over all workers.
    pub fn totals(&self) -> Totals {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut routes: std::collections::BTreeMap<RouteLabels, RouteCounters> =
            std::collections::BTreeMap::new();
        let mut backends: std::collections::BTreeMap<String, (u64, u64)> =
            std::collections::BTreeMap::new();
        let mut connections = [0i64; 4];
        let mut refused_proxy_headers = 0;
        for w in &workers {
            for (labels, counters) in w.routes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                routes.entry(labels.clone()).or_default().add(counters);
            }
            for (name, c) in w.backends.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let e = backends.entry(name.clone()).or_default();
                e.0 += c.connect_errors.load(Ordering::Relaxed);
                e.1 += c.retries.load(Ordering::Relaxed);
            }
            let c = &w.connections;
            refused_proxy_headers += c.refused_proxy_headers.load(Ordering::Relaxed);
            for (i, v) in [&c.http1, &c.https1, &c.http2, &c.https2]
                .iter()
                .enumerate()
            {
                connections[i] += v.load(Ordering::Relaxed);
            }
        }
        Totals {
            routes: routes.into_iter().collect(),
            backends: backends.into_iter().map(|(n, (a, b))| (n, a, b)).collect(),
            connections,
            refused_proxy_headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, method: &Method) -> Outcome<'_> {
        Outcome {
            status,
            method,
            duration: Duration::from_millis(30),
            upstream: Some(Duration::from_millis(20)),
            request_bytes: 120,
            response_bytes: 5000,
        }
    }

    #[test]
    fn requests_are_counted_by_status_and_method() {
        let c = RouteCounters::default();
        c.record(&outcome(200, &Method::GET));
        c.record(&outcome(200, &Method::GET));
        c.record(&outcome(404, &Method::POST));
        let mut r = c.requests();
        r.sort();
        assert_eq!(r, [(200, "GET", 2), (404, "POST", 1)]);
        let (buckets, count, sum) = c.request_duration.read();
        assert_eq!(count, 3);
        assert_eq!(sum, 90_000);
        assert_eq!(buckets[2], 0, "30 ms is above 25 ms");
        assert_eq!(buckets[3], 3, "and within 50 ms");
        let (sizes, _, bytes) = c.response_size.read();
        assert_eq!(bytes, 15_000);
        assert_eq!(sizes[3], 3, "5000 bytes fall in the 10 000 bucket");
    }

    #[test]
    fn workers_are_summed() {
        let stats = Stats::default();
        let a = stats.worker();
        let b = stats.worker();
        a.unrouted().record(&outcome(404, &Method::GET));
        b.unrouted().record(&outcome(404, &Method::GET));
        b.backend("ns/s:80").retries.fetch_add(2, Ordering::Relaxed);
        a.connections.http1.fetch_add(3, Ordering::Relaxed);
        let t = stats.totals();
        assert_eq!(t.routes.len(), 1);
        assert_eq!(t.routes[0].1.requests(), [(404, "GET", 2)]);
        assert_eq!(t.backends, [("ns/s:80".to_string(), 0, 2)]);
        assert_eq!(t.connections, [3, 0, 0, 0]);
    }

    #[test]
    fn many_combinations_share_the_last_slot() {
        let c = RouteCounters::default();
        for status in 200..260 {
            c.record(&outcome(status, &Method::GET));
        }
        let total: u64 = c.requests().iter().map(|(_, _, n)| n).sum();
        assert_eq!(total, 60);
    }
}
