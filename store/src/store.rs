//! The store contract: one async trait that the apiserver is built on, implemented by the
//! embedded backend ([`EmbeddedStore`](crate::EmbeddedStore)) and by etcd v3
//! ([`EtcdStore`](crate::EtcdStore)). The semantics are those of the Kubernetes apiserver's
//! etcd3 storage, so either backend behaves the same under the same calls.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::types::{Deleted, KeyValue, ListOptions, ListResponse, Revision, WatchOptions, WatchStream};

/// A revisioned key-value store with watch.
///
/// - Every write (create, update, delete, a TTL expiry) takes the next global revision. etcd
///   may give several keys the same revision when one lease expires for all of them.
/// - Keys are full paths under [`Store::prefix`] (`/registry/pods/default/web-0`); values are
///   bytes of at most [`Store::max_value_bytes`]. Bad keys and values are refused before
///   anything is written.
/// - Reads at a revision below the compaction point fail with
///   [`StoreError::Compacted`](crate::StoreError::Compacted).
#[async_trait]
pub trait Store: Send + Sync {
    /// The prefix every key lies under, ending with '/' (`/registry/` by default).
    fn prefix(&self) -> &str;

    /// The largest value accepted, in bytes.
    fn max_value_bytes(&self) -> usize;

    /// The latest revision (the `resourceVersion` of the whole store).
    async fn current_revision(&self) -> Result<Revision>;

    /// Creates `key` if it does not exist (else `AlreadyExists`). With `ttl`, the key is deleted
    /// by the store once it has not been written for that long (the apiserver's Events).
    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue>;

    /// The key's value at the latest revision or at `revision` (0 also means the latest, as in
    /// etcd); None when it does not exist.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>>;

    /// Replaces the value if the key's mod revision is still `expected_mod_revision`
    /// (compare-and-swap). `NotFound` if the key is gone, `Conflict` with the current value if
    /// it changed. `ttl` replaces the key's TTL; None clears it.
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision, ttl: Option<Duration>) -> Result<KeyValue>;

    /// Deletes the key, only if its mod revision is `expected_mod_revision` when given
    /// (`Conflict` with the current value otherwise). `NotFound` if it does not exist.
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted>;

    /// The keys starting with `prefix` (which lies under the store prefix), ordered by key, at
    /// the latest revision or the one asked for, one page at a time.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResponse>;

    /// How many keys start with `prefix` now.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Watches the keys starting with `prefix` for changes after revision `after` (pass the
    /// revision of a list to continue from it, or [`Store::current_revision`] for "from now").
    /// Events arrive in revision order with their previous values, with no gap and no
    /// duplicate. If `after` is below the compaction point the watch fails with `Compacted`,
    /// either here or as the stream's first item.
    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<WatchStream>;

    /// Forgets the history before `revision`: reads at older revisions then fail with
    /// `Compacted`. Compacting to a revision at or below the current compaction point does
    /// nothing. Returns once the old history is gone; writers are never stalled by it.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Stops the store's background work and releases its resources (the embedded store's file
    /// lock). Later calls fail with `Unavailable`.
    async fn close(&self);

    /// Whether `kv`, as read, is stored in a form that should be written again even when an
    /// update leaves it unchanged (a value encrypted with a key that is no longer the first).
    fn needs_rewrite(&self, _kv: &KeyValue) -> bool {
        false
    }
}
