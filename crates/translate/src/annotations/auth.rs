//! Who may use a route beyond its source lists: `auth-type: basic` with `auth-secret`,
//! `auth-secret-type` and `auth-realm`; an authentication service with `auth-url` and its
//! options; and `satisfy`, which combines either with the source allow list.
//!
//! A value that cannot be honoured closes the route (503) rather than serving it without the
//! authentication it asked for, as ingress-nginx answers such a location with an error.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use http::HeaderName;
use table::auth::{
    basic_challenge, Auth, AuthCache, BasicAuth, ExternalAuth, PasswordHash, Template, User,
};
use table::Policy;

use super::{upstream, values, Reader};
use crate::Severity;

const TYPE: &str = "auth-type";
const SECRET: &str = "auth-secret";
const SECRET_TYPE: &str = "auth-secret-type";
const REALM: &str = "auth-realm";
const URL: &str = "auth-url";
const SATISFY: &str = "satisfy";

/// The realm nginx shows when `auth-realm` is not set.
const DEFAULT_REALM: &str = "Authentication Required";
/// ingress-nginx's default for `auth-cache-duration`.
const DEFAULT_CACHE: &str = "200 202 401 5m";

/// A syntax check of one annotation's value.
type Check = fn(&str) -> Result<(), String>;

/// The options of `auth-url`, checked on their own when `auth-url` is not set (so a bad value
/// is still reported as one).
const EXTERNAL_OPTIONS: &[(&str, Check)] = &[
    ("auth-method", |v| method(v).map(drop)),
    ("auth-signin", |v| {
        signin_url(v).and_then(|_| Template::parse(v).map(drop))
    }),
    ("auth-signin-redirect-param", |v| param_name(v).map(drop)),
    ("auth-response-headers", |v| header_names(v).map(drop)),
    ("auth-request-redirect", |v| redirect_value(v).map(drop)),
    ("auth-cache-key", |v| cache_key(v).map(drop)),
    ("auth-cache-duration", |v| cache_durations(v).map(drop)),
    ("auth-always-set-cookie", |v| values::boolean(v).map(drop)),
    ("auth-proxy-set-headers", object_name),
    ("auth-keepalive", |v| values::integer(v).map(drop)),
    ("auth-keepalive-requests", |v| values::integer(v).map(drop)),
    ("auth-keepalive-timeout", |v| values::integer(v).map(drop)),
    ("auth-keepalive-share-vars", |v| {
        values::boolean(v).map(drop)
    }),
];

/// The options of `auth-type`, checked on their own when it is not set.
const BASIC_OPTIONS: &[(&str, Check)] = &[
    (SECRET, object_name),
    (SECRET_TYPE, |v| match v.trim() {
        "auth-file" | "auth-map" => Ok(()),
        _ => Err("is neither auth-file nor auth-map".into()),
    }),
    (REALM, |v| realm(v).map(drop)),
];

/// `name` or `namespace/name` with valid names (which namespace is checked where it is used).
fn object_name(v: &str) -> Result<(), String> {
    let (namespace, _) = v.trim().split_once('/').unwrap_or(("", v));
    values::local_object(v, namespace).map(drop)
}

/// Reads the authentication annotations into `policy`.
pub(super) fn read(r: &mut Reader<'_>, policy: &mut Policy) {
    if r.get(URL).is_none() {
        alone(r, EXTERNAL_OPTIONS, URL);
    }
    if r.get(TYPE).is_none() {
        alone(r, BASIC_OPTIONS, TYPE);
    }
    let basic = basic(r, policy);
    let external = external(r, policy);
    let satisfy_any = match r.get(SATISFY).map(str::trim) {
        None | Some("all") => false,
        Some("any") => true,
        Some(other) => {
            r.note(
                Severity::Error,
                SATISFY,
                format!("{other:?} is neither \"any\" nor \"all\"; using \"all\""),
            );
            false
        }
    };
    if basic.is_some() || external.is_some() {
        policy.auth = Some(Auth {
            basic,
            external,
            satisfy_any,
        });
    } else if satisfy_any {
        r.note(
            Severity::Warning,
            SATISFY,
            "has no effect: the Ingress asks for no authentication",
        );
    }
}

