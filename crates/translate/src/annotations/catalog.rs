//! Every ingress-nginx annotation, and what Portcullis does with it. One table drives the
//! warnings for annotations not implemented yet, the refusal of raw-configuration annotations,
//! `portcullis check --nginx-compat` and the README's compatibility table.

use std::fmt::Write as _;

/// What Portcullis does with an annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented with ingress-nginx's meaning.
    Supported,
    /// Implemented, with the difference described.
    Partly(&'static str),
    /// Never implemented: an Ingress that carries it is not served (the text says why).
    Refused(&'static str),
    /// Not implemented yet: warned about, otherwise ignored.
    NotYet,
}

impl Support {
    /// A short label for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Support::Supported => "supported",
            Support::Partly(_) => "partly",
            Support::Refused(_) => "refused",
            Support::NotYet => "not yet",
        }
    }

    /// What differs, or why it is refused.
    pub fn note(&self) -> &'static str {
        match self {
            Support::Supported | Support::NotYet => "",
            Support::Partly(note) | Support::Refused(note) => note,
        }
    }
}

/// One annotation (its name without the prefix) and what Portcullis does with it.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The name after `nginx.ingress.kubernetes.io/`.
    pub name: &'static str,
    /// What Portcullis does with it.
    pub support: Support,
}

use Support::{NotYet, Partly, Refused, Supported};

const SNIPPET: &str = "is raw nginx configuration: Portcullis never executes or pastes \
                       annotation text, so the Ingress is not served (as ingress-nginx refuses \
                       snippets by default since v1.12)";
const NO_EFFECT_BUFFERING: &str =
    "accepted; Portcullis streams bodies in both directions and does not buffer";

const AUTH_VARIABLES: &str = "nginx variables limited to $host, $http_host, $scheme, \
                              $request_uri, $escaped_request_uri, $uri, $args, $request_method, \
                              $remote_addr, $remote_user, $http_NAME and $cookie_NAME; others are \
                              refused with a diagnostic";
const AUTH_KEEPALIVE: &str =
    "accepted; connections to the authentication service are always pooled";
const AUTH_HASHES: &str = "htpasswd hashes bcrypt, apr1 and {SHA}; crypt(3), plain text and \
                           other schemes are refused per user; only the Ingress's namespace";
const AUTH_DIGEST: &str = "basic only; digest closes the route with a diagnostic";
const AUTH_URL: &str = "http or https (certificate not verified, as nginx's default); the \
                        host is a name, an address or $host";

