//! Endpoint choice for routes whose policy asks for more than round robin: cookie affinity,
//! hashing of request parts, and EWMA of response times with two random choices.
//!
//! Hashing is rendezvous hashing (each endpoint scores the key; the highest wins), so adding an
//! endpoint moves only the keys it now wins and removing one moves only its own. A session
//! cookie holds a key derived from the endpoint (persistent mode) or a key that hashes onto it
//! (balanced mode), never per-process state: it stays valid across table swaps, restarts and
//! replicas. Response-time averages live here, keyed by endpoint address, for the whole
//! process.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use table::{Affinity, AffinityMode, Algorithm, Backend, Balance, HashKey, KeyPart, SameSite};

use crate::decide::View;

/// How fast old response times stop counting (ingress-nginx's EWMA decay time).
const DECAY: Duration = Duration::from_secs(10);
/// Endpoints whose average is remembered at most; beyond, those not updated for a minute go.
const MAX_ENDPOINTS: usize = 16_384;
/// Random keys tried for a balanced-mode cookie that lands on a usable endpoint.
const KEY_TRIES: usize = 20;

/// The response-time average of one endpoint.
#[derive(Clone, Copy, Debug)]
struct Ewma {
    micros: f64,
    at: Instant,
}

/// Response-time averages by endpoint address, shared by every worker.
#[derive(Debug, Default)]
pub struct Latencies {
    map: Mutex<HashMap<SocketAddr, Ewma, table::fasthash::BuildFast>>,
}

impl Latencies {
    /// Folds a response time into `addr`'s average.
    pub(crate) fn record(&self, addr: SocketAddr, took: Duration) {
        let now = Instant::now();
        let sample = took.as_secs_f64() * 1e6;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENDPOINTS && !map.contains_key(&addr) {
            map.retain(|_, e| now.duration_since(e.at) < Duration::from_secs(60));
        }
        let e = map.entry(addr).or_insert(Ewma {
            micros: sample,
            at: now,
        });
        let weight = (-now.duration_since(e.at).as_secs_f64() / DECAY.as_secs_f64()).exp();
        e.micros = e.micros * weight + sample * (1.0 - weight);
        e.at = now;
    }

    /// The current average of `addr`; an endpoint never measured scores 0 so it gets tried.
    fn score(&self, addr: SocketAddr) -> f64 {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&addr).map_or(0.0, |e| e.micros)
    }

    /// The lower-scoring of two distinct endpoints of `usable` drawn at random.
    pub(crate) fn pick(&self, usable: &[SocketAddr]) -> Option<SocketAddr> {
        match usable.len() {
            0 => None,
            1 => Some(usable[0]),
            n => {
                let a = random() as usize % n;
                let b = (a + 1 + random() as usize % (n - 1)) % n;
                let (x, y) = (usable[a], usable[b]);
                Some(if self.score(y) < self.score(x) { y } else { x })
            }
        }
    }
}

/// The endpoint a balanced route picked, and the affinity cookie to set, if a new one is due.
pub(crate) struct Choice {
    pub(crate) addr: SocketAddr,
    pub(crate) cookie: Option<HeaderValue>,
}

/// Chooses among `usable` (the backend's ready endpoints that health allows) by `balance`.
/// `route_path` is the cookie path when the policy names none.
pub(crate) fn choose(
    balance: &Balance,
    backend: &Backend,
    usable: &[SocketAddr],
    view: &View<'_>,
    route_path: &str,
    latencies: &Latencies,
) -> Option<Choice> {
    if let Some(affinity) = &balance.affinity {
        return sticky(affinity, backend, usable, view, route_path);
    }
    let addr = if let Some(key) = &balance.hash_by {
        rendezvous(key_hash(key, view), usable)?
    } else {
        match balance.algorithm {
            Algorithm::Ewma => latencies.pick(usable)?,
            Algorithm::RoundRobin => backend.pick_excluding(&excluded(backend, usable))?,
        }
    };
    Some(Choice { addr, cookie: None })
}

/// The ready endpoints not in `usable`.
fn excluded(backend: &Backend, usable: &[SocketAddr]) -> Vec<SocketAddr> {
    let ready = backend.ready();
    if ready.len() == usable.len() {
        return Vec::new();
    }
    ready
        .iter()
        .filter(|a| !usable.contains(a))
        .copied()
        .collect()
}

