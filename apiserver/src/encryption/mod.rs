//! Encryption at rest, as upstream's `--encryption-provider-config`: a [`Store`] in front of the
//! real one that encrypts the values of the configured resources on every write and decrypts
//! them on every read, list and watch event, so nothing above it (watch caches, verbs,
//! controllers) sees ciphertext and nothing below it (SQLite, etcd) sees plain text.
//!
//! Writes use the first provider of the resource's entry (with its first key); reads try the
//! provider and key the stored prefix names (`k8s:enc:aescbc:v1:key1:`), so a key can be
//! rotated: add the new key first, restart, rewrite the objects, drop the old key. A value
//! without a prefix reads as plain text when `identity` is among the providers (data written
//! before encryption was turned on). The file's format and ciphers: [`config`], [`cipher`].

pub mod cipher;
pub mod config;

use std::sync::Arc;
use std::time::Duration;

use berth_store::{Deleted, KeyValue, ListOptions, ListResponse, Revision, Store, StoreError, WatchEvent, WatchOptions, WatchStream};
use bytes::Bytes;

pub use config::{Provider, ResourceProviders};

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("encryption provider config: {0}")]
    Config(String),
    #[error("{0}")]
    Crypto(String),
}

/// The encrypting store over `inner`, for the resources `config` names.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    /// (store key prefix, providers) per configured resource.
    rules: Vec<(String, Arc<Vec<Provider>>)>,
    /// Keys last read in a form the first provider and key would not write, with the revision
    /// read: an update rewrites them even when nothing changed (how keys are rotated).
    stale: Arc<std::sync::Mutex<std::collections::HashMap<String, Revision>>>,
}

/// The storage segment of a resource name as the file writes it (`secrets`,
/// `deployments.apps`, `*.*` is not supported).
fn storage_of(resource: &str) -> String {
    match resource.split_once('.') {
        None => resource.to_string(),
        Some((plural, group)) => format!("{group}/{plural}"),
    }
}

const PREFIX: &str = "k8s:enc:";

impl EncryptedStore {
    pub fn new(inner: Arc<dyn Store>, config: Vec<ResourceProviders>) -> Self {
        let base = inner.prefix().to_string();
        let mut rules = vec![];
        for entry in config {
            let providers = Arc::new(entry.providers);
            for r in entry.resources {
                // core kinds live under their plural; grouped ones under group/plural
                let segment = match r.as_str() {
                    "secrets" | "configmaps" => r.clone(),
                    other => storage_of(other),
                };
                rules.push((format!("{base}{segment}/"), providers.clone()));
            }
        }
        EncryptedStore { inner, rules, stale: Default::default() }
    }

    fn mark(&self, key: &str, revision: Revision, stale: bool) {
        let mut m = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        if stale {
            m.insert(key.to_string(), revision);
        } else {
            m.remove(key);
        }
    }

    fn providers(&self, key: &str) -> Option<&Arc<Vec<Provider>>> {
        self.rules.iter().find(|(p, _)| key.starts_with(p.as_str())).map(|(_, ps)| ps)
    }

    fn seal(&self, key: &str, value: Bytes) -> Result<Bytes, StoreError> {
        let Some(providers) = self.providers(key) else { return Ok(value) };
        let internal = |e: EncryptionError| StoreError::Internal(format!("encrypting {key}: {e}"));
        match providers.first() {
            None | Some(Provider::Identity) => Ok(value),
            Some(Provider::AesCbc(keys)) => {
                let (name, k) = &keys[0];
                let mut out = format!("{PREFIX}aescbc:v1:{name}:").into_bytes();
                out.extend(cipher::aescbc_seal(k, &value).map_err(internal)?);
                Ok(Bytes::from(out))
            }
            Some(Provider::AesGcm(keys)) => {
                let (name, k) = &keys[0];
                let mut out = format!("{PREFIX}aesgcm:v1:{name}:").into_bytes();
                out.extend(cipher::aesgcm_seal(k, key.as_bytes(), &value).map_err(internal)?);
                Ok(Bytes::from(out))
            }
        }
    }

