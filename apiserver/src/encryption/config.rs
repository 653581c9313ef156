//! The encryption configuration file (`--encryption-provider-config`), upstream's
//! `apiserver.config.k8s.io/v1` `EncryptionConfiguration`: for lists of resources, the providers
//! to write with (the first) and to read with (any), each `aescbc` or `aesgcm` with named keys
//! (base64, 16/24/32 bytes for aescbc, 16/24/32 for aesgcm; the first key encrypts) or
//! `identity` (plain text).

use base64::Engine;
use serde::Deserialize;

use super::EncryptionError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    resources: Vec<ResourceConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    aescbc: Option<Keys>,
    aesgcm: Option<Keys>,
    identity: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    keys: Vec<KeyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    name: String,
    secret: String,
}

/// A cipher with its keys, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    AesCbc(Vec<(String, Vec<u8>)>),
    AesGcm(Vec<(String, Vec<u8>)>),
    Identity,
}

/// The providers of one group of resources (`secrets`, `configmaps`, `deployments.apps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceProviders {
    pub resources: Vec<String>,
    pub providers: Vec<Provider>,
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<Vec<ResourceProviders>, EncryptionError> {
    let bad = |m: String| EncryptionError::Config(m);
    let file: File = serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?;
    if file.kind != "EncryptionConfiguration" || !matches!(file.api_version.as_str(), "apiserver.config.k8s.io/v1" | "apiserver.k8s.io/v1") {
        return Err(bad(format!("expected apiserver.config.k8s.io/v1 EncryptionConfiguration, got {} {}", file.api_version, file.kind)));
    }
    let mut out = vec![];
    for r in file.resources {
        if r.resources.is_empty() || r.providers.is_empty() {
            return Err(bad("each entry needs resources and providers".into()));
        }
        let mut providers = vec![];
        for p in r.providers {
            let keys = |k: Keys, cipher: &str| -> Result<Vec<(String, Vec<u8>)>, EncryptionError> {
                if k.keys.is_empty() {
                    return Err(bad(format!("{cipher}: at least one key is required")));
                }
                k.keys
                    .into_iter()
                    .map(|key| {
                        let secret = base64::engine::general_purpose::STANDARD
                            .decode(key.secret.trim())
                            .map_err(|e| bad(format!("{cipher} key {:?}: the secret is not base64: {e}", key.name)))?;
                        if ![16, 24, 32].contains(&secret.len()) {
                            return Err(bad(format!("{cipher} key {:?}: a key must be 16, 24 or 32 bytes, not {}", key.name, secret.len())));
                        }
                        if key.name.is_empty() || key.name.contains(':') {
                            return Err(bad(format!("{cipher}: key name {:?} must be non-empty and have no ':'", key.name)));
                        }
                        Ok((key.name, secret))
                    })
                    .collect()
            };
            let provider = match (p.aescbc, p.aesgcm, p.identity) {
                (Some(k), None, None) => Provider::AesCbc(keys(k, "aescbc")?),
                (None, Some(k), None) => {
                    let keys = keys(k, "aesgcm")?;
                    if let Some((name, _)) = keys.iter().find(|(_, k)| k.len() == 24) {
                        return Err(bad(format!("aesgcm key {name:?}: 24-byte keys are not supported here (use 16 or 32 bytes)")));
                    }
                    Provider::AesGcm(keys)
                }
                (None, None, Some(_)) => Provider::Identity,
                _ => return Err(bad("each provider names exactly one of aescbc, aesgcm, identity".into())),
            };
            providers.push(provider);
        }
        out.push(ResourceProviders { resources: r.resources, providers });
    }
    Ok(out)
}
