//! How the upstream is reached: `backend-protocol`, `proxy-ssl-*`, `upstream-vhost`, timeouts,
//! `proxy-next-upstream*`, `proxy-body-size`, `service-upstream`, `default-backend`, and the
//! buffering annotations (accepted: Portcullis streams).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::HeaderValue;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use table::{Policy, Protocol, Retry, RetryOn, Timeouts, UpstreamTls};

use super::{values, Reader, Rules};
use crate::Severity;

pub(super) fn read(r: &mut Reader<'_>, rules: &mut Rules, policy: &mut Policy) {
    policy.protocol = r
        .parse("backend-protocol", |v| {
            match v.trim().to_ascii_uppercase().as_str() {
                "HTTP" => Ok(Protocol::Http),
                "HTTPS" => Ok(Protocol::Https),
                "AUTO_HTTP" => Ok(Protocol::AutoHttp),
                "GRPC" => Ok(Protocol::Grpc),
                "GRPCS" => Ok(Protocol::Grpcs),
                "H2C" => Ok(Protocol::H2c),
                "FCGI" => Err("(FastCGI) is not supported by Portcullis".into()),
                _ => Err("is not one of HTTP, HTTPS, AUTO_HTTP, GRPC, GRPCS, H2C".into()),
            }
        })
        .unwrap_or_default();
    policy.upstream_tls = upstream_tls(r, policy.protocol);
    policy.upstream_host = r.parse("upstream-vhost", |v| {
        let v = values::server_name(v)?;
        HeaderValue::from_str(v).map_err(|_| "is not a header value".to_string())
    });
    policy.timeouts = Timeouts {
        connect: r.parse("proxy-connect-timeout", positive_seconds),
        send: r.parse("proxy-send-timeout", positive_seconds),
        read: r.parse("proxy-read-timeout", positive_seconds),
    };
    policy.retry = retry(r);
    policy.body_limit = r.parse("proxy-body-size", values::size);
    rules.service_upstream = r.boolean("service-upstream", false);
    rules.default_backend = r.parse("default-backend", |v| service_name(v).map(str::to_string));
    accept_buffering(r);
}

fn positive_seconds(v: &str) -> Result<std::time::Duration, String> {
    match values::seconds(v)? {
        d if d.is_zero() => Err("is zero; give a number of seconds greater than 0".into()),
        d => Ok(d),
    }
}

/// A Service name (`default-backend` names a Service in the Ingress's own namespace).
fn service_name(v: &str) -> Result<&str, String> {
    let v = v.trim();
    let valid = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(v)
    } else {
        Err("is not the name of a Service in the Ingress's namespace".into())
    }
}

/// The annotations about buffering and sizes Portcullis accepts but does not need: bodies are
/// streamed. Their values are still checked, so a typo is reported.
fn accept_buffering(r: &mut Reader<'_>) {
    for name in ["proxy-buffering", "proxy-request-buffering"] {
        r.parse(name, values::on_off);
    }
    for name in [
        "client-body-buffer-size",
        "proxy-buffer-size",
        "proxy-busy-buffers-size",
        "proxy-max-temp-file-size",
    ] {
        r.parse(name, values::size);
    }
    r.parse("proxy-buffers-number", values::integer);
    r.parse("proxy-http-version", |v| match v.trim() {
        "1.1" | "1.0" => Ok(()),
        _ => Err("is not \"1.0\" or \"1.1\"".to_string()),
    });
}

fn retry(r: &mut Reader<'_>) -> Option<Retry> {
    let on = r.parse("proxy-next-upstream", |v| {
        let mut on = 0u16;
        for token in v.split_whitespace() {
            on |= match token {
                "error" => RetryOn::Error as u16,
                "timeout" => RetryOn::Timeout as u16,
                "invalid_header" => RetryOn::InvalidHeader as u16,
                "http_500" => RetryOn::Http500 as u16,
                "http_502" => RetryOn::Http502 as u16,
                "http_503" => RetryOn::Http503 as u16,
                "http_504" => RetryOn::Http504 as u16,
                "http_403" => RetryOn::Http403 as u16,
                "http_404" => RetryOn::Http404 as u16,
                "http_429" => RetryOn::Http429 as u16,
                "non_idempotent" => RetryOn::NonIdempotent as u16,
                "off" => 0,
                other => return Err(format!("names {other:?}, which is not a proxy-next-upstream condition (error timeout invalid_header http_500 http_502 http_503 http_504 http_403 http_404 http_429 non_idempotent off)")),
            };
        }
        if v.split_whitespace().any(|t| t == "off") {
            on = 0;
        }
        Ok(on)
    });
    let tries = r.parse("proxy-next-upstream-tries", |v| {
        u32::try_from(values::integer(v)?).map_err(|_| "is negative or too large".to_string())
    });
    let timeout = r.parse("proxy-next-upstream-timeout", values::seconds);
    if on.is_none() && tries.is_none() && timeout.is_none() {
        return None;
    }
    Some(Retry {
        on: on.unwrap_or(Retry::DEFAULT.on),
        tries: tries.unwrap_or(Retry::DEFAULT.tries),
        timeout: timeout.filter(|t| !t.is_zero()),
    })
}

