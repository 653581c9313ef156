//! The revision of this server's last write per resource: a thin layer over the store that
//! notes, for each write that succeeds, its revision under the key's first segment after the
//! store prefix (`clusterroles`, `rolebindings`, `pods`, ...). Readers that answer from a watch
//! cache and must see what was written just before (authorization after a RoleBinding was
//! created) wait for their cache to reach that revision, and wait only then: a cache that
//! nobody wrote to is never waited for, even on an etcd that sends a quiet watch no progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_store::{Deleted, KeyValue, ListOptions, ListResponse, Revision, Store, StoreError, WatchOptions, WatchStream};
use bytes::Bytes;

pub struct WriteTracking {
    inner: Arc<dyn Store>,
    last: Mutex<HashMap<String, Revision>>,
}

impl WriteTracking {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        WriteTracking { inner, last: Mutex::new(HashMap::new()) }
    }

    /// The segment a key is noted under.
    fn segment<'k>(&self, key: &'k str) -> &'k str {
        let rest = key.strip_prefix(self.inner.prefix()).unwrap_or(key);
        rest.split('/').next().unwrap_or("")
    }

    fn note(&self, key: &str, revision: Revision) {
        let seg = self.segment(key).to_string();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let r = last.entry(seg).or_insert(0);
        *r = (*r).max(revision);
    }

    /// The revision of this server's last write of a resource stored under `storage`
    /// (`rolebindings`, `services/specs`: its first segment counts); 0 when none.
    pub fn last(&self, storage: &str) -> Revision {
        let seg = storage.split('/').next().unwrap_or("");
        self.last.lock().unwrap_or_else(|e| e.into_inner()).get(seg).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Store for WriteTracking {
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
        let kv = self.inner.create(key, value, ttl).await?;
        self.note(key, kv.mod_revision);
        Ok(kv)
    }
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key, revision).await
    }
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision, ttl: Option<Duration>) -> Result<KeyValue, StoreError> {
        let kv = self.inner.update(key, value, expected_mod_revision, ttl).await?;
        self.note(key, kv.mod_revision);
        Ok(kv)
    }
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted, StoreError> {
        let d = self.inner.delete(key, expected_mod_revision).await?;
        self.note(key, d.revision);
        Ok(d)
    }
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResponse, StoreError> {
        self.inner.list(prefix, options).await
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.count(prefix).await
    }
    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after, options).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn needs_rewrite(&self, kv: &KeyValue) -> bool {
        self.inner.needs_rewrite(kv)
    }
}

#[cfg(test)]
mod tests {
    use berth_store::{EmbeddedConfig, EmbeddedStore};

    use super::*;

    #[tokio::test]
    async fn writes_are_noted_by_their_first_segment() {
        let dir = tempfile::tempdir().expect("dir");
        let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
        let t = WriteTracking::new(inner);
        let p = t.prefix().to_string();
        assert_eq!(t.last("rolebindings"), 0);
        let kv = t.create(&format!("{p}rolebindings/ns/rb"), Bytes::from_static(b"{}"), None).await.expect("create");
        assert_eq!(t.last("rolebindings"), kv.mod_revision);
        let kv2 = t.create(&format!("{p}services/specs/ns/s"), Bytes::from_static(b"{}"), None).await.expect("create");
        assert_eq!(t.last("services/endpoints"), kv2.mod_revision);
        let d = t.delete(&format!("{p}rolebindings/ns/rb"), None).await.expect("delete");
        assert_eq!(t.last("rolebindings"), d.revision);
        assert_eq!(t.last("pods"), 0);
    }
}
