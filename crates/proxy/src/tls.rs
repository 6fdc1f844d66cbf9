//! TLS termination: certificates chosen by SNI from the published table, ALPN, session resumption.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig};
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

/// The server configurations for the HTTPS listener: TLS 1.2 and 1.3 with the provider's AEAD
/// suites, ALPN `h2` then `http/1.1`, resumption by tickets and by session id.
///
/// The server picks the suite: AES-128-GCM first (the suite every TLS 1.3 client implements, and
/// with AES and SHA instructions the cheapest handshake and record protection), then AES-256-GCM,
/// then ChaCha20-Poly1305. A client that lists ChaCha20-Poly1305 first is taken to lack AES
/// instructions and gets its own order instead. Both configurations share the certificate
/// resolver, the ticket keys and the session cache, so resumption works across them.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    server_order: Arc<ServerConfig>,
    client_order: Arc<ServerConfig>,
}

impl TlsConfig {
    /// The configuration for a connection whose ClientHello is `hello`.
    pub fn for_hello(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let first_known = hello.cipher_suites().iter().find(|s| {
            self.server_order
                .crypto_provider()
                .cipher_suites
                .iter()
                .any(|k| k.suite() == **s)
        });
        match first_known {
            Some(s) if is_chacha(*s) => self.client_order.clone(),
            _ => self.server_order.clone(),
        }
    }
}

fn is_chacha(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// Preference rank of a suite: AES-128-GCM, then AES-256-GCM, then the rest, TLS 1.3 and 1.2
/// alike (a suite only applies to its own protocol version).
fn rank(suite: CipherSuite) -> u8 {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// Builds the HTTPS listener's configurations around `resolver`.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<TlsConfig, TlsError> {
    let mut provider = table::crypto_provider();
    provider.cipher_suites.sort_by_key(|s| rank(s.suite()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = table::ticketer()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    let client_order = Arc::new(config.clone());
    config.ignore_client_order = true;
    Ok(TlsConfig {
        server_order: Arc::new(config),
        client_order,
    })
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
    let provider = table::crypto_provider();
    Ok(Arc::new(CertifiedKey::from_der(
        vec![cert.der().clone()],
        der,
        &provider,
    )?))
}
