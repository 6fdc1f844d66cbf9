//! Certificates by server name: part of the table, so routes and certificates change together.

use crate::fasthash::FastMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use serde::Serialize;

/// The cryptography every TLS configuration uses, on the listener and towards upstreams:
/// aws-lc-rs, whose X25519 and P-256 are assembly with the CPU's wide-multiply instructions
/// (`cargo bench -p portcullis-proxy --bench handshake` compares it with ring).
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The listener's session-ticket keys, from the same cryptography.
pub fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// A usable certificate chain with its key, and what `check` and `/config` show about it.
#[derive(Debug, Serialize)]
pub struct Certificate {
    /// `namespace/name` of the Secret it came from (or a description of its origin).
    pub source: String,
    /// DNS names from the leaf certificate's subjectAltName extension.
    pub dns_names: Vec<String>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The chain and signing key handed to rustls.
    #[serde(skip)]
    pub key: Arc<CertifiedKey>,
}

/// Which certificate each server name (SNI) gets.
#[derive(Debug, Default, Serialize)]
pub struct TlsTable {
    /// Certificates for exact host names (lower-case).
    pub exact: FastMap<String, Arc<Certificate>>,
    /// Certificates for `*.suffix` hosts, keyed by `suffix`.
    pub wildcard: FastMap<String, Arc<Certificate>>,
    /// The certificate for names nothing else covers and for clients without SNI
    /// (`--default-ssl-certificate`); when absent the proxy uses its generated one.
    pub default: Option<Arc<Certificate>>,
}

impl TlsTable {
    /// The certificate configured for a server name: exact, then one-label wildcard. `None` means
    /// "use the default certificate".
    pub fn for_server_name(&self, name: &str) -> Option<&Arc<Certificate>> {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(cert) = self.exact.get(name) {
            return Some(cert);
        }
        let (label, rest) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(rest)
    }

    /// The certificate a handshake gets: by SNI, else the configured default.
    pub fn resolve(&self, server_name: Option<&str>) -> Option<&Arc<Certificate>> {
        server_name
            .and_then(|n| self.for_server_name(n))
            .or(self.default.as_ref())
    }

    /// Whether any certificate is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}
