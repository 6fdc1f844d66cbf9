//! Certificates from `kubernetes.io/tls` Secrets, chosen by SNI.

use std::collections::HashMap;
use std::sync::Arc;

use model::{Kind, ObjectKey, Secret, Snapshot};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use table::{Certificate, HostPattern};

use crate::{Diagnostic, Severity};

/// Warn about certificates that expire within this many seconds.
pub const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

/// Parses and checks a TLS Secret: PEM chain in `tls.crt`, PEM key in `tls.key`, key matching the
/// leaf certificate. The error says what is wrong, for a diagnostic.
pub fn certificate_from_secret(key: &ObjectKey, secret: &Secret) -> Result<Certificate, String> {
    let data = secret.data.as_ref();
    let field = |name: &str| data.and_then(|d| d.get(name)).map(|b| b.0.as_slice());
    let crt = field("tls.crt").ok_or("has no tls.crt")?;
    let pem_key = field("tls.key").ok_or("has no tls.key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not a PEM certificate chain ({e})"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no PEM CERTIFICATE block".into());
    }
    let private = PrivateKeyDer::from_pem_slice(pem_key)
        .map_err(|e| format!("tls.key is not a PEM private key ({e})"))?;
    let provider = table::crypto_provider();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| format!("tls.crt: the first certificate cannot be parsed ({e})"))?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                dns_names.push(n.to_ascii_lowercase());
            }
        }
    }
    let not_after = leaf.validity().not_after.timestamp();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "tls.key does not belong to the certificate in tls.crt".to_string()
        }
        other => format!("tls.key cannot be used ({other})"),
    })?;
    Ok(Certificate {
        source: key.to_string(),
        dns_names,
        not_after,
        key: Arc::new(certified),
    })
}

/// Whether a certificate's DNS names cover a TLS host of an Ingress.
pub fn covers(dns_names: &[String], host: &HostPattern) -> bool {
    let host = host.display();
    dns_names.iter().any(|san| {
        if *san == host {
            return true;
        }
        // A wildcard SAN covers exactly one label, like a wildcard host.
        match san.strip_prefix("*.") {
            Some(suffix) => HostPattern::Wildcard(suffix.to_string()).matches(&host),
            None => false,
        }
    })
}

/// A Secret as last seen and what parsing it gave.
type Parsed = (Arc<Secret>, Result<Arc<Certificate>, String>);

/// Certificates parsed from Secrets, kept across translations: a Secret is parsed again only when
/// it changes.
#[derive(Default)]
pub struct CertCache {
    parsed: HashMap<ObjectKey, Parsed>,
}

impl CertCache {
    /// The parse of `secret` (stored under `key`), from the cache while the Secret is unchanged.
    fn parse(&mut self, key: &ObjectKey, secret: &Arc<Secret>) -> Result<Arc<Certificate>, String> {
        if let Some((seen, result)) = self.parsed.get(key) {
            if Arc::ptr_eq(seen, secret) || **seen == **secret {
                return result.clone();
            }
        }
        let result = certificate_from_secret(key, secret)
            .map(Arc::new)
            .map_err(|e| format!("Secret {key} {e}"));
        self.parsed
            .insert(key.clone(), (secret.clone(), result.clone()));
        result
    }

    /// Forgets the Secrets one translation did not ask for.
    fn keep_only<V>(&mut self, used: &HashMap<ObjectKey, V>) {
        if self.parsed.len() > used.len() {
            self.parsed.retain(|key, _| used.contains_key(key));
        }
    }
}

/// Loads each Secret once per translation, remembering failures so each is reported once.
pub struct SecretCache<'a> {
    certs: &'a mut CertCache,
    loaded: HashMap<ObjectKey, Result<Arc<Certificate>, String>>,
}

impl<'a> SecretCache<'a> {
    /// A translation's view of the certificates parsed so far.
    pub fn new(certs: &'a mut CertCache) -> Self {
        SecretCache {
            certs,
            loaded: HashMap::new(),
        }
    }

    /// The certificate in a Secret, with a diagnostic on the Secret the first time it fails.
    pub fn get(
        &mut self,
        snapshot: &Snapshot,
        key: &ObjectKey,
        now: Option<i64>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Result<Arc<Certificate>, String> {
        if let Some(found) = self.loaded.get(key) {
            return found.clone();
        }
        let result = match snapshot.secrets.get(key) {
            None => Err(format!("Secret {key} not found")),
            Some(secret) => {
                let ty = secret.type_.as_deref().unwrap_or("Opaque");
                if ty != "kubernetes.io/tls" {
                    diagnostics.push(Diagnostic::new(
                        Severity::Warning,
                        Kind::Secret,
                        key,
                        Some("type".into()),
                        format!(
                            "is {ty:?}, not \"kubernetes.io/tls\"; using tls.crt/tls.key anyway"
                        ),
                    ));
                }
                self.certs.parse(key, secret)
            }
        };
        match &result {
            Err(e) if snapshot.secrets.contains_key(key) => diagnostics.push(Diagnostic::new(
                Severity::Error,
                Kind::Secret,
                key,
                Some("data".into()),
                e.clone(),
            )),
            Ok(cert) => {
                if let Some(now) = now {
                    let left = cert.not_after - now;
                    if left < 0 {
                        diagnostics.push(Diagnostic::new(
                            Severity::Error,
                            Kind::Secret,
                            key,
                            Some("data.tls.crt".into()),
                            "certificate has expired; clients will reject it",
                        ));
                    } else if left < EXPIRY_WARNING_SECS {
                        diagnostics.push(Diagnostic::new(
                            Severity::Warning,
                            Kind::Secret,
                            key,
                            Some("data.tls.crt".into()),
                            format!("certificate expires in {} day(s)", left / 86_400),
                        ));
                    }
                }
            }
            Err(_) => {}
        }
        self.loaded.insert(key.clone(), result.clone());
        result
    }
}

impl Drop for SecretCache<'_> {
    fn drop(&mut self) {
        self.certs.keep_only(&self.loaded);
    }
}