/// TLS towards the upstream for `HTTPS`, `GRPCS` and `AUTO_HTTP` backends.
fn upstream_tls(r: &mut Reader<'_>, protocol: Protocol) -> Option<UpstreamTls> {
    let verify = r.parse("proxy-ssl-verify", values::on_off).unwrap_or(false);
    let sni = r
        .parse("proxy-ssl-server-name", values::on_off)
        .unwrap_or(false);
    let name = r.parse("proxy-ssl-name", |v| {
        values::server_name(v)
            .ok()
            .filter(|n| !n.contains(':'))
            .map(str::to_string)
            .ok_or_else(|| "is not a host name".to_string())
    });
    r.parse("proxy-ssl-verify-depth", values::integer);
    r.parse("proxy-ssl-protocols", |v| {
        v.split_whitespace()
            .all(|p| p.starts_with("TLSv") || p.starts_with("SSLv"))
            .then_some(())
            .ok_or_else(|| "is not a list of TLS protocol names".to_string())
    });
    r.parse("proxy-ssl-ciphers", |v| {
        v.bytes()
            .all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'+' | b'!' | b'@')
            })
            .then_some(())
            .ok_or_else(|| "is not an OpenSSL cipher list".to_string())
    });
    let namespace = r.namespace();
    let secret_name = r.parse("proxy-ssl-secret", |v| {
        values::local_object(v, namespace).map(str::to_string)
    });
    let secret = secret_name.as_deref().map(|n| (n.to_string(), r.secret(n)));
    if !protocol.is_tls(true) {
        if secret_name.is_some() || verify {
            r.note(
                Severity::Warning,
                "backend-protocol",
                "proxy-ssl-* annotations are set, but the backend protocol is not HTTPS, GRPCS or AUTO_HTTP; they have no effect",
            );
        }
        return None;
    }
    let material = match &secret {
        None => TlsMaterial::default(),
        Some((n, None)) => {
            r.note(
                Severity::Error,
                "proxy-ssl-secret",
                format!("Secret {namespace}/{n} not found; the backend's certificate cannot be verified and no client certificate is sent"),
            );
            return fallback_tls(verify);
        }
        Some((n, Some(s))) => match TlsMaterial::from_secret(s) {
            Ok(m) => m,
            Err(e) => {
                r.note(
                    Severity::Error,
                    "proxy-ssl-secret",
                    format!("Secret {namespace}/{n} {e}"),
                );
                return fallback_tls(verify);
            }
        },
    };
    if verify && material.roots.is_empty() {
        r.note(
            Severity::Error,
            "proxy-ssl-verify",
            "is \"on\" but no proxy-ssl-secret with a ca.crt names the certificates to trust; connections to the backend will fail verification",
        );
    }
    let alpn = if protocol.is_h2() {
        vec![b"h2".to_vec()]
    } else {
        Vec::new()
    };
    match client_config(&material, verify, sni, alpn) {
        Ok(config) => {
            let mut hasher = std::hash::DefaultHasher::new();
            (verify, sni, &name, &material.fingerprint, protocol.is_h2()).hash(&mut hasher);
            Some(UpstreamTls {
                config: Arc::new(config),
                sni,
                name,
                verify,
                secret: secret.map(|(n, _)| format!("{namespace}/{n}")),
                id: hasher.finish(),
            })
        }
        Err(e) => {
            r.note(Severity::Error, "proxy-ssl-secret", e);
            fallback_tls(verify)
        }
    }
}

/// TLS without the `proxy-ssl-secret` that could not be used: no client certificate, and with
/// verification asked for, nothing trusted (connections then fail rather than go out
/// unverified).
pub(super) fn fallback_tls(verify: bool) -> Option<UpstreamTls> {
    let material = TlsMaterial::default();
    let config = client_config(&material, verify, false, Vec::new()).ok()?;
    Some(UpstreamTls {
        config: Arc::new(config),
        sni: false,
        name: None,
        verify,
        secret: None,
        id: u64::from(verify) + 1,
    })
}

/// Trusted CAs and the client certificate from a `proxy-ssl-secret`.
#[derive(Default)]
struct TlsMaterial {
    roots: Vec<CertificateDer<'static>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    fingerprint: Vec<u8>,
}

impl TlsMaterial {
    fn from_secret(secret: &model::Secret) -> Result<Self, String> {
        let data = secret.data.as_ref();
        let field = |name: &str| data.and_then(|d| d.get(name)).map(|b| b.0.as_slice());
        let mut fingerprint = Vec::new();
        let roots = match field("ca.crt") {
            Some(pem) => {
                fingerprint.extend_from_slice(pem);
                CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("ca.crt is not a PEM certificate list ({e})"))?
            }
            None => Vec::new(),
        };
        let client = match (field("tls.crt"), field("tls.key")) {
            (Some(crt), Some(key)) => {
                fingerprint.extend_from_slice(crt);
                fingerprint.extend_from_slice(key);
                let chain = CertificateDer::pem_slice_iter(crt)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("tls.crt is not a PEM certificate chain ({e})"))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| format!("tls.key is not a PEM private key ({e})"))?;
                Some((chain, key))
            }
            (None, None) => None,
            _ => return Err("has only one of tls.crt and tls.key".into()),
        };
        if roots.is_empty() && client.is_none() {
            return Err("has neither ca.crt nor tls.crt and tls.key".into());
        }
        Ok(TlsMaterial {
            roots,
            client,
            fingerprint,
        })
    }
}

fn client_config(
    material: &TlsMaterial,
    verify: bool,
    sni: bool,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(table::crypto_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if verify {
        let mut roots = RootCertStore::empty();
        for cert in &material.roots {
            roots
                .add(cert.clone())
                .map_err(|e| format!("ca.crt holds a certificate that cannot be trusted ({e})"))?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let mut config = match &material.client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                format!("tls.crt and tls.key cannot be used as a client certificate ({e})")
            })?,
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = sni;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// `proxy-ssl-verify: off` (ingress-nginx's default): any certificate is accepted, but the
/// handshake signatures are still checked against it.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
