//! Who may use a route beyond its source lists: `auth-type: basic` with `auth-secret`,
//! `auth-secret-type` and `auth-realm`; an authentication service with `auth-url` and its
//! options; and `satisfy`, which combines either with the source allow list.
//!
//! A value that cannot be honoured closes the route (503) rather than serving it without the
//! authentication it asked for, as ingress-nginx answers such a location with an error.

use std::hash::{Hash, Hasher};

use http::HeaderName;
use table::auth::{
    basic_challenge, Auth, AuthCache, BasicAuth, ExternalAuth, PasswordHash, Template, User,
};
use table::Policy;

mod checks;

use checks::{
    cache_durations, cache_key, header_names, method, param_name, parse_url, realm, redirect_value,
    signin_url,
};

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
    let label = format!("{namespace}/{name}");
    let users = users(r, pairs, &label);
    let id = list_id(&realm, &label, &users);
    Some(BasicAuth {
        realm,
        challenge,
        secret: label,
        users,
        id,
    })
}

/// The users of (user, hash) pairs read from Secret `label`, sorted, the first of a name kept;
/// an entry that cannot be used is warned about by user name (never by its hash).
fn users(r: &mut Reader<'_>, pairs: Vec<(String, String)>, label: &str) -> Vec<User> {
    let mut users = Vec::new();
    for (i, (user, hash)) in pairs.into_iter().enumerate() {
        match PasswordHash::parse(&hash) {
            Ok(hash) if !user.is_empty() => users.push(User { name: user, hash }),
            Ok(_) => r.note(
                Severity::Warning,
                SECRET,
                format!("Secret {label}: entry {} has no user name; skipped", i + 1),
            ),
            Err(why) => r.note(
                Severity::Warning,
                SECRET,
                format!(
                    "Secret {label}: the password of user {user:?} {why}; that user cannot sign in"
                ),
            ),
        }
    }
    users.sort_by(|a, b| a.name.cmp(&b.name));
    users.dedup_by(|later, first| later.name == first.name);
    if users.is_empty() {
        r.note(
            Severity::Warning,
            SECRET,
            format!("Secret {label} lists no usable user; every request is refused (401)"),
        );
    }
    users
}

/// Identifies a password list among remembered verifications: it changes with any user.
fn list_id(realm: &str, label: &str, users: &[User]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (realm, label).hash(&mut hasher);
    for u in users {
        u.name.hash(&mut hasher);
        match &u.hash {
            PasswordHash::Bcrypt(h) | PasswordHash::Sha1(h) => h.hash(&mut hasher),
            PasswordHash::Apr1 { salt, hash } => (salt, hash).hash(&mut hasher),
        }
    }
    hasher.finish()
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
    let (signin, param) = signin(r, policy)?;
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

/// `auth-signin` and the parameter that carries the original URL (`None` when the sign-in URL
/// already sets it, as ingress-nginx leaves such a URL alone).
fn signin(r: &mut Reader<'_>, policy: &mut Policy) -> Option<(Option<Template>, Option<String>)> {
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
    Some((signin, param))
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
