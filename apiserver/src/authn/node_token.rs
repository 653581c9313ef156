//! The join token of `berth server`: a bootstrap token (`<id>.<secret>`) kept in
//! `<data-dir>/node-token` (0600, written atomically on first start, reused after) and its
//! Secret `bootstrap-token-<id>` in kube-system (usages authentication and signing, no expiry,
//! group `system:bootstrappers:berth:default-node-token`), made again when it is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use super::bootstrap;
use crate::api::Api;
use crate::rest::WriteOptions;
use crate::status::ApiError;

/// The group of the node join token.
pub const GROUP: &str = "system:bootstrappers:berth:default-node-token";

#[derive(Debug, thiserror::Error)]
pub enum NodeTokenError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} does not hold a bootstrap token (<6 [a-z0-9]>.<16 [a-z0-9]>)")]
    Malformed { path: PathBuf },
    #[error(transparent)]
    Write(#[from] crate::pki::PkiError),
    #[error("random token: {0}")]
    Random(String),
    #[error("the bootstrap token secret: {0}")]
    Secret(#[from] ApiError),
    #[error("node-token task failed: {0}")]
    Join(String),
}

/// `n` random characters of [a-z0-9].
fn random(n: usize) -> Result<String, NodeTokenError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|e| NodeTokenError::Random(e.to_string()))?;
    // 252 = 7 * 36: bytes at or above it would bias the choice, so they are drawn again
    let mut out = String::with_capacity(n);
    let rng = ring::rand::SystemRandom::new();
    for mut b in bytes {
        while b >= 252 {
            let mut one = [0u8; 1];
            ring::rand::SecureRandom::fill(&rng, &mut one).map_err(|e| NodeTokenError::Random(e.to_string()))?;
            b = one[0];
        }
        out.push(ALPHABET[(b % 36) as usize] as char);
    }
    Ok(out)
}

/// Reads the token file, or makes a new token and writes it.
fn read_or_make(path: &Path) -> Result<String, NodeTokenError> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = t.trim().to_string();
            bootstrap::parse(&t).ok_or_else(|| NodeTokenError::Malformed { path: path.to_path_buf() })?;
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = format!("{}.{}", random(6)?, random(16)?);
            crate::pki::write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
            Ok(token)
        }
        Err(source) => Err(NodeTokenError::Read { path: path.to_path_buf(), source }),
    }
}

/// Makes sure `<data_dir>/node-token` and its Secret exist: the token.
pub async fn ensure(api: &Arc<Api>, data_dir: &Path) -> Result<String, NodeTokenError> {
    let path = data_dir.join("node-token");
    let token = tokio::task::spawn_blocking(move || read_or_make(&path)).await.map_err(|e| NodeTokenError::Join(e.to_string()))??;
    let Some((id, secret)) = bootstrap::parse(&token) else {
        return Err(NodeTokenError::Malformed { path: data_dir.join("node-token") });
    };
    let b64 = |s: &str| STANDARD.encode(s);
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": bootstrap::SECRET_TYPE,
        "metadata": {"name": bootstrap::secret_name(id), "namespace": "kube-system"},
        "data": {
            "description": b64("The join token of berth agents (berth server's node-token)."),
            "token-id": b64(id),
            "token-secret": b64(secret),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64(GROUP),
        },
    });
    let secrets = api.resource("", "secrets")?;
    match api.create(&secrets, Some("kube-system"), obj, &WriteOptions::default()).await {
        Ok(_) => tracing::info!(id, "bootstrap token secret of the node token created"),
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-token");
        let a = read_or_make(&path).unwrap();
        assert!(bootstrap::parse(&a).is_some(), "{a}");
        assert_eq!(read_or_make(&path).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "nope").unwrap();
        assert!(matches!(read_or_make(&path), Err(NodeTokenError::Malformed { .. })));
    }
}
