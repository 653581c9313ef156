//! The bootstrap signer: ConfigMap `cluster-info` in kube-public, which anyone may read.
//!
//! `data.kubeconfig` is a kubeconfig with one cluster (the server's address and the CA, no
//! user); `data.jws-kubeconfig-<token id>` is, for every bootstrap token Secret in kube-system
//! with `usage-bootstrap-signing: true` that has not expired, a detached compact JWS of that
//! kubeconfig: `<header>..<signature>` with header `{"alg":"HS256","kid":"<token id>"}` and an
//! HMAC-SHA256 keyed with the whole token `<id>.<secret>`. A node that knows a token recomputes
//! the signature over the kubeconfig it read; when it matches, the CA in it is the cluster's.
//! Kept in line on every change of the Secrets and once a minute (expiry, a deleted ConfigMap).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::api::Api;
use crate::authn::bootstrap;
use crate::rest::{Subresource, WriteOptions};

pub const NAMESPACE: &str = "kube-public";
pub const NAME: &str = "cluster-info";
pub const KUBECONFIG_KEY: &str = "kubeconfig";
pub const SIGNATURE_PREFIX: &str = "jws-kubeconfig-";

/// The kubeconfig of `cluster-info`.
pub fn kubeconfig(server_url: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server_url}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        STANDARD.encode(ca_pem)
    )
}

/// The detached JWS of `content` for `token` (`<id>.<secret>`).
pub fn sign(content: &str, token: &str) -> String {
    let id = token.split('.').next().unwrap_or("");
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": id}).to_string());
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Whether `detached` is a valid signature of `content` by `token`.
pub fn verify(content: &str, detached: &str, token: &str) -> bool {
    let mut parts = detached.split('.');
    let (Some(header), Some(""), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return false };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else { return false };
    let Ok(h) = URL_SAFE_NO_PAD.decode(header) else { return false };
    let Ok(h) = serde_json::from_slice::<Value>(&h) else { return false };
    if h.get("alg").and_then(Value::as_str) != Some("HS256") {
        return false;
    }
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    ring::hmac::verify(&key, input.as_bytes(), &sig).is_ok()
}

/// The signing tokens of the bootstrap Secrets in `secrets` at `now`.
fn signing_tokens(secrets: &[Value], now: jiff::Timestamp) -> Vec<String> {
    let mut out = vec![];
    for s in secrets {
        if s.get("type").and_then(Value::as_str) != Some(bootstrap::SECRET_TYPE) || s.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
            continue;
        }
        let d = |k: &str| bootstrap::data(s, k);
        if d("usage-bootstrap-signing").as_deref() != Some("true") {
            continue;
        }
        if let Some(exp) = d("expiration") {
            if !exp.parse::<jiff::Timestamp>().is_ok_and(|t| t > now) {
                continue;
            }
        }
        if let (Some(id), Some(secret)) = (d("token-id"), d("token-secret")) {
            let token = format!("{id}.{secret}");
            if bootstrap::parse(&token).is_some() && crate::meta::name(s) == bootstrap::secret_name(&id) {
                out.push(token);
            }
        }
    }
    out
}

/// The data `cluster-info` should hold.
fn desired(server_url: &str, ca_pem: &str, tokens: &[String]) -> BTreeMap<String, String> {
    let kc = kubeconfig(server_url, ca_pem);
    let mut data = BTreeMap::new();
    for t in tokens {
        let id = t.split('.').next().unwrap_or("");
        data.insert(format!("{SIGNATURE_PREFIX}{id}"), sign(&kc, t));
    }
    data.insert(KUBECONFIG_KEY.to_string(), kc);
    data
}

/// Starts the signer for a server reached at `server_url` with CA `ca_pem`.
pub fn spawn(api: &Arc<Api>, server_url: String, ca_pem: String) {
    let Ok(secrets) = api.resource("", "secrets") else { return };
    let Ok(cache) = api.cache(&secrets) else { return };
    let prefix = secrets.list_prefix(api.store_prefix(), Some("kube-system"));
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            let mut changes = cache.changes();
            loop {
                let (items, _) = cache.snapshot(&prefix);
                let values: Vec<Value> = items.iter().filter_map(|i| i.value().ok()).collect();
                let data = desired(&server_url, &ca_pem, &signing_tokens(&values, jiff::Timestamp::now()));
                let Some(api) = weak.upgrade() else { return };
                if let Err(e) = ensure(&api, data).await {
                    tracing::warn!(error = %e, "keeping kube-public/cluster-info");
                }
                drop(api);
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
        .instrument(tracing::info_span!("bootstrap_signer")),
    );
}

/// Creates or updates `cluster-info` to hold `data` (nothing when it does).
async fn ensure(api: &Arc<Api>, data: BTreeMap<String, String>) -> Result<(), crate::status::ApiError> {
    let res = api.resource("", "configmaps")?;
    match api.get(&res, Some(NAMESPACE), NAME, None).await {
        Ok(current) => {
            let have: BTreeMap<String, String> = current.get("data").and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default();
            if have == data {
                return Ok(());
            }
            let mut updated = current.clone();
            updated["data"] = json!(data);
            match api.update(&res, Some(NAMESPACE), NAME, updated, Subresource::Main, &WriteOptions::default()).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) if e.code == 404 => {
            let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": NAMESPACE}, "data": data});
            match api.create(&res, Some(NAMESPACE), obj, &WriteOptions::default()).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_their_token_and_content() {
        let kc = kubeconfig("https://10.0.0.1:6443", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
        let token = "abcdef.0123456789abcdef";
        let sig = sign(&kc, token);
        assert!(sig.contains(".."));
        assert!(verify(&kc, &sig, token));
        assert!(!verify(&kc, &sig, "abcdef.0123456789abcdeX"));
        assert!(!verify(&kc.replace("10.0.0.1", "10.0.0.2"), &sig, token));
        assert!(!verify(&kc, "garbage", token));
    }

    #[test]
    fn only_signing_tokens_that_have_not_expired_sign() {
        let b = |s: &str| STANDARD.encode(s);
        let secret = |id: &str, signing: &str, exp: Option<&str>| {
            let mut v = json!({"type": bootstrap::SECRET_TYPE, "metadata": {"name": format!("bootstrap-token-{id}")},
                "data": {"token-id": b(id), "token-secret": b("0123456789abcdef"), "usage-bootstrap-signing": b(signing)}});
            if let Some(e) = exp {
                v["data"]["expiration"] = json!(b(e));
            }
            v
        };
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let secrets = vec![
            secret("aaaaaa", "true", None),
            secret("bbbbbb", "false", None),
            secret("cccccc", "true", Some("2025-01-01T00:00:00Z")),
            secret("dddddd", "true", Some("2027-01-01T00:00:00Z")),
        ];
        assert_eq!(signing_tokens(&secrets, now), vec!["aaaaaa.0123456789abcdef", "dddddd.0123456789abcdef"]);
        let data = desired("https://h:1", "ca", &signing_tokens(&secrets, now));
        assert_eq!(data.keys().collect::<Vec<_>>(), vec!["jws-kubeconfig-aaaaaa", "jws-kubeconfig-dddddd", "kubeconfig"]);
    }
}
