//! Annotation strings → typed values. Every parser names what it expected, for the diagnostic;
//! the character sets are ingress-nginx's, so a value it accepts is accepted here and a value
//! that could carry configuration syntax (newlines, `;`, `{`, quotes) never is.

use std::time::Duration;

/// `true` or `false` (any case, surrounding space ignored).
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("is not \"true\" or \"false\"".into()),
    }
}

/// `on` or `off`.
pub fn on_off(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("is not \"on\" or \"off\"".into()),
    }
}

/// A whole number.
pub fn integer(value: &str) -> Result<i64, String> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| "is not a whole number".into())
}

/// A number of seconds (a whole number, as ingress-nginx reads its timeout annotations).
pub fn seconds(value: &str) -> Result<Duration, String> {
    match integer(value)? {
        n if n >= 0 => Ok(Duration::from_secs(n.unsigned_abs())),
        _ => Err("is negative; give a number of seconds".into()),
    }
}

/// An nginx size: digits with an optional `b`, `k`, `m` or `g` suffix (any case).
pub fn size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let (digits, unit) = match v.as_bytes().last() {
        Some(b) if b.is_ascii_alphabetic() => (&v[..v.len() - 1], b.to_ascii_lowercase()),
        _ => (v, b'b'),
    };
    let shift = match unit {
        b'b' => 0,
        b'k' => 10,
        b'm' => 20,
        b'g' => 30,
        _ => return Err("is not a size (digits with an optional k, m or g)".into()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a size (digits with an optional k, m or g)".into());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| "is too large".into())
}

/// Letters, digits and `-._~/:` — the characters ingress-nginx allows in plain values.
fn basic(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':')
}

/// A path that may name capture groups (`rewrite-target`, `app-root`, `x-forwarded-prefix`):
/// ingress-nginx's character set (letters, digits, `-._~/:$`).
pub fn path_with_captures(value: &str) -> Result<&str, String> {
    let v = value;
    if v.bytes().all(|b| basic(b) || b == b'$') {
        Ok(v)
    } else {
        Err("may only contain letters, digits and - . _ ~ / : $".into())
    }
}

/// An `http://` or `https://` URL of ingress-nginx's character set (letters, digits and
/// `-._~/:,?&=`), for redirects.
pub fn url(value: &str) -> Result<&str, String> {
    let v = value;
    if !v
        .bytes()
        .all(|b| basic(b) || matches!(b, b',' | b'?' | b'&' | b'='))
    {
        return Err("may only contain letters, digits and - . _ ~ / : , ? & =".into());
    }
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host".into());
    }
    Ok(v)
}

/// A DNS name with an optional port (`upstream-vhost`).
pub fn server_name(value: &str) -> Result<&str, String> {
    let v = value.trim();
    let (name, port) = match v.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (v, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if name_ok && port_ok {
        Ok(v)
    } else {
        Err("is not a host name with an optional :port".into())
    }
}

/// `name` or `namespace/name` of an object in `namespace` (objects in other namespaces are
/// refused, as ingress-nginx refuses them for these annotations).
pub fn local_object<'v>(value: &'v str, namespace: &str) -> Result<&'v str, String> {
    let v = value.trim();
    let name = match v.split_once('/') {
        Some((ns, name)) if ns == namespace => name,
        Some((ns, _)) => {
            return Err(format!(
                "names namespace {ns:?}; only objects in the Ingress's namespace {namespace:?} may be used"
            ))
        }
        None => v,
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if valid {
        Ok(name)
    } else {
        Err("is not the name of a Kubernetes object".into())
    }
}

/// A comma-separated list with empty items dropped.
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_nginx() {
        assert_eq!(size("1m"), Ok(1 << 20));
        assert_eq!(size("8K"), Ok(8 << 10));
        assert_eq!(size("100"), Ok(100));
        assert_eq!(size("0"), Ok(0));
        assert_eq!(size("2g"), Ok(2 << 30));
        for bad in ["", "m", "1.5m", "1mb", "-1", "1 m", "99999999999999999999g"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_paths_refuse_configuration_syntax() {
        assert!(url("https://example.com/a?b=c&d").is_ok());
        for bad in [
            "https://x/;",
            "https://x/\nreturn 200",
            "ftp://x",
            "https://",
            "https:///p",
            "https://x/{",
            "https://x/\"",
        ] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
        assert!(path_with_captures("/$1/v").is_ok());
        for bad in ["/a b", "/a;", "/a}", "/a\n", "/a'", "/a#"] {
            assert!(path_with_captures(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_names_and_local_objects() {
        assert!(server_name("api.internal:8080").is_ok());
        assert!(server_name("api.internal").is_ok());
        assert!(server_name("a b").is_err());
        assert!(server_name("a:port").is_err());
        assert_eq!(local_object("ns/cm", "ns"), Ok("cm"));
        assert_eq!(local_object("cm", "ns"), Ok("cm"));
        assert!(local_object("other/cm", "ns").is_err());
        assert!(local_object("Bad_Name", "ns").is_err());
    }

    #[test]
    fn booleans_and_numbers() {
        assert_eq!(boolean(" True "), Ok(true));
        assert!(boolean("yes").is_err());
        assert_eq!(on_off("OFF"), Ok(false));
        assert_eq!(seconds("30"), Ok(Duration::from_secs(30)));
        assert!(seconds("30s").is_err());
        assert!(seconds("-1").is_err());
    }
}
