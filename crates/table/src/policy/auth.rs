//! Authentication of a route's requests, compiled from ingress-nginx's `auth-*` and `satisfy`
//! annotations: a password list checked by the proxy itself (`auth-type: basic`), and a
//! sub-request to an authentication service (`auth-url`). Nothing here is secret in its
//! printed form: the serialized view names the Secret and counts users, never a hash.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Serialize, Serializer};

/// How a route's requests are authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Auth {
    /// `auth-type: basic` with its password list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// `auth-url` and its options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalAuth>,
    /// `satisfy: any`: a client the source allow list admits needs no credentials.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub satisfy_any: bool,
}

/// Users and password hashes for HTTP Basic authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// `auth-realm`, as shown to the user.
    pub realm: String,
    /// The `WWW-Authenticate` value of a 401 answer.
    pub challenge: HeaderValue,
    /// The Secret the users came from (`namespace/name`).
    pub secret: String,
    /// The users, sorted by name, each name once.
    pub users: Vec<User>,
    /// Identifies this list among cached verifications (a digest of realm and users).
    pub id: u64,
}

impl BasicAuth {
    /// The user named `name`.
    pub fn user(&self, name: &[u8]) -> Option<&User> {
        self.users
            .binary_search_by(|u| u.name.as_bytes().cmp(name))
            .ok()
            .map(|i| &self.users[i])
    }
}

impl Serialize for BasicAuth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "realm={:?} secret={} users={}",
            self.realm,
            self.secret,
            self.users.len()
        ))
    }
}

/// One user of a password list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The password's hash.
    pub hash: PasswordHash,
}

/// A password hash in one of the formats htpasswd writes.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// bcrypt (`$2y$`, `$2a$`, `$2b$`), as written.
    Bcrypt(String),
    /// Apache's MD5 crypt (`$apr1$salt$hash`).
    Apr1 {
        /// The salt (at most 8 characters).
        salt: String,
        /// The 22-character hash.
        hash: String,
    },
    /// `{SHA}` followed by the base64 of the password's SHA-1.
    Sha1(String),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: a hash is as good as a password to an offline guesser.
        f.write_str(match self {
            PasswordHash::Bcrypt(_) => "Bcrypt(..)",
            PasswordHash::Apr1 { .. } => "Apr1(..)",
            PasswordHash::Sha1(_) => "Sha1(..)",
        })
    }
}

impl PasswordHash {
    /// Reads a hash as htpasswd writes it; the error says why it is not accepted (never
    /// quoting the hash).
    pub fn parse(text: &str) -> Result<PasswordHash, &'static str> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or("is an apr1 hash without a salt")?;
            if salt.len() > 8 || hash.len() != 22 || !hash.bytes().all(crypt_char) {
                return Err("is not a well-formed apr1 hash");
            }
            return Ok(PasswordHash::Apr1 {
                salt: salt.to_string(),
                hash: hash.to_string(),
            });
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| text.starts_with(p)) {
            let cost = text.get(4..6).and_then(|c| c.parse::<u32>().ok());
            if text.len() != 60 || !cost.is_some_and(|c| (4..=31).contains(&c)) {
                return Err("is not a well-formed bcrypt hash");
            }
            return Ok(PasswordHash::Bcrypt(text.to_string()));
        }
        if let Some(b64) = text.strip_prefix("{SHA}") {
            if b64.len() != 28 {
                return Err("is not a well-formed {SHA} hash");
            }
            return Ok(PasswordHash::Sha1(b64.to_string()));
        }
        if text.starts_with("$1$") || text.starts_with("$5$") || text.starts_with("$6$") {
            return Err("uses a crypt(3) scheme ($1$, $5$ or $6$) that is not supported; use bcrypt (htpasswd -B)");
        }
        if text.is_empty() {
            return Err("has no password hash");
        }
        Err("is not a bcrypt, apr1 or {SHA} hash (plain text and DES crypt are not supported); use bcrypt (htpasswd -B)")
    }
}

