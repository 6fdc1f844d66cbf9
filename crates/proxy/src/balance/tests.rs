use super::*;
use http::{HeaderMap, Method};
use std::collections::HashMap as Map;

fn addrs(n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([10, 0, 0, 1 + i as u8], 8080)))
        .collect()
}

fn backend(ready: Vec<SocketAddr>) -> Backend {
    Backend::new(
        "shop/web:80",
        table::BackendTarget::Endpoints {
            ready,
            not_ready: Vec::new(),
        },
    )
}

fn view<'a>(headers: &'a HeaderMap, path: &'a str) -> View<'a> {
    static GET: Method = Method::GET;
    View {
        https: false,
        client: std::net::IpAddr::from([192, 0, 2, 7]),
        method: &GET,
        host: "shop.example",
        path,
        query: Some("id=42&x=1"),
        content_length: None,
        headers,
    }
}

fn affinity(mode: AffinityMode) -> Affinity {
    Affinity {
        mode,
        name: "INGRESSCOOKIE".into(),
        path: None,
        domain: None,
        max_age: None,
        expires: None,
        secure: false,
        same_site: None,
        conditional_same_site_none: false,
        change_on_failure: false,
    }
}

#[test]
fn rendezvous_moves_only_the_keys_a_new_endpoint_wins() {
    let before = addrs(4);
    let after = addrs(5);
    let keys: Vec<u64> = (0..4000u64).map(|k| k.wrapping_mul(0x9e37_79b9)).collect();
    let mut moved = 0;
    let mut counts: Map<SocketAddr, usize> = Map::new();
    for &k in &keys {
        let a = rendezvous(k, &before).unwrap();
        let b = rendezvous(k, &after).unwrap();
        *counts.entry(a).or_default() += 1;
        if a != b {
            moved += 1;
            assert_eq!(
                b, after[4],
                "a key moved to an endpoint other than the new one"
            );
        }
    }
    // The new endpoint takes about a fifth of the keys; every old one had about a quarter.
    assert!((600..1000).contains(&moved), "{moved} keys moved");
    for (addr, n) in counts {
        assert!((800..1200).contains(&n), "{addr} got {n} of 4000 keys");
    }
}

#[test]
fn hash_keys_send_equal_requests_to_one_endpoint() {
    let b = backend(addrs(6));
    let key = HashKey::parse("$http_x_user$arg_id").unwrap();
    let balance = Balance {
        algorithm: Algorithm::RoundRobin,
        hash_by: Some(key),
        affinity: None,
    };
    let lat = Latencies::default();
    let mut seen = std::collections::HashSet::new();
    for user in ["ann", "bob", "cy", "di", "ed", "flo", "gus", "hal"] {
        let mut h = HeaderMap::new();
        h.insert("x-user", user.parse().unwrap());
        let first = choose(&balance, &b, b.ready(), &view(&h, "/"), "/", &lat).unwrap();
        for _ in 0..5 {
            let again = choose(&balance, &b, b.ready(), &view(&h, "/"), "/", &lat).unwrap();
            assert_eq!(again.addr, first.addr);
            assert!(again.cookie.is_none());
        }
        seen.insert(first.addr);
    }
    assert!(seen.len() > 2, "eight users all hashed onto {seen:?}");
    // An unusable endpoint hands its keys to the next in rank; the others keep theirs.
    let mut h = HeaderMap::new();
    h.insert("x-user", "ann".parse().unwrap());
    let first = choose(&balance, &b, b.ready(), &view(&h, "/"), "/", &lat).unwrap();
    let rest: Vec<SocketAddr> = b
        .ready()
        .iter()
        .copied()
        .filter(|a| *a != first.addr)
        .collect();
    let moved = choose(&balance, &b, &rest, &view(&h, "/"), "/", &lat).unwrap();
    assert_ne!(moved.addr, first.addr);
}