/// Checks options set without the annotation they belong to: a bad value is an error, a good
/// one has no effect.
fn alone(r: &mut Reader<'_>, options: &[(&str, Check)], main: &str) {
    for (name, check) in options {
        if r.parse(name, check).is_some() {
            r.note(
                Severity::Warning,
                name,
                format!("has no effect without {main}; ignored"),
            );
        }
    }
}

/// Closes the route: `name` could not be honoured.
fn refuse(r: &mut Reader<'_>, policy: &mut Policy, name: &str, why: String) {
    r.note(
        Severity::Error,
        name,
        format!("{why}; the route answers 503 until this is fixed"),
    );
    policy.denied = Some(format!("{} could not be honoured", r.field(name)));
}

fn basic(r: &mut Reader<'_>, policy: &mut Policy) -> Option<BasicAuth> {
    let kind = r.get(TYPE)?.trim();
    match kind {
        "basic" => {}
        "digest" => {
            refuse(
                r,
                policy,
                TYPE,
                "\"digest\": digest authentication is not supported by Portcullis (use basic over HTTPS, or auth-url)".into(),
            );
            return None;
        }
        other => {
            refuse(
                r,
                policy,
                TYPE,
                format!("{other:?} is not an authentication type (basic or digest)"),
            );
            return None;
        }
    }
    let as_map = match r.get(SECRET_TYPE).map(str::trim) {
        None | Some("auth-file") => false,
        Some("auth-map") => true,
        Some(other) => {
            refuse(
                r,
                policy,
                SECRET_TYPE,
                format!("{other:?} is neither auth-file nor auth-map"),
            );
            return None;
        }
    };
    let written = r.get(REALM).unwrap_or(DEFAULT_REALM);
    let challenge = realm(written)
        .and_then(|_| basic_challenge(written).ok_or_else(|| "is not a valid realm".to_string()));
    let challenge = match challenge {
        Ok(c) => c,
        Err(why) => {
            refuse(r, policy, REALM, why);
            return None;
        }
    };
    let realm = written.to_string();
    let namespace = r.namespace();
    let Some(written) = r.get(SECRET) else {
        refuse(r, policy, SECRET, "is not set, but auth-type is".into());
        return None;
    };
    let name = match values::local_object(written, namespace) {
        Ok(n) => n,
        Err(why) => {
            refuse(r, policy, SECRET, format!("{written:?} {why}"));
            return None;
        }
    };
    let Some(secret) = r.secret(name) else {
        refuse(
            r,
            policy,
            SECRET,
            format!("names Secret {namespace}/{name}, which does not exist"),
        );
        return None;
    };
    let data = secret.data.as_ref();
    let pairs: Vec<(String, String)> = if as_map {
        data.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    } else {
        let Some(file) = data.and_then(|d| d.get("auth")) else {
            refuse(
                r,
                policy,
                SECRET,
                format!("Secret {namespace}/{name} has no key \"auth\" (an htpasswd file)"),
            );
            return None;
        };
        String::from_utf8_lossy(&file.0)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(':') {
                Some((u, h)) => (u.to_string(), h.to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect()
    };
    let mut users = Vec::new();
    for (i, (user, hash)) in pairs.into_iter().enumerate() {
        match PasswordHash::parse(&hash) {
            Ok(hash) if !user.is_empty() => users.push(User { name: user, hash }),
            Ok(_) => r.note(
                Severity::Warning,
                SECRET,
                format!("Secret {namespace}/{name}: entry {} has no user name; skipped", i + 1),
            ),
            Err(why) => r.note(
                Severity::Warning,
                SECRET,
                format!("Secret {namespace}/{name}: the password of user {user:?} {why}; that user cannot sign in"),
            ),
        }
    }
    users.sort_by(|a, b| a.name.cmp(&b.name));
    users.dedup_by(|later, first| later.name == first.name);
    if users.is_empty() {
        r.note(
            Severity::Warning,
            SECRET,
            format!(
                "Secret {namespace}/{name} lists no usable user; every request is refused (401)"
            ),
        );
    }
    let mut hasher = std::hash::DefaultHasher::new();
    (&realm, namespace, name).hash(&mut hasher);
    for u in &users {
        u.name.hash(&mut hasher);
        match &u.hash {
            PasswordHash::Bcrypt(h) | PasswordHash::Sha1(h) => h.hash(&mut hasher),
            PasswordHash::Apr1 { salt, hash } => (salt, hash).hash(&mut hasher),
        }
    }
    Some(BasicAuth {
        realm,
        challenge,
        secret: format!("{namespace}/{name}"),
        users,
        id: hasher.finish(),
    })
}

/// The parts of an `auth-url`.
struct Parsed {
    https: bool,
    host: Option<String>,
    port: u16,
    path: Template,
}

fn parse_url(v: &str) -> Result<Parsed, String> {
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

fn external(r: &mut Reader<'_>, policy: &mut Policy) -> Option<ExternalAuth> {
    let url = r.get(URL)?.trim();
    let parsed = match parse_url(url) {
        Ok(p) => p,
        Err(why) => {
            refuse(r, policy, URL, format!("{url:?} {why}"));
            return None;
        }
    };
    let method = match r.get("auth-method").map(method).transpose() {
        Ok(m) => m,
        Err(why) => {
            refuse(r, policy, "auth-method", why);
            return None;
        }
    };
    let redirect_param = match r.get("auth-signin-redirect-param").map(param_name) {
        None => "rd".to_string(),
        Some(Ok(p)) => p.to_string(),
        Some(Err(why)) => {
            refuse(r, policy, "auth-signin-redirect-param", why);
            return None;
        }
    };
    let mut signin = None;
    let mut param = Some(redirect_param.clone());
    if let Some(v) = r.get("auth-signin").map(str::trim) {
        match signin_url(v).and_then(|_| Template::parse(v)) {
            Ok(t) => {
                let query = v.split_once('?').map_or("", |(_, q)| q);
                if query.split('&').any(|kv| {
                    kv.split_once('=')
                        .is_some_and(|(k, val)| k == redirect_param && !val.is_empty())
                }) {
                    param = None;
                }
                signin = Some(t);
            }
            Err(why) => {
                refuse(r, policy, "auth-signin", format!("{v:?} {why}"));
                return None;
            }
        }
    }
    let response_headers = header_list(r, policy)?;
    let request_redirect = match r.get("auth-request-redirect").map(redirect_value) {
        None => None,
        Some(Ok(v)) => Some(v).filter(|v| !v.is_empty()),
        Some(Err(why)) => {
            refuse(r, policy, "auth-request-redirect", why);
            return None;
        }
    };
    let set_headers = proxy_set_headers(r, policy)?;
    let cache = cache(r, policy, url)?;
    let always_set_cookie = r.boolean("auth-always-set-cookie", false);
    for (name, check) in &EXTERNAL_OPTIONS[9..] {
        if r.parse(name, check).is_some() {
            r.note(
                Severity::Info,
                name,
                "accepted; connections to the authentication service are always pooled",
            );
        }
    }
    let tls = if parsed.https {
        upstream::fallback_tls(false).map(|mut t| {
            t.sni = parsed.host.is_some();
            t.name = parsed.host.clone();
            t
        })
    } else {
        None
    };
    Some(ExternalAuth {
        url: url.to_string(),
        https: parsed.https,
        host: parsed.host,
        port: parsed.port,
        path: parsed.path,
        method,
        signin,
        redirect_param: param,
        response_headers,
        request_redirect: request_redirect.map(str::to_string),
        set_headers,
        cache,
        always_set_cookie,
        tls,
    })
}

/// An `auth-signin` URL: http(s) or a path, without spaces, quotes or control characters.
fn signin_url(v: &str) -> Result<(), String> {
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

fn header_list(r: &mut Reader<'_>, policy: &mut Policy) -> Option<Vec<HeaderName>> {
    let Some(v) = r.get("auth-response-headers") else {
        return Some(Vec::new());
    };
    match header_names(v) {
        Ok(names) => Some(names),
        Err(why) => {
            refuse(r, policy, "auth-response-headers", why);
            None
        }
    }
}

/// A comma-separated list of header names (letters, digits, `-` and `_`).
fn header_names(v: &str) -> Result<Vec<HeaderName>, String> {
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
fn method(v: &str) -> Result<String, String> {
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
fn param_name(v: &str) -> Result<&str, String> {
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
fn plain(v: &str) -> Result<&str, String> {
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
fn redirect_value(v: &str) -> Result<&str, String> {
    plain(v.trim())
}

/// An `auth-cache-key`: text and nginx variables, nothing that could end a directive.
fn cache_key(v: &str) -> Result<Template, String> {
    let t = Template::parse(v.trim())?;
    for piece in &t.pieces {
        if let table::auth::TemplatePiece::Text(text) = piece {
            plain(text)?;
        }
    }
    Ok(t)
}

/// An `auth-realm`: letters, digits, spaces and `-_.,:/@!()`.
fn realm(v: &str) -> Result<&str, String> {
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

fn proxy_set_headers(
    r: &mut Reader<'_>,
    policy: &mut Policy,
) -> Option<Vec<(HeaderName, Template)>> {
    const NAME: &str = "auth-proxy-set-headers";
    let Some(v) = r.get(NAME) else {
        return Some(Vec::new());
    };
    let namespace = r.namespace();
    let name = match values::local_object(v, namespace) {
        Ok(n) => n,
        Err(why) => {
            refuse(r, policy, NAME, format!("{v:?} {why}"));
            return None;
        }
    };
    let Some(map) = r.config_map(name) else {
        refuse(
            r,
            policy,
            NAME,
            format!("names ConfigMap {namespace}/{name}, which does not exist"),
        );
        return None;
    };
    let mut out = Vec::new();
    for (field, value) in map.data.iter().flatten() {
        let valid = !field.is_empty()
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let parsed = HeaderName::from_bytes(field.as_bytes())
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| "is not a header name".to_string())
            .and_then(|h| {
                if value.bytes().any(|b| b.is_ascii_control()) {
                    return Err("has a control character in its value".into());
                }
                Template::parse(value).map(|t| (h, t))
            });
        match parsed {
            Ok(pair) => out.push(pair),
            Err(why) => {
                refuse(
                    r,
                    policy,
                    NAME,
                    format!("ConfigMap {namespace}/{name}: key {field:?} {why}"),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn cache(r: &mut Reader<'_>, policy: &mut Policy, url: &str) -> Option<Option<AuthCache>> {
    let duration = r.get("auth-cache-duration");
    let Some(key) = r
        .get("auth-cache-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        if duration.is_some() {
            r.note(
                Severity::Warning,
                "auth-cache-duration",
                "has no effect without auth-cache-key",
            );
        }
        return Some(None);
    };
    let key = match cache_key(key) {
        Ok(t) => t,
        Err(why) => {
            refuse(r, policy, "auth-cache-key", format!("{key:?} {why}"));
            return None;
        }
    };
    let written = duration.unwrap_or(DEFAULT_CACHE);
    let durations = match cache_durations(written) {
        Ok(d) => d,
        Err(why) => {
            refuse(
                r,
                policy,
                "auth-cache-duration",
                format!("{written:?} {why}"),
            );
            return None;
        }
    };
    let mut hasher = std::hash::DefaultHasher::new();
    (url, &key.written, r.namespace()).hash(&mut hasher);
    Some(Some(AuthCache {
        key,
        durations,
        id: hasher.finish(),
    }))
}

/// `auth-cache-duration`: comma-separated entries of status codes then one nginx time
/// (`200 202 401 5m`, `5m` alone for 200, 301 and 302, `any 1m`).
fn cache_durations(value: &str) -> Result<Vec<(Option<u16>, Duration)>, String> {
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
fn nginx_time(v: &str) -> Result<Duration, String> {
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