fn crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// A sub-request to an authentication service decides on each request (`auth-url`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalAuth {
    /// The URL as written.
    pub url: String,
    /// Whether the service is reached over TLS.
    pub https: bool,
    /// The host to connect to (a name, an IPv4 address or a bracket-less IPv6 address);
    /// `None` when the URL names the request's own host (`$host`).
    pub host: Option<String>,
    /// The port.
    pub port: u16,
    /// The path and query requested.
    pub path: Template,
    /// `auth-method`: the sub-request's method (`None`: the original request's `GET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `auth-signin`: where a 401 answer redirects (302) instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signin: Option<Template>,
    /// `auth-signin-redirect-param` (default `rd`), or `None` when the sign-in URL already
    /// carries that parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_param: Option<String>,
    /// `auth-response-headers`: copied from the service's answer onto the upstream request
    /// (and always removed from what the client sent).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "names")]
    pub response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` value (`None`: the request URI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
    /// `auth-proxy-set-headers`: extra fields of the sub-request.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "named_templates"
    )]
    pub set_headers: Vec<(HeaderName, Template)>,
    /// `auth-cache-key` and `auth-cache-duration`: answers kept for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<AuthCache>,
    /// `auth-always-set-cookie`: the service's `Set-Cookie` reaches the client whatever the
    /// status of the answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub always_set_cookie: bool,
    /// TLS towards the service (certificates are not verified, as with nginx's default).
    #[serde(skip)]
    pub tls: Option<super::UpstreamTls>,
}

/// How answers of an authentication service are cached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthCache {
    /// The key, built per request.
    pub key: Template,
    /// How long an answer with a given status is kept (`None` status: any other status).
    #[serde(serialize_with = "durations")]
    pub durations: Vec<(Option<u16>, Duration)>,
    /// Identifies the route's cache among all cached answers.
    #[serde(skip)]
    pub id: u64,
}

impl AuthCache {
    /// How long an answer with `status` is kept, if at all.
    pub fn duration_for(&self, status: u16) -> Option<Duration> {
        self.durations
            .iter()
            .find(|(s, _)| *s == Some(status))
            .or_else(|| self.durations.iter().find(|(s, _)| s.is_none()))
            .map(|(_, d)| *d)
    }
}

/// A string with nginx variables filled in per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The text as written.
    pub written: String,
    /// Literal text and variables, in order.
    pub pieces: Vec<TemplatePiece>,
}

/// A piece of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePiece {
    /// Literal text.
    Text(String),
    /// A variable.
    Var(Variable),
}

/// The nginx variables a template may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    /// `$host`: the request's host without its port, lower case.
    Host,
    /// `$http_host`: the Host header as received.
    HttpHost,
    /// `$scheme` (also `$pass_access_scheme`): `http` or `https`.
    Scheme,
    /// `$request_uri`: path and query as received.
    RequestUri,
    /// `$escaped_request_uri`: the same, URI-escaped.
    EscapedRequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$args` / `$query_string`: the query.
    Args,
    /// `$request_method`.
    Method,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$remote_user`: the user name of a Basic `Authorization` header.
    RemoteUser,
    /// `$http_NAME`: a request header field.
    Header(HeaderName),
    /// `$cookie_NAME`: a cookie of the request.
    Cookie(String),
}

impl Template {
    /// Parses `$name` and `${name}` references; an unknown variable is an error naming it.
    pub fn parse(written: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = written;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced.find('}').ok_or("has a \"${\" without its \"}\"")?;
                (&braced[..end], end + 2)
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            if name.is_empty() {
                return Err("has a \"$\" not followed by a variable name".into());
            }
            if !text.is_empty() {
                pieces.push(TemplatePiece::Text(std::mem::take(&mut text)));
            }
            pieces.push(TemplatePiece::Var(Variable::parse(name)?));
            rest = &after[len..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(TemplatePiece::Text(text));
        }
        Ok(Template {
            written: written.to_string(),
            pieces,
        })
    }

    /// Whether the template names no variable.
    pub fn is_literal(&self) -> bool {
        self.pieces
            .iter()
            .all(|p| matches!(p, TemplatePiece::Text(_)))
    }
}

impl Variable {
    fn parse(name: &str) -> Result<Variable, String> {
        let name = name.to_ascii_lowercase();
        Ok(match name.as_str() {
            "host" => Variable::Host,
            "http_host" => Variable::HttpHost,
            "scheme" | "pass_access_scheme" => Variable::Scheme,
            "request_uri" => Variable::RequestUri,
            "escaped_request_uri" => Variable::EscapedRequestUri,
            "uri" | "document_uri" => Variable::Uri,
            "args" | "query_string" => Variable::Args,
            "request_method" => Variable::Method,
            "remote_addr" => Variable::RemoteAddr,
            "remote_user" => Variable::RemoteUser,
            _ => {
                if let Some(field) = name.strip_prefix("http_") {
                    let field = field.replace('_', "-");
                    return HeaderName::from_bytes(field.as_bytes())
                        .map(Variable::Header)
                        .map_err(|_| format!("names a bad header variable ${name}"));
                }
                if let Some(cookie) = name.strip_prefix("cookie_") {
                    return Ok(Variable::Cookie(cookie.to_string()));
                }
                return Err(format!(
                    "names the variable ${name}, which Portcullis does not support (supported: $host, $http_host, $scheme, $request_uri, $escaped_request_uri, $uri, $args, $request_method, $remote_addr, $remote_user, $http_NAME, $cookie_NAME)"
                ));
            }
        })
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

/// The `WWW-Authenticate` value for `realm`.
pub fn basic_challenge(realm: &str) -> Option<HeaderValue> {
    let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("Basic realm=\"{escaped}\"")).ok()
}

fn names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

fn named_templates<S: Serializer>(v: &[(HeaderName, Template)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(v.len()))?;
    for (name, t) in v {
        map.serialize_entry(name.as_str(), &t.written)?;
    }
    map.end()
}

fn durations<S: Serializer>(v: &[(Option<u16>, Duration)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(status, d)| match status {
        Some(code) => format!("{code} {}s", d.as_secs()),
        None => format!("any {}s", d.as_secs()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_recognised_by_their_prefix() {
        assert!(matches!(
            PasswordHash::parse("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"),
            Ok(PasswordHash::Apr1 { .. })
        ));
        assert!(matches!(
            PasswordHash::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
            Ok(PasswordHash::Sha1(_))
        ));
        assert!(PasswordHash::parse("$6$salt$x").is_err());
        assert!(PasswordHash::parse("plaintext").is_err());
        assert!(PasswordHash::parse("$2y$10$short").is_err());
        assert_eq!(
            format!("{:?}", PasswordHash::Sha1("secret".into())),
            "Sha1(..)"
        );
    }

    #[test]
    fn templates_know_their_variables() {
        let t = Template::parse("https://$host/start?rd=${escaped_request_uri}&x").unwrap();
        assert_eq!(
            t.pieces,
            [
                TemplatePiece::Text("https://".into()),
                TemplatePiece::Var(Variable::Host),
                TemplatePiece::Text("/start?rd=".into()),
                TemplatePiece::Var(Variable::EscapedRequestUri),
                TemplatePiece::Text("&x".into()),
            ]
        );
        let t = Template::parse("$remote_user$http_authorization").unwrap();
        assert_eq!(t.pieces.len(), 2);
        assert!(Template::parse("$upstream_addr").is_err());
        assert!(Template::parse("a$").is_err());
        assert!(Template::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn challenges_quote_the_realm() {
        assert_eq!(
            basic_challenge("Staff \"only\"").unwrap(),
            "Basic realm=\"Staff \\\"only\\\"\""
        );
    }
}