#[test]
fn a_session_cookie_keeps_its_endpoint_in_both_modes() {
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let b = backend(addrs(5));
        let balance = Balance {
            algorithm: Algorithm::RoundRobin,
            hash_by: None,
            affinity: Some(affinity(mode)),
        };
        let lat = Latencies::default();
        let none = HeaderMap::new();
        let first = choose(&balance, &b, b.ready(), &view(&none, "/api"), "/api", &lat).unwrap();
        let set = first.cookie.expect("a new session gets a cookie");
        let set = set.to_str().unwrap();
        assert!(set.starts_with("INGRESSCOOKIE="), "{set}");
        assert!(set.contains("; Path=/api; HttpOnly"), "{set}");
        let value = set.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("a=b; {value}").parse().unwrap());
        for _ in 0..10 {
            let again = choose(&balance, &b, b.ready(), &view(&h, "/api"), "/api", &lat).unwrap();
            assert_eq!(again.addr, first.addr, "{mode:?}");
            assert!(again.cookie.is_none());
        }
        // A new table with the same endpoints (another replica, a restart) agrees.
        let other = backend(addrs(5));
        let there = choose(
            &balance,
            &other,
            other.ready(),
            &view(&h, "/api"),
            "/api",
            &lat,
        );
        assert_eq!(there.unwrap().addr, first.addr);
        // The endpoint gone: another one and a new cookie.
        let rest: Vec<SocketAddr> = addrs(5).into_iter().filter(|a| *a != first.addr).collect();
        let moved = choose(&balance, &b, &rest, &view(&h, "/api"), "/api", &lat).unwrap();
        assert_ne!(moved.addr, first.addr);
        assert!(moved.cookie.is_some());
        // A cookie written for a given endpoint leads there.
        let target = b.ready()[3];
        let made = cookie_for(&affinity(mode), &b, target, "/", false).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            made.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        );
        let led = choose(&balance, &b, b.ready(), &view(&h, "/"), "/", &lat).unwrap();
        assert_eq!(led.addr, target, "{mode:?}");
    }
}

#[test]
fn persistent_sessions_stay_when_the_backend_scales_up() {
    let small = backend(addrs(3));
    let big = backend(addrs(8));
    let balance = Balance {
        algorithm: Algorithm::RoundRobin,
        hash_by: None,
        affinity: Some(affinity(AffinityMode::Persistent)),
    };
    let lat = Latencies::default();
    for _ in 0..20 {
        let none = HeaderMap::new();
        let first = choose(
            &balance,
            &small,
            small.ready(),
            &view(&none, "/"),
            "/",
            &lat,
        )
        .unwrap();
        let value = first
            .cookie
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut h = HeaderMap::new();
        h.insert("cookie", value.parse().unwrap());
        let after = choose(&balance, &big, big.ready(), &view(&h, "/"), "/", &lat).unwrap();
        assert_eq!(after.addr, first.addr);
    }
}

#[test]
fn cookie_attributes_follow_the_policy() {
    let mut a = affinity(AffinityMode::Balanced);
    a.name = "route".into();
    a.path = Some("/shop".into());
    a.domain = Some("example.com".into());
    a.max_age = Some(3600);
    a.expires = Some(60);
    a.secure = true;
    a.same_site = Some(SameSite::None);
    a.conditional_same_site_none = true;
    let v = build_cookie(&a, 0xabc, "/ignored", false).unwrap();
    let v = v.to_str().unwrap();
    assert!(v.starts_with("route=0000000000000abc; Path=/shop; Domain=example.com; Expires="));
    assert!(
        v.ends_with("GMT; Max-Age=3600; Secure; HttpOnly; SameSite=None"),
        "{v}"
    );
    let legacy = build_cookie(&a, 1, "/", true).unwrap();
    assert!(!legacy.to_str().unwrap().contains("SameSite"), "{legacy:?}");
    let chrome60 =
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/60.0.3112.90 Safari/537.36";
    let chrome120 =
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36";
    let ios12 = b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) AppleWebKit/605.1.15";
    let uc = b"Mozilla/5.0 (Linux; U; Android 8.0) UCBrowser/12.10.1.1150 Mobile Safari/537.36";
    assert!(mishandles_same_site_none(chrome60));
    assert!(!mishandles_same_site_none(chrome120));
    assert!(mishandles_same_site_none(ios12));
    assert!(mishandles_same_site_none(uc));
}

#[test]
fn ewma_prefers_the_faster_endpoint_and_tries_unmeasured_ones() {
    let lat = Latencies::default();
    let [fast, slow] = [addrs(2)[0], addrs(2)[1]];
    for _ in 0..5 {
        lat.record(fast, Duration::from_millis(2));
        lat.record(slow, Duration::from_millis(200));
    }
    for _ in 0..50 {
        assert_eq!(lat.pick(&[fast, slow]), Some(fast));
        assert_eq!(lat.pick(&[slow, fast]), Some(fast));
    }
    let new = addrs(3)[2];
    assert_eq!(lat.pick(&[fast, new]), Some(new));
    assert_eq!(lat.pick(&[]), None);
}

#[test]
fn cookies_are_found_among_others() {
    assert_eq!(
        find_cookie(b"a=1; INGRESSCOOKIE=ff; b=2", "INGRESSCOOKIE"),
        Some(&b"ff"[..])
    );
    assert_eq!(find_cookie(b"xINGRESSCOOKIE=ff", "INGRESSCOOKIE"), None);
    assert_eq!(query_arg(Some("a=1&id=42"), "id"), Some("42"));
    assert_eq!(query_arg(Some("a=1"), "id"), None);
}
