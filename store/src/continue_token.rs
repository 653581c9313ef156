//! List continue tokens: opaque to callers, they carry the revision of the first page (so every
//! page reads the same snapshot) and the last key returned (the next page starts after it).
//! One format for both backends.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{Result, StoreError};
use crate::types::Revision;

const VERSION: &str = "b1";

/// A decoded continue token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Continue {
    pub revision: Revision,
    /// The last key of the previous page: the next page starts strictly after it.
    pub last_key: String,
}

/// The token for the page after `last_key`, read at `revision`.
pub(crate) fn encode(revision: Revision, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}\n{revision}\n{last_key}"))
}

/// Decodes a token given for a list of `prefix`; refuses one this store did not make or one for
/// a key outside the prefix.
pub(crate) fn decode(token: &str, prefix: &str) -> Result<Continue> {
    let invalid = |reason: &str| StoreError::InvalidContinue { reason: reason.to_string() };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid("not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| invalid("not UTF-8"))?;
    let mut parts = text.splitn(3, '\n');
    if parts.next() != Some(VERSION) {
        return Err(invalid("unknown token version"));
    }
    let revision: Revision = parts.next().and_then(|r| r.parse().ok()).filter(|r| *r > 0).ok_or_else(|| invalid("bad revision"))?;
    let last_key = parts.next().ok_or_else(|| invalid("no key"))?.to_string();
    if !last_key.starts_with(prefix) {
        return Err(invalid("the token belongs to another prefix"));
    }
    Ok(Continue { revision, last_key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = encode(42, "/registry/pods/a");
        assert_eq!(decode(&t, "/registry/pods/").unwrap(), Continue { revision: 42, last_key: "/registry/pods/a".into() });
    }

    #[test]
    fn foreign_or_broken_tokens_are_refused() {
        let t = encode(42, "/registry/pods/a");
        assert!(decode(&t, "/registry/secrets/").is_err());
        assert!(decode("%%%", "/registry/").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("x\n1\n/registry/a"), "/registry/").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("b1\n-1\n/registry/a"), "/registry/").is_err());
    }
}
