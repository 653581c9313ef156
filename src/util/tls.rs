//! Server TLS from a certificate and key on disk, generating a self-signed pair on first use.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {path}: {why}")]
pub struct TlsError {
    pub path: String,
    pub why: String,
}

/// A rustls server config for `cert_path`/`key_path`; when both are missing and
/// `generate` is set, a self-signed certificate for `names` is written there first.
pub fn server_config(cert_path: &Path, key_path: &Path, names: Vec<String>, generate: bool) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let err = |why: String| TlsError { path: cert_path.display().to_string(), why };
    if generate && !cert_path.exists() && !key_path.exists() {
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| err(e.to_string()))?;
        crate::util::atomic::write_file(key_path, ck.signing_key.serialize_pem().as_bytes()).map_err(|e| err(e.to_string()))?;
        crate::util::atomic::write_file(cert_path, ck.cert.pem().as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert_path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_path).map_err(|e| err(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).map_err(|e| err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
