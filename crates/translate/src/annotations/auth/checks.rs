//! Syntax checks of the authentication annotations' values: pure functions from the written
//! text to typed values, or to the reason the value is refused.

use std::time::Duration;

use http::HeaderName;
use table::auth::{Template, TemplatePiece};

use super::super::values;

/// The parts of an `auth-url`.
pub(super) struct Parsed {
    pub(super) https: bool,
    pub(super) host: Option<String>,
    pub(super) port: u16,
    pub(super) path: Template,
}

pub(super) fn parse_url(v: &str) -> Result<Parsed, String> {
    if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("contains a space or control character".into());
    }
    let (https, rest) = if let Some(rest) = v.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = v.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("is not an http:// or https:// URL".into());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err("carries credentials in its authority, which is not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or("has an unclosed IPv6 literal")?;
        (h, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse().map_err(|_| format!("has a bad port {p:?}"))?,
    };
    let host = match host {
        "$host" | "$http_host" | "${host}" => None,
        h if !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':')) =>
        {
            Some(h.to_ascii_lowercase())
        }
        _ => return Err("has no valid host (a name, an address or $host)".into()),
    };
    Ok(Parsed {
        https,
        host,
        port,
        path: Template::parse(&path)?,
    })
}

/// An `auth-signin` URL: http(s) or a path, without spaces, quotes or control characters.
pub(super) fn signin_url(v: &str) -> Result<(), String> {
    if v.bytes()
        .any(|b| b.is_ascii_control() || matches!(b, b' ' | b'"' | b'\'' | b'<' | b'>' | b'\\'))
    {
        return Err("contains a space, quote or control character".into());
    }
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        Some(_) => Err("has no host".into()),
        None if v.starts_with('/') => Ok(()),
        None => Err("is neither an http:// or https:// URL nor a path".into()),
    }
}

/// A comma-separated list of header names (letters, digits, `-` and `_`).
pub(super) fn header_names(v: &str) -> Result<Vec<HeaderName>, String> {
    values::list(v)
        .map(|name| {
            let valid = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|_| valid)
                .ok_or_else(|| format!("{v:?}: {name:?} is not a header name"))
        })
        .collect()
}

/// An HTTP method ingress-nginx accepts for `auth-method`.
pub(super) fn method(v: &str) -> Result<String, String> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    let m = v.trim();
    if METHODS.contains(&m) {
        Ok(m.to_string())
    } else {
        Err(format!("{m:?} is not an HTTP method"))
    }
}

/// A query parameter name (letters, digits, `-` and `_`).
pub(super) fn param_name(v: &str) -> Result<&str, String> {
    let p = v.trim();
    if !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(p)
    } else {
        Err(format!("{p:?} is not a query parameter name"))
    }
}

/// Text without spaces, quotes, braces, `;` or control characters.
pub(super) fn plain(v: &str) -> Result<&str, String> {
    let bad = |b: u8| {
        b.is_ascii_control()
            || matches!(
                b,
                b' ' | b'"' | b'\'' | b'\\' | b';' | b'{' | b'}' | b'<' | b'>'
            )
    };
    if v.bytes().any(bad) {
        return Err(format!(
            "{v:?} contains a space, quote, brace, \";\" or control character"
        ));
    }
    Ok(v)
}

/// An `auth-request-redirect` value: a URL or path.
pub(super) fn redirect_value(v: &str) -> Result<&str, String> {
    plain(v.trim())
}

/// An `auth-cache-key`: text and nginx variables, nothing that could end a directive.
pub(super) fn cache_key(v: &str) -> Result<Template, String> {
    let t = Template::parse(v.trim())?;
    for piece in &t.pieces {
        if let TemplatePiece::Text(text) = piece {
            plain(text)?;
        }
    }
    Ok(t)
}

/// An `auth-realm`: letters, digits, spaces and `-_.,:/@!()`.
pub(super) fn realm(v: &str) -> Result<&str, String> {
    let good = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b' ' | b'-' | b'_' | b'.' | b',' | b':' | b'/' | b'@' | b'!' | b'(' | b')'
            )
    };
    if v.is_empty() || !v.bytes().all(good) {
        return Err(format!(
            "{v:?} may only contain letters, digits, spaces and - _ . , : / @ ! ( )"
        ));
    }
    Ok(v)
}

/// `auth-cache-duration`: comma-separated entries of status codes then one nginx time
/// (`200 202 401 5m`, `5m` alone for 200, 301 and 302, `any 1m`).
pub(super) fn cache_durations(value: &str) -> Result<Vec<(Option<u16>, Duration)>, String> {
    let mut out = Vec::new();
    for entry in values::list(value) {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let Some((time, codes)) = words.split_last() else {
            continue;
        };
        let time = nginx_time(time)?;
        if codes.is_empty() {
            out.extend([200, 301, 302].map(|c| (Some(c), time)));
        }
        for code in codes {
            if *code == "any" {
                out.push((None, time));
                continue;
            }
            let c: u16 = code
                .parse()
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| format!("has {code:?}, which is not a status code"))?;
            out.push((Some(c), time));
        }
    }
    if out.is_empty() {
        return Err("names no duration".into());
    }
    Ok(out)
}

/// An nginx time: a number with one unit (`ms`, `s`, `m`, `h`, `d`, `w`, `M`, `y`).
pub(super) fn nginx_time(v: &str) -> Result<Duration, String> {
    let at = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("has {v:?}, a time without a unit (such as 5m)"))?;
    let n: u64 = v[..at]
        .parse()
        .map_err(|_| format!("has {v:?}, which is not a time"))?;
    let unit = match &v[at..] {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        "M" => 2_592_000,
        "y" => 31_536_000,
        _ => return Err(format!("has {v:?}, which is not a time (such as 5m)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_CACHE: &str = "200 202 401 5m";

    #[test]
    fn urls_name_host_port_and_path() {
        let p = parse_url("https://auth.example:8443/oauth2/auth?x=1").unwrap();
        assert!(p.https);
        assert_eq!(p.host.as_deref(), Some("auth.example"));
        assert_eq!(p.port, 8443);
        assert_eq!(p.path.written, "/oauth2/auth?x=1");
        let p = parse_url("http://$host/oauth2/auth").unwrap();
        assert_eq!((p.host, p.port), (None, 80));
        let p = parse_url("http://[::1]:9000").unwrap();
        assert_eq!(
            (p.host.as_deref(), p.port, p.path.written.as_str()),
            (Some("::1"), 9000, "/")
        );
        for bad in [
            "ftp://x/",
            "http://",
            "http://a b/",
            "http://u:p@x/",
            "http://x:99999/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_durations_follow_proxy_cache_valid() {
        let d = cache_durations(DEFAULT_CACHE).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0], (Some(200), Duration::from_secs(300)));
        let d = cache_durations("5m, any 10s").unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d[3], (None, Duration::from_secs(10)));
        assert!(cache_durations("200").is_err());
        assert!(cache_durations("999 5m").is_err());
        assert!(cache_durations("").is_err());
    }
}
