//! Server TLS from a certificate and key on disk, generating a self-signed pair on first use.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {path}: {why}")]
pub struct TlsError {
    pub path: String,
    pub why: String,
}

/// A server certificate that can be replaced while the server runs (a kubelet API that starts
/// with its self-signed certificate and gets one from the cluster later).
#[derive(Debug)]
pub struct ServingCert(std::sync::RwLock<std::sync::Arc<rustls::sign::CertifiedKey>>);

fn certified_key(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<rustls::sign::CertifiedKey, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let err = |why: String| TlsError { path: what.to_string(), why };
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| err(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| err(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| err(e.to_string()))?;
    Ok(rustls::sign::CertifiedKey::new(certs, signing))
}

impl ServingCert {
    /// The certificate and key (PEM) `what` names in errors.
    pub fn new(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<std::sync::Arc<ServingCert>, TlsError> {
        Ok(std::sync::Arc::new(ServingCert(std::sync::RwLock::new(std::sync::Arc::new(certified_key(cert_pem, key_pem, what)?)))))
    }

    /// Serves `cert_pem`/`key_pem` from the next handshake on.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<(), TlsError> {
        let key = std::sync::Arc::new(certified_key(cert_pem, key_pem, what)?);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A rustls server config for `cert_path`/`key_path`; when both are missing and
/// `generate` is set, a self-signed certificate for `names` is written there first.
pub fn server_config(cert_path: &Path, key_path: &Path, names: Vec<String>, generate: bool) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with(cert_path, key_path, names, generate, None)
}

/// [`server_config`] whose clients are asked for certificates by `client_certs`.
pub fn server_config_with(
    cert_path: &Path,
    key_path: &Path,
    names: Vec<String>,
    generate: bool,
    client_certs: Option<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let err = |why: String| TlsError { path: cert_path.display().to_string(), why };
    if generate && !cert_path.exists() && !key_path.exists() {
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| err(e.to_string()))?;
        crate::util::atomic::write_file(key_path, ck.signing_key.serialize_pem().as_bytes()).map_err(|e| err(e.to_string()))?;
        crate::util::atomic::write_file(cert_path, ck.cert.pem().as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert_path).and_then(|i| i.collect::<Result<Vec<_>, _>>()).map_err(|e| err(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_path).map_err(|e| err(e.to_string()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_certs {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A TLS client that accepts any server certificate (still checking the handshake's
/// signatures): for HTTPS probes and hooks, which the kubelet does not verify either.
pub fn insecure_client_config() -> rustls::ClientConfig {
    #[derive(Debug)]
    struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = std::sync::Arc::new(AnyCert(provider.clone()));
    match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth(),
        Err(_) => rustls::ClientConfig::builder().dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth(),
    }
}