/// Every annotation ingress-nginx documents or reads, alphabetically.
pub static CATALOG: &[Entry] = &[
    e("affinity", Supported),
    e("affinity-canary-behavior", Supported),
    e("affinity-mode", Supported),
    e("allowlist-source-range", Supported),
    e("app-root", Supported),
    e("auth-always-set-cookie", Supported),
    e("auth-cache-duration", Supported),
    e("auth-cache-key", Partly(AUTH_VARIABLES)),
    e("auth-keepalive", Partly(AUTH_KEEPALIVE)),
    e("auth-keepalive-requests", Partly(AUTH_KEEPALIVE)),
    e("auth-keepalive-share-vars", Partly(AUTH_KEEPALIVE)),
    e("auth-keepalive-timeout", Partly(AUTH_KEEPALIVE)),
    e("auth-method", Supported),
    e("auth-proxy-set-headers", Partly(AUTH_VARIABLES)),
    e("auth-realm", Supported),
    e("auth-request-redirect", Supported),
    e("auth-response-headers", Supported),
    e("auth-secret", Partly(AUTH_HASHES)),
    e("auth-secret-type", Supported),
    e("auth-signin", Partly(AUTH_VARIABLES)),
    e("auth-signin-redirect-param", Supported),
    e("auth-snippet", Refused(SNIPPET)),
    e("auth-tls-error-page", NotYet),
    e("auth-tls-match-cn", NotYet),
    e("auth-tls-pass-certificate-to-upstream", NotYet),
    e("auth-tls-secret", NotYet),
    e("auth-tls-verify-client", NotYet),
    e("auth-tls-verify-depth", NotYet),
    e("auth-type", Partly(AUTH_DIGEST)),
    e("auth-url", Partly(AUTH_URL)),
    e(
        "backend-protocol",
        Partly(
            "HTTP, HTTPS, AUTO_HTTP, GRPC and GRPCS as in ingress-nginx, plus H2C (HTTP/2 \
             without TLS) as an extension; FCGI is not supported; HTTP/1.x clients cannot \
             reach GRPC, GRPCS or H2C backends (502)",
        ),
    ),
    e("canary", Supported),
    e("canary-by-cookie", Supported),
    e("canary-by-header", Supported),
    e("canary-by-header-pattern", Supported),
    e("canary-by-header-value", Supported),
    e("canary-weight", Supported),
    e("canary-weight-total", Supported),
    e("client-body-buffer-size", Partly(NO_EFFECT_BUFFERING)),
    e("configuration-snippet", Refused(SNIPPET)),
    e("connection-proxy-header", NotYet),
    e("cors-allow-credentials", Supported),
    e("cors-allow-headers", Supported),
    e("cors-allow-methods", Supported),
    e(
        "cors-allow-origin",
        Partly(
            "an Origin must match a listed origin as a whole; ingress-nginx only anchors the \
             match at the end, so it also accepts origins that merely end with a listed one",
        ),
    ),
    e("cors-expose-headers", Supported),
    e("cors-max-age", Supported),
    e(
        "custom-headers",
        Partly("the ConfigMap is read from the Ingress's namespace only"),
    ),
    e("custom-http-errors", NotYet),
    e(
        "default-backend",
        Partly(
            "serves the route while its own Service has no ready endpoint; not used for \
             custom-http-errors yet",
        ),
    ),
    e("denylist-source-range", Supported),
    e("disable-proxy-intercept-errors", NotYet),
    e("enable-access-log", NotYet),
    e(
        "enable-cors",
        Partly(
            "as ingress-nginx: every OPTIONS request from an allowed origin is answered with \
             204 by Portcullis",
        ),
    ),
    e("enable-global-auth", NotYet),
    e("enable-modsecurity", NotYet),
    e("enable-opentelemetry", NotYet),
    e("enable-owasp-core-rules", NotYet),
    e("enable-rewrite-log", NotYet),
    e("fastcgi-index", NotYet),
    e("fastcgi-params-configmap", NotYet),
    e("force-ssl-redirect", Supported),
    e("from-to-www-redirect", Supported),
    e("http2-push-preload", NotYet),
    e("limit-allowlist", Supported),
    e("limit-burst-multiplier", Supported),
    e("limit-connections", Supported),
    e("limit-rate", NotYet),
    e("limit-rate-after", NotYet),
    e("limit-rpm", Supported),
    e("limit-rps", Supported),
    e("limit-whitelist", Supported),
    e("load-balance", Supported),
    e("location-snippet", Refused(SNIPPET)),
    e("mirror-host", NotYet),
    e("mirror-request-body", NotYet),
    e("mirror-target", NotYet),
    e("modsecurity-snippet", Refused(SNIPPET)),
    e("modsecurity-transaction-id", NotYet),
    e("opentelemetry-operation-name", NotYet),
    e("opentelemetry-trust-incoming-span", NotYet),
    e("permanent-redirect", Supported),
    e("permanent-redirect-code", Supported),
    e("preserve-trailing-slash", NotYet),
    e(
        "proxy-body-size",
        Partly(
            "413 as in ingress-nginx; a chunked body that grows past the limit after parts of \
             it were forwarded ends the exchange with 413 and closes the connection",
        ),
    ),
    e("proxy-buffer-size", Partly(NO_EFFECT_BUFFERING)),
    e("proxy-buffering", Partly(NO_EFFECT_BUFFERING)),
    e("proxy-buffers-number", Partly(NO_EFFECT_BUFFERING)),
    e("proxy-busy-buffers-size", Partly(NO_EFFECT_BUFFERING)),
    e("proxy-connect-timeout", Supported),
    e("proxy-cookie-domain", NotYet),
    e("proxy-cookie-path", NotYet),
    e(
        "proxy-http-version",
        Partly("HTTP/1.1 is always used towards HTTP upstreams; \"1.0\" is accepted and ignored"),
    ),
    e("proxy-max-temp-file-size", Partly(NO_EFFECT_BUFFERING)),
    e(
        "proxy-next-upstream",
        Partly(
            "error, timeout, invalid_header, off and non_idempotent as in ingress-nginx; the \
             http_* conditions retry only requests whose body was complete when first sent",
        ),
    ),
    e("proxy-next-upstream-timeout", Supported),
    e("proxy-next-upstream-tries", Supported),
    e("proxy-read-timeout", Supported),
    e("proxy-redirect-from", NotYet),
    e("proxy-redirect-to", NotYet),
    e("proxy-request-buffering", Partly(NO_EFFECT_BUFFERING)),
    e("proxy-send-timeout", Supported),
    e(
        "proxy-ssl-ciphers",
        Partly("accepted; rustls negotiates its own safe cipher suites"),
    ),
    e("proxy-ssl-name", Supported),
    e(
        "proxy-ssl-protocols",
        Partly("accepted; TLS 1.2 and 1.3 are always offered"),
    ),
    e("proxy-ssl-secret", Supported),
    e("proxy-ssl-server-name", Supported),
    e("proxy-ssl-verify", Supported),
    e(
        "proxy-ssl-verify-depth",
        Partly("accepted; the whole chain is verified"),
    ),
    e("relative-redirects", NotYet),
    e(
        "rewrite-target",
        Partly(
            "$1…$99 capture groups; nginx variables ($host, $request_uri, …) are not expanded \
             and are rejected",
        ),
    ),
    e("satisfy", Supported),
    e(
        "server-alias",
        Partly("exact host names only; regular-expression server names are rejected"),
    ),
    e("server-snippet", Refused(SNIPPET)),
    e("service-upstream", Supported),
    e("session-cookie-change-on-failure", Supported),
    e("session-cookie-conditional-samesite-none", Supported),
    e("session-cookie-domain", Supported),
    e("session-cookie-expires", Supported),
    e("session-cookie-max-age", Supported),
    e("session-cookie-name", Supported),
    e("session-cookie-path", Supported),
    e("session-cookie-samesite", Supported),
    e("session-cookie-secure", Supported),
    e("ssl-ciphers", NotYet),
    e("ssl-passthrough", NotYet),
    e("ssl-prefer-server-ciphers", NotYet),
    e("ssl-redirect", Supported),
    e("stream-snippet", Refused(SNIPPET)),
    e("temporal-redirect", Supported),
    e("temporal-redirect-code", Supported),
    e("upstream-hash-by", Supported),
    e("upstream-hash-by-subset", NotYet),
    e("upstream-hash-by-subset-size", NotYet),
    e("upstream-vhost", Supported),
    e("use-port-in-redirects", NotYet),
    e(
        "use-regex",
        Partly(
            "as ingress-nginx, every path of the host becomes a case-insensitive regular \
             expression anchored at the start, longest first; the regex crate's syntax (no \
             look-around, no backreferences: such paths are rejected with a diagnostic)",
        ),
    ),
    e("whitelist-source-range", Supported),
    e("x-forwarded-prefix", Supported),
];