/// Cookie affinity: the endpoint the request's cookie names when it is usable, else a new one
/// and a cookie naming it.
fn sticky(
    affinity: &Affinity,
    backend: &Backend,
    usable: &[SocketAddr],
    view: &View<'_>,
    route_path: &str,
) -> Option<Choice> {
    let held = view
        .headers
        .cookie(&affinity.name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok());
    if let Some(key) = held {
        if let Some(addr) = lookup(affinity.mode, &backend.name, backend.ready(), key) {
            if usable.contains(&addr) {
                return Some(Choice { addr, cookie: None });
            }
        }
    }
    let (addr, key) = match affinity.mode {
        AffinityMode::Persistent => {
            let addr = backend.pick_excluding(&excluded(backend, usable))?;
            (addr, endpoint_key(&backend.name, addr))
        }
        AffinityMode::Balanced => (0..KEY_TRIES).find_map(|_| {
            let key = random();
            let addr = rendezvous(key, backend.ready())?;
            usable.contains(&addr).then_some((addr, key))
        })?,
    };
    Some(Choice {
        addr,
        cookie: cookie(affinity, key, route_path, view),
    })
}

/// A cookie for `addr` chosen after the cookie's endpoint failed (`change-on-failure`).
pub(crate) fn cookie_for(
    affinity: &Affinity,
    backend: &Backend,
    addr: SocketAddr,
    route_path: &str,
    legacy_agent: bool,
) -> Option<HeaderValue> {
    let key = match affinity.mode {
        AffinityMode::Persistent => endpoint_key(&backend.name, addr),
        AffinityMode::Balanced => (0..KEY_TRIES * backend.ready().len().max(1))
            .map(|_| random())
            .find(|&k| rendezvous(k, backend.ready()) == Some(addr))?,
    };
    build_cookie(affinity, key, route_path, legacy_agent)
}

/// The endpoint a cookie key stands for among `ready`.
fn lookup(mode: AffinityMode, backend: &str, ready: &[SocketAddr], key: u64) -> Option<SocketAddr> {
    match mode {
        AffinityMode::Persistent => ready
            .iter()
            .copied()
            .find(|&a| endpoint_key(backend, a) == key),
        AffinityMode::Balanced => rendezvous(key, ready),
    }
}

/// The persistent-mode key of an endpoint: a hash of the backend's name and its address, the
/// same in every process.
fn endpoint_key(backend: &str, addr: SocketAddr) -> u64 {
    let mut h = stable_hasher();
    h.write(backend.as_bytes());
    h.write_u8(0);
    write_addr(&mut h, addr);
    mix(h.finish())
}

/// Feeds an address (its bytes and port) to a hasher.
fn write_addr(h: &mut impl Hasher, addr: SocketAddr) {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => h.write(&ip.octets()),
        std::net::IpAddr::V6(ip) => h.write(&ip.octets()),
    }
    h.write_u16(addr.port());
}

/// A final avalanche (splitmix64's), so every bit of a score depends on every input bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hasher whose results are the same in every process (cookies and hashes must agree across
/// replicas and restarts).
fn stable_hasher() -> impl Hasher {
    table::fasthash::BuildFast::default().build_hasher()
}

/// The endpoint of `among` that scores `key` highest.
fn rendezvous(key: u64, among: &[SocketAddr]) -> Option<SocketAddr> {
    among.iter().copied().max_by_key(|addr| {
        let mut h = stable_hasher();
        h.write_u64(key);
        write_addr(&mut h, *addr);
        mix(h.finish())
    })
}

