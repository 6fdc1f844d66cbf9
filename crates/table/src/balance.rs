//! How a route's requests are spread over its backend's endpoints when its Ingress asks for
//! more than round robin: session affinity by cookie (`affinity: cookie`), a hash of request
//! parts (`upstream-hash-by`) or the endpoint answering fastest (`load-balance: ewma`).
//!
//! Only the typed rules live here; the state the choices need (latencies) lives in the proxy,
//! keyed by endpoint, so it outlives every table.

use serde::Serialize;

/// A route's balancing rules, in ingress-nginx's order of precedence: a cookie affinity first,
/// then a hash key, then the algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// `load-balance`: how endpoints are chosen when neither affinity nor a hash decides.
    pub algorithm: Algorithm,
    /// `upstream-hash-by`: the request parts hashed onto an endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_by: Option<HashKey>,
    /// `affinity: cookie` and its `session-cookie-*` settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// `load-balance`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each ready endpoint in turn.
    #[default]
    RoundRobin,
    /// The lower-latency of two endpoints drawn at random (latency as an exponentially
    /// weighted moving average of response times).
    Ewma,
}

impl Algorithm {
    /// Reads `round_robin` or `ewma`.
    pub fn parse(value: &str) -> Result<Algorithm, String> {
        match value.trim() {
            "round_robin" => Ok(Algorithm::RoundRobin),
            "ewma" => Ok(Algorithm::Ewma),
            _ => Err("is not a load-balancing algorithm (round_robin or ewma)".into()),
        }
    }
}

/// A hash key written with nginx variables, such as `$remote_addr` or `$http_x_user$uri`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HashKey {
    /// As written.
    pub written: String,
    /// Its parts, in order.
    #[serde(skip)]
    pub parts: Vec<KeyPart>,
}

/// One part of a [`HashKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    /// Literal text.
    Text(String),
    /// `$remote_addr`, `$binary_remote_addr`: the client address.
    RemoteAddr,
    /// `$request_uri`: path and query as received.
    RequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$args`, `$query_string`: the query.
    Args,
    /// `$host`, `$http_host`: the host.
    Host,
    /// `$scheme`.
    Scheme,
    /// `$request_method`.
    Method,
    /// `$http_NAME`: a request header (lower case, `-` for `_`).
    Header(String),
    /// `$cookie_NAME`: a request cookie.
    Cookie(String),
    /// `$arg_NAME`: a query parameter.
    Arg(String),
}

impl HashKey {
    /// Reads a key; an unknown variable is an error naming it (nginx would resolve it to
    /// something Portcullis cannot see, so it is not silently hashed as empty).
    pub fn parse(written: &str) -> Result<HashKey, String> {
        let mut parts = Vec::new();
        let mut rest = written;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(KeyPart::Text(rest[..at].to_string()));
            }
            rest = &rest[at + 1..];
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("has an unclosed ${{ in {written:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            parts.push(variable(name)?);
            rest = after;
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| !matches!(p, KeyPart::Text(_))) {
            return Err("names no variable: every request would hash alike".into());
        }
        Ok(HashKey {
            written: written.to_string(),
            parts,
        })
    }
}

/// The part an nginx variable name stands for.
fn variable(name: &str) -> Result<KeyPart, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    Ok(match name {
        "remote_addr" | "binary_remote_addr" => KeyPart::RemoteAddr,
        "request_uri" => KeyPart::RequestUri,
        "uri" | "document_uri" => KeyPart::Uri,
        "args" | "query_string" => KeyPart::Args,
        "host" | "http_host" => KeyPart::Host,
        "scheme" => KeyPart::Scheme,
        "request_method" => KeyPart::Method,
        _ => {
            if let Some(h) = named("http_") {
                KeyPart::Header(h.to_ascii_lowercase().replace('_', "-"))
            } else if let Some(c) = named("cookie_") {
                KeyPart::Cookie(c)
            } else if let Some(a) = named("arg_") {
                KeyPart::Arg(a)
            } else {
                return Err(format!("uses ${name}, a variable Portcullis does not know"));
            }
        }
    })
}

/// Cookie-based session affinity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Affinity {
    /// `affinity-mode`.
    pub mode: AffinityMode,
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub name: String,
    /// `session-cookie-path` (default: the route's path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `session-cookie-domain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `session-cookie-max-age`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    /// `session-cookie-expires`, seconds from the time the cookie is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// `session-cookie-secure`.
    pub secure: bool,
    /// `session-cookie-samesite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// `session-cookie-conditional-samesite-none`: leave `SameSite=None` out for browsers known
    /// to mishandle it.
    pub conditional_same_site_none: bool,
    /// `session-cookie-change-on-failure`: after a failed attempt the cookie names the
    /// endpoint that answered instead.
    pub change_on_failure: bool,
}

/// `affinity-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityMode {
    /// A session key hashed onto the endpoints: when the backend scales up, a share of sessions
    /// moves to the new endpoints.
    #[default]
    Balanced,
    /// The cookie names its endpoint: sessions stay while it is ready.
    Persistent,
}

/// A cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SameSite {
    /// `None`.
    None,
    /// `Lax`.
    Lax,
    /// `Strict`.
    Strict,
}

impl SameSite {
    /// Reads `None`, `Lax` or `Strict` (any case).
    pub fn parse(value: &str) -> Result<SameSite, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(SameSite::None),
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            _ => Err("is not a SameSite value (None, Lax or Strict)".into()),
        }
    }

    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_read_nginx_variables() {
        let key = HashKey::parse("$remote_addr-${http_x_user}x$cookie_sid$arg_id").unwrap();
        assert_eq!(
            key.parts,
            [
                KeyPart::RemoteAddr,
                KeyPart::Text("-".into()),
                KeyPart::Header("x-user".into()),
                KeyPart::Text("x".into()),
                KeyPart::Cookie("sid".into()),
                KeyPart::Arg("id".into()),
            ]
        );
        assert_eq!(
            HashKey::parse("$request_uri").unwrap().parts,
            [KeyPart::RequestUri]
        );
        for bad in ["", "constant", "$nope", "${host", "$http_"] {
            assert!(HashKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