    /// The plain value, and whether it is stored otherwise than a write would store it now.
    fn open(&self, key: &str, value: Bytes) -> Result<(Bytes, bool), StoreError> {
        let Some(providers) = self.providers(key) else { return Ok((value, false)) };
        let fail = |m: String| StoreError::Internal(format!("decrypting {key}: {m}"));
        let Some(rest) = value.strip_prefix(PREFIX.as_bytes()) else {
            return if providers.contains(&Provider::Identity) {
                Ok((value, providers.first() != Some(&Provider::Identity)))
            } else {
                Err(fail("no matching prefix found (the value is not encrypted and identity is not a provider)".into()))
            };
        };
        let text = String::from_utf8_lossy(&rest[..rest.len().min(300)]).to_string();
        let mut parts = text.splitn(4, ':');
        let (cipher_name, version, key_name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let header = cipher_name.len() + version.len() + key_name.len() + 3;
        if version != "v1" || rest.len() < header {
            return Err(fail(format!("unknown format {cipher_name}:{version}")));
        }
        let data = &rest[header..];
        for (i, p) in providers.iter().enumerate() {
            let found = match (p, cipher_name) {
                (Provider::AesCbc(keys), "aescbc") => keys.iter().position(|(n, _)| n == key_name).map(|j| (j, cipher::aescbc_open(&keys[j].1, data))),
                (Provider::AesGcm(keys), "aesgcm") => {
                    keys.iter().position(|(n, _)| n == key_name).map(|j| (j, cipher::aesgcm_open(&keys[j].1, key.as_bytes(), data)))
                }
                _ => None,
            };
            if let Some((j, plain)) = found {
                return plain.map(|p| (Bytes::from(p), i != 0 || j != 0)).map_err(|e| fail(e.to_string()));
            }
        }
        Err(fail(format!("no provider has key {key_name:?} of {cipher_name}")))
    }

    fn open_kv(&self, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        let (value, stale) = self.open(&kv.key, kv.value)?;
        if stale || self.providers(&kv.key).is_some() {
            self.mark(&kv.key, kv.mod_revision, stale);
        }
        kv.value = value;
        Ok(kv)
    }

    fn open_event(&self, e: WatchEvent) -> Result<WatchEvent, StoreError> {
        Ok(match e {
            WatchEvent::Created { kv } => WatchEvent::Created { kv: self.open_kv(kv)? },
            WatchEvent::Updated { kv, prev } => WatchEvent::Updated { kv: self.open_kv(kv)?, prev: self.open_kv(prev)? },
            WatchEvent::Deleted { key, revision, prev } => WatchEvent::Deleted { key, revision, prev: self.open_kv(prev)? },
            p @ WatchEvent::Progress { .. } => p,
        })
    }
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    fn prefix(&self) -> &str {
        self.inner.prefix()
    }
    fn max_value_bytes(&self) -> usize {
        self.inner.max_value_bytes()
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue, StoreError> {
        let kv = self.inner.create(key, self.seal(key, value.clone())?, ttl).await?;
        Ok(KeyValue { value, ..kv })
    }
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key, revision).await?.map(|kv| self.open_kv(kv)).transpose()
    }
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision, ttl: Option<Duration>) -> Result<KeyValue, StoreError> {
        let kv = self.inner.update(key, self.seal(key, value.clone())?, expected_mod_revision, ttl).await?;
        self.mark(key, kv.mod_revision, false);
        Ok(KeyValue { value, ..kv })
    }
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted, StoreError> {
        let d = self.inner.delete(key, expected_mod_revision).await?;
        Ok(Deleted { prev: self.open_kv(d.prev)?, revision: d.revision })
    }
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResponse, StoreError> {
        let mut l = self.inner.list(prefix, options).await?;
        l.kvs = l.kvs.into_iter().map(|kv| self.open_kv(kv)).collect::<Result<_, _>>()?;
        Ok(l)
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.count(prefix).await
    }
    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<WatchStream, StoreError> {
        let mut inner = self.inner.watch(prefix, after, options).await?;
        if !self.rules.iter().any(|(p, _)| p.starts_with(prefix) || prefix.starts_with(p.as_str())) {
            return Ok(inner);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let me = EncryptedStore { inner: self.inner.clone(), rules: self.rules.clone(), stale: self.stale.clone() };
        let task = tokio::spawn(async move {
            while let Some(e) = inner.next().await {
                if tx.send(e.and_then(|e| me.open_event(e))).await.is_err() {
                    return;
                }
            }
        });
        Ok(WatchStream::new(rx, task))
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn needs_rewrite(&self, kv: &KeyValue) -> bool {
        self.stale.lock().unwrap_or_else(|e| e.into_inner()).get(&kv.key) == Some(&kv.mod_revision)
    }
}

#[cfg(test)]
mod tests {
    use berth_store::{EmbeddedConfig, EmbeddedStore};

    use super::*;

    fn config(providers: &str) -> Vec<ResourceProviders> {
        let text =
            format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}");
        config::parse(&text).expect("config")
    }

    const KEY1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgYmVybGluIGlzIGNvb2w="; // 32 bytes
    const KEY2: &str = "MTIzNDU2Nzg5MDEyMzQ1Ng=="; // 16 bytes

    #[tokio::test]
    async fn secrets_are_ciphertext_below_and_plain_text_above_and_keys_rotate() {
        let dir = tempfile::tempdir().expect("dir");
        let raw: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
        let key = format!("{}secrets/default/s", raw.prefix());
        let other = format!("{}configmaps/default/c", raw.prefix());
        let plain = Bytes::from_static(br#"{"data":{"password":"aHVudGVyMg=="}}"#);
        // written before encryption: read through identity
        raw.create(&other, plain.clone(), None).await.expect("create");
        let old = raw.create(&format!("{}secrets/default/old", raw.prefix()), plain.clone(), None).await.expect("create");
        let cbc = EncryptedStore::new(
            raw.clone(),
            config(&format!("      - aescbc:\n          keys:\n            - name: key1\n              secret: {KEY1}\n      - identity: {{}}\n")),
        );
        let mut watch = cbc.watch(&format!("{}secrets/", raw.prefix()), old.mod_revision, WatchOptions::default()).await.expect("watch");
        let kv = cbc.create(&key, plain.clone(), None).await.expect("create");
        assert_eq!(kv.value, plain);
        let stored = raw.get(&key, None).await.expect("get").expect("there");
        assert!(stored.value.starts_with(b"k8s:enc:aescbc:v1:key1:"), "{:?}", stored.value);
        assert!(!stored.value.windows(8).any(|w| w == b"aHVudGVy"), "no plain text in the store");
        assert_eq!(cbc.get(&key, None).await.expect("get").expect("there").value, plain);
        assert_eq!(cbc.get(&old.key, None).await.expect("get").expect("there").value, plain, "unencrypted data reads through identity");
        assert_eq!(cbc.get(&other, None).await.expect("get").expect("there").value, plain, "other resources are untouched");
        match watch.next().await.expect("an event").expect("ok") {
            WatchEvent::Created { kv } => assert_eq!(kv.value, plain),
            e => panic!("{e:?}"),
        }
        let listed = cbc.list(&format!("{}secrets/", raw.prefix()), ListOptions::default()).await.expect("list");
        assert!(listed.kvs.iter().all(|kv| kv.value == plain));

        // rotation: a new first key writes, the old one still reads
        let rotated = EncryptedStore::new(
            raw.clone(),
            config(&format!("      - aesgcm:\n          keys:\n            - name: key2\n              secret: {KEY2}\n      - aescbc:\n          keys:\n            - name: key1\n              secret: {KEY1}\n")),
        );
        assert_eq!(rotated.get(&key, None).await.expect("get").expect("there").value, plain);
        let again = rotated.update(&key, plain.clone(), stored.mod_revision, None).await.expect("update");
        let stored = raw.get(&key, None).await.expect("get").expect("there");
        assert!(stored.value.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        assert_eq!(rotated.get(&key, None).await.expect("get").expect("there").value, plain);
        // without identity, plain data is an error; a value moved to another key does not open
        let err = rotated.get(&old.key, None).await.expect_err("no identity");
        assert!(err.to_string().contains("no matching prefix found"), "{err}");
        let moved = format!("{}secrets/default/moved", raw.prefix());
        raw.create(&moved, stored.value.clone(), None).await.expect("create");
        let err = rotated.get(&moved, None).await.expect_err("bound to its key");
        assert!(err.to_string().contains("message authentication failed"), "{err}");
        // an old key dropped: its data no longer reads
        let only_new =
            EncryptedStore::new(raw.clone(), config(&format!("      - aesgcm:\n          keys:\n            - name: key2\n              secret: {KEY2}\n")));
        assert_eq!(only_new.get(&key, None).await.expect("get").expect("there").mod_revision, again.mod_revision);
        raw.close().await;
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let parse = |p: &str| {
            config::parse(&format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{p}"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert!(parse("      - aescbc:\n          keys:\n            - name: k\n              secret: c2hvcnQ=\n")
            .unwrap_err()
            .contains("must be 16, 24 or 32 bytes"));
        assert!(parse("      - aescbc:\n          keys: []\n").unwrap_err().contains("at least one key"));
        assert!(parse("      - rot13: {}\n").is_err());
        assert!(parse("      - identity: {}\n").is_ok());
        assert!(config::parse("apiVersion: v1\nkind: ConfigMap\nresources: []\n").is_err());
    }
}