/// The hash of a request's `upstream-hash-by` key.
fn key_hash(key: &HashKey, view: &View<'_>) -> u64 {
    let mut h = stable_hasher();
    for part in &key.parts {
        match part {
            KeyPart::Text(t) => h.write(t.as_bytes()),
            KeyPart::RemoteAddr => match view.client {
                std::net::IpAddr::V4(ip) => h.write(&ip.octets()),
                std::net::IpAddr::V6(ip) => h.write(&ip.octets()),
            },
            KeyPart::RequestUri => {
                h.write(view.path.as_bytes());
                if let Some(q) = view.query {
                    h.write(b"?");
                    h.write(q.as_bytes());
                }
            }
            KeyPart::Uri => h.write(view.path.as_bytes()),
            KeyPart::Args => h.write(view.query.unwrap_or("").as_bytes()),
            KeyPart::Host => h.write(view.host.as_bytes()),
            KeyPart::Scheme => h.write(if view.https { b"https" } else { b"http" }),
            KeyPart::Method => h.write(view.method.as_str().as_bytes()),
            KeyPart::Header(name) => h.write(view.headers.get(name).unwrap_or(b"")),
            KeyPart::Cookie(name) => h.write(view.headers.cookie(name).unwrap_or(b"")),
            KeyPart::Arg(name) => h.write(query_arg(view.query, name).unwrap_or("").as_bytes()),
        }
        h.write_u8(0xff);
    }
    mix(h.finish())
}

/// The value of query parameter `name`, as received.
fn query_arg<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The value of cookie `name` in one `Cookie` field value.
pub(crate) fn find_cookie<'v>(field: &'v [u8], name: &str) -> Option<&'v [u8]> {
    field.split(|&b| b == b';').find_map(|crumb| {
        let crumb = crumb.trim_ascii();
        let eq = crumb.iter().position(|&b| b == b'=')?;
        (&crumb[..eq] == name.as_bytes()).then(|| &crumb[eq + 1..])
    })
}

fn cookie(affinity: &Affinity, key: u64, path: &str, view: &View<'_>) -> Option<HeaderValue> {
    let legacy = affinity.conditional_same_site_none
        && view
            .headers
            .get("user-agent")
            .is_some_and(mishandles_same_site_none);
    build_cookie(affinity, key, path, legacy)
}

/// The `Set-Cookie` value naming `key`.
fn build_cookie(
    affinity: &Affinity,
    key: u64,
    route_path: &str,
    legacy_agent: bool,
) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let mut v = format!("{}={key:016x}", affinity.name);
    let path = affinity
        .path
        .as_deref()
        .unwrap_or(if route_path.is_empty() {
            "/"
        } else {
            route_path
        });
    let _ = write!(v, "; Path={path}");
    if let Some(domain) = &affinity.domain {
        let _ = write!(v, "; Domain={domain}");
    }
    if let Some(secs) = affinity.expires {
        let at = SystemTime::now() + Duration::from_secs(secs.max(0) as u64);
        let _ = write!(v, "; Expires={}", httpdate::fmt_http_date(at));
    }
    if let Some(secs) = affinity.max_age {
        let _ = write!(v, "; Max-Age={secs}");
    }
    if affinity.secure {
        v.push_str("; Secure");
    }
    v.push_str("; HttpOnly");
    if let Some(same_site) = affinity.same_site {
        if !(same_site == SameSite::None && legacy_agent) {
            let _ = write!(v, "; SameSite={}", same_site.as_str());
        }
    }
    HeaderValue::from_str(&v).ok()
}

/// Browsers known to reject or misread `SameSite=None`: iOS 12 and macOS 10.14 Safari and
/// embedded browsers, Chrome and Chromium 51 to 66, UC Browser before 12.13.2.
pub(crate) fn mishandles_same_site_none(agent: &[u8]) -> bool {
    let Ok(ua) = std::str::from_utf8(agent) else {
        return false;
    };
    let ios12 = ua.contains("iPhone OS 12_") || ua.contains("iPad; CPU OS 12_");
    let mac1014 = ua.contains("Macintosh; Intel Mac OS X 10_14")
        && (ua.contains("Version/") && ua.contains("Safari") || !ua.contains("Chrom"));
    let chrome = ["Chrome/", "Chromium/"].iter().any(|p| {
        ua.split(p)
            .nth(1)
            .and_then(|rest| rest.split('.').next()?.parse::<u32>().ok())
            .is_some_and(|major| (51..=66).contains(&major))
    });
    let uc = ua.split("UCBrowser/").nth(1).is_some_and(|rest| {
        let v: Vec<u32> = rest
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        v.as_slice() < [12, 13, 2].as_slice()
    });
    ios12 || mac1014 || chrome || uc
}

/// A fast per-thread pseudo-random number (xorshift), seeded differently in every thread.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(0u8) | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests;