const fn e(name: &'static str, support: Support) -> Entry {
    Entry { name, support }
}

/// What Portcullis does with the annotation `name` (without prefix), if ingress-nginx knows it.
pub fn lookup(name: &str) -> Option<&'static Entry> {
    CATALOG
        .binary_search_by(|entry| entry.name.cmp(name))
        .ok()
        .map(|i| &CATALOG[i])
}

/// The compatibility table as Markdown, for the README.
pub fn markdown() -> String {
    let mut out = String::from("| annotation | Portcullis | notes |\n|---|---|---|\n");
    for entry in CATALOG {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            entry.name,
            entry.support.label(),
            entry.support.note()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_sorted_and_unique_so_lookups_find_every_entry() {
        for pair in CATALOG.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for entry in CATALOG {
            assert_eq!(lookup(entry.name).map(|e| e.name), Some(entry.name));
        }
        assert!(lookup("no-such-annotation").is_none());
    }

    #[test]
    fn every_snippet_annotation_is_refused() {
        for name in [
            "configuration-snippet",
            "server-snippet",
            "location-snippet",
            "auth-snippet",
            "stream-snippet",
            "modsecurity-snippet",
        ] {
            assert!(
                matches!(lookup(name).map(|e| e.support), Some(Refused(_))),
                "{name}"
            );
        }
    }
}
