//! TLS termination: certificates chosen by SNI from the published table, ALPN, session resumption.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use table::Published;

/// How many TLS sessions are kept for resumption by session id (tickets need no server state).
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// Picks the certificate for each handshake from the table published at that moment, so a
/// renewed Secret is served on the next handshake without touching open connections.
#[derive(Debug)]
pub struct SniResolver {
    published: Arc<Published>,
    fallback: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver over `published`; `fallback` serves names nothing else covers when no
    /// `--default-ssl-certificate` is configured.
    pub fn new(published: Arc<Published>, fallback: Arc<CertifiedKey>) -> Self {
        SniResolver {
            published,
            fallback,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.published.load();
        Some(
            table
                .tls
                .resolve(hello.server_name())
                .map(|c| c.key.clone())
                .unwrap_or_else(|| self.fallback.clone()),
        )
    }
}

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The fallback certificate could not be generated.
    #[error("generating the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The server configuration for the HTTPS listener: TLS 1.2 and 1.3 with the provider's modern
/// AEAD suites, ALPN `h2` then `http/1.1`, resumption by tickets and by session id.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    Ok(Arc::new(config))
}

/// A self-signed certificate for clients that reach no configured host, generated at start-up.
pub fn generated_certificate() -> Result<Arc<CertifiedKey>, TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["portcullis.invalid".to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Portcullis Default Certificate");
    let cert = params.self_signed(&key)?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(
        vec![cert.der().clone()],
        der,
        &provider,
    )?))
}
