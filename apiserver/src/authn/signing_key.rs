//! The service account signing key on disk: `<data-dir>/service-account.key`, an ECDSA P-256
//! key (PKCS#8 PEM, 0600) made on first start, written atomically, and reused after.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;

use super::jwt::{JwtError, SigningKey};

pub const FILE: &str = "service-account.key";

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a PKCS#8 PEM private key: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: JwtError },
    #[error(transparent)]
    Write(#[from] crate::pki::PkiError),
}

/// PEM of a PKCS#8 document.
fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// The key in `dir`, made and written when there is none. Blocking (key generation, fsync).
pub fn ensure(dir: &Path) -> Result<SigningKey, SigningKeyError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let der = PrivatePkcs8KeyDer::from_pem_slice(&bytes).map_err(|e| SigningKeyError::Pem { path: path.clone(), why: e.to_string() })?;
            SigningKey::from_pkcs8(der.secret_pkcs8_der()).map_err(|source| SigningKeyError::Key { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (der, key) = SigningKey::generate().map_err(|source| SigningKeyError::Key { path: path.clone(), source })?;
            crate::pki::write_atomic(&path, pem(&der).as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(source) => Err(SigningKeyError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path()).unwrap();
        let b = ensure(dir.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
    }
}
