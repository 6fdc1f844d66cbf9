//! The client's real address: the connection's peer, the address a PROXY protocol header
//! announced, or — with forwarded headers trusted — the address found in `X-Forwarded-For`
//! (or the configured header), walked from the right past trusted proxies as nginx's
//! `real_ip_recursive on` does.

use std::net::{IpAddr, Ipv4Addr};

use table::Cidr;

use crate::decide::RequestHeaders;

/// Trusting forwarded headers (`--use-forwarded-headers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// Peers whose forwarded headers are believed (`--proxy-real-ip-cidr`; ingress-nginx's
    /// default is `0.0.0.0/0`: every IPv4 peer).
    pub trusted: Vec<Cidr>,
    /// The header naming the client chain, lower case (`--forwarded-for-header`, default
    /// `x-forwarded-for`).
    pub header: String,
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        ForwardedHeaders {
            trusted: "0.0.0.0/0".parse().ok().into_iter().collect(),
            header: "x-forwarded-for".into(),
        }
    }
}

impl ForwardedHeaders {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address for a request from a trusted peer: the header's addresses are
    /// walked from the right, each trusted one skipped; the first untrusted address is the
    /// client (all trusted: the leftmost). A value that is not an address ends the walk at the
    /// last address found. `None` when the header does not name one.
    pub(crate) fn client(&self, headers: &dyn RequestHeaders) -> Option<IpAddr> {
        let mut values: Vec<&[u8]> = Vec::new();
        headers.values(&self.header, &mut |v| values.push(v));
        let mut found = None;
        for value in values.iter().rev() {
            for item in value.rsplit(|&b| b == b',') {
                let item = item.trim_ascii();
                if item.is_empty() {
                    continue;
                }
                let Some(ip) = parse_addr(item) else {
                    return found;
                };
                found = Some(ip);
                if !self.trusts(ip) {
                    return found;
                }
            }
        }
        found
    }
}

/// An address as nginx reads one in `X-Forwarded-For`: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`.
pub(crate) fn parse_addr(item: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(item).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok.then(|| inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))?;
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fields(Vec<(&'static str, &'static str)>);

    impl RequestHeaders for Fields {
        fn get(&self, name: &str) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        }

        fn values<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
            for (n, v) in &self.0 {
                if n.eq_ignore_ascii_case(name) {
                    f(v.as_bytes());
                }
            }
        }

        fn each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
            for (n, v) in &self.0 {
                f(n.as_bytes(), v.as_bytes());
            }
        }
    }

    fn trusting(cidrs: &[&str]) -> ForwardedHeaders {
        ForwardedHeaders {
            trusted: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            header: "x-forwarded-for".into(),
        }
    }

    fn found(f: &ForwardedHeaders, fields: Vec<(&'static str, &'static str)>) -> Option<String> {
        f.client(&Fields(fields)).map(|ip| ip.to_string())
    }

    #[test]
    fn walks_from_the_right_past_trusted_proxies() {
        let f = trusting(&["10.0.0.0/8"]);
        let xff = |v| vec![("X-Forwarded-For", v)];
        assert_eq!(
            found(&f, xff("203.0.113.9")).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            found(&f, xff("198.51.100.2, 203.0.113.9, 10.1.1.1")).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            found(&f, xff("10.2.2.2, 10.1.1.1")).as_deref(),
            Some("10.2.2.2")
        );
        assert_eq!(
            found(&f, xff("203.0.113.9, junk, 10.1.1.1")).as_deref(),
            Some("10.1.1.1")
        );
        assert_eq!(found(&f, xff("junk")), None);
        assert_eq!(found(&f, xff(" , ")), None);
        assert_eq!(found(&f, vec![]), None);
        assert_eq!(
            found(&f, xff("[2001:db8::5]:443, 10.1.1.1:8080")).as_deref(),
            Some("2001:db8::5")
        );
        // Several fields are one list, in order.
        let two = vec![
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-For", "10.1.1.1"),
        ];
        assert_eq!(found(&f, two).as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn the_default_trusts_every_ipv4_peer_only() {
        let f = ForwardedHeaders::default();
        assert!(f.trusts("192.0.2.1".parse().unwrap()));
        assert!(!f.trusts("2001:db8::1".parse().unwrap()));
        assert_eq!(f.header, "x-forwarded-for");
    }

    #[test]
    fn addresses_as_nginx_reads_them() {
        for (text, ip) in [
            ("1.2.3.4", Some("1.2.3.4")),
            ("1.2.3.4:80", Some("1.2.3.4")),
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[::1]:80", Some("::1")),
            ("[::1]x", None),
            ("1.2.3.4:x", None),
            ("example.com", None),
            ("", None),
        ] {
            assert_eq!(
                parse_addr(text.as_bytes())
                    .map(|a| a.to_string())
                    .as_deref(),
                ip,
                "{text}"
            );
        }
    }
}
