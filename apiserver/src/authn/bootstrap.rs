//! Bootstrap tokens (`<id>.<secret>`, 6 and 16 characters of [a-z0-9]): each is a Secret
//! `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` in kube-system, read through
//! the watch cache. A token authenticates as `system:bootstrap:<id>` in `system:bootstrappers`
//! (and the Secret's `auth-extra-groups`) while the Secret allows authentication and has not
//! expired. The secret half is compared in constant time.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use crate::api::Api;
use crate::User;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const GROUP: &str = "system:bootstrappers";
const EXTRA_GROUP_PREFIX: &str = "system:bootstrappers:";

/// A token split into its id and secret; None when it is not a bootstrap token.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// The name of the Secret of token id `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// Why a token that looks like a bootstrap token does not authenticate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapError {
    #[error("no bootstrap token secret {0}")]
    NoSecret(String),
    #[error("bootstrap token secret is being deleted")]
    Deleted,
    #[error("bootstrap token secret is not of type {SECRET_TYPE}")]
    Type,
    #[error("bootstrap token does not match its secret")]
    Mismatch,
    #[error("bootstrap token has expired")]
    Expired,
    #[error("bootstrap token may not be used for authentication")]
    Usage,
    #[error("bootstrap token has an invalid extra group {0:?}")]
    Group(String),
}

/// A Secret data value, decoded.
pub(crate) fn data(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    String::from_utf8(STANDARD.decode(b64).ok()?).ok()
}

/// Checks `token` (id, secret) against the bootstrap Secret `secret` at `now`: the user.
pub fn check(secret: &Value, id: &str, token_secret: &str, now: jiff::Timestamp) -> Result<User, BootstrapError> {
    if secret.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
        return Err(BootstrapError::Deleted);
    }
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err(BootstrapError::Type);
    }
    let stored_secret = data(secret, "token-secret").unwrap_or_default();
    if !super::constant_time_eq(stored_secret.as_bytes(), token_secret.as_bytes()) || data(secret, "token-id").as_deref() != Some(id) {
        return Err(BootstrapError::Mismatch);
    }
    if let Some(exp) = data(secret, "expiration") {
        // an expiration that does not parse counts as expired, as upstream
        match exp.parse::<jiff::Timestamp>() {
            Ok(t) if t > now => {}
            _ => return Err(BootstrapError::Expired),
        }
    }
    if data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(BootstrapError::Usage);
    }
    let mut groups = vec![GROUP.to_string()];
    for g in data(secret, "auth-extra-groups").unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()) {
        if !g.starts_with(EXTRA_GROUP_PREFIX) || g.len() == EXTRA_GROUP_PREFIX.len() {
            return Err(BootstrapError::Group(g.to_string()));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    Ok(User { name: format!("system:bootstrap:{id}"), groups, ..Default::default() })
}

/// The user of bootstrap token `token`; Ok(None) when it is not one.
pub async fn authenticate(api: &Arc<Api>, token: &str) -> Result<Option<User>, String> {
    let Some((id, token_secret)) = parse(token) else {
        return Ok(None);
    };
    let name = secret_name(id);
    let secret = super::lookup(api, "secrets", Some("kube-system"), &name).await?.ok_or_else(|| BootstrapError::NoSecret(name.clone()).to_string())?;
    check(&secret, id, token_secret, jiff::Timestamp::now()).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(extra: &[(&str, &str)]) -> Value {
        let mut data = serde_json::Map::new();
        for (k, v) in [("token-id", "abcdef"), ("token-secret", "0123456789abcdef"), ("usage-bootstrap-authentication", "true")].iter().chain(extra) {
            data.insert(k.to_string(), json!(STANDARD.encode(v)));
        }
        json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}, "data": data})
    }

    #[test]
    fn the_token_grammar() {
        assert_eq!(parse("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        for bad in ["abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef", "abcde.0123456789abcdefg", "abcdef.0123456789abcdef.x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_matching_token_is_a_bootstrapper_with_its_extra_groups() {
        let now = jiff::Timestamp::now();
        let s = secret(&[("auth-extra-groups", "system:bootstrappers:berth:default-node-token"), ("expiration", "2999-01-01T00:00:00Z")]);
        let u = check(&s, "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(u.groups, vec!["system:bootstrappers", "system:bootstrappers:berth:default-node-token"]);
    }

    #[test]
    fn wrong_secret_expiry_usage_type_and_groups_fail() {
        let now = jiff::Timestamp::now();
        assert_eq!(check(&secret(&[]), "abcdef", "0123456789abcdee", now), Err(BootstrapError::Mismatch));
        assert_eq!(check(&secret(&[("expiration", "2001-01-01T00:00:00Z")]), "abcdef", "0123456789abcdef", now), Err(BootstrapError::Expired));
        assert_eq!(check(&secret(&[("expiration", "tomorrow")]), "abcdef", "0123456789abcdef", now), Err(BootstrapError::Expired));
        let mut no_usage = secret(&[]);
        no_usage["data"].as_object_mut().unwrap().remove("usage-bootstrap-authentication");
        assert_eq!(check(&no_usage, "abcdef", "0123456789abcdef", now), Err(BootstrapError::Usage));
        let mut opaque = secret(&[]);
        opaque["type"] = json!("Opaque");
        assert_eq!(check(&opaque, "abcdef", "0123456789abcdef", now), Err(BootstrapError::Type));
        assert_eq!(
            check(&secret(&[("auth-extra-groups", "system:masters")]), "abcdef", "0123456789abcdef", now),
            Err(BootstrapError::Group("system:masters".into()))
        );
    }
}
