//! The store's typed errors: every way a store call can fail, in words the apiserver maps to
//! Kubernetes statuses (NotFound → 404, AlreadyExists/Conflict → 409, Compacted → 410 Gone,
//! InvalidKey/ValueTooLarge/InvalidContinue → 400/422, Unavailable → 503).

use crate::types::{KeyValue, Revision};

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist (update, guarded or unconditional delete).
    #[error("key {key:?} not found")]
    NotFound { key: String },

    /// `create` found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },

    /// A compare-and-swap lost: the key's mod revision is not the expected one. `current` is the
    /// value that won, so a caller can retry without reading again.
    #[error("conflict on key {key:?}: expected mod revision {expected}, current mod revision is {}", current.mod_revision)]
    Conflict { key: String, expected: Revision, current: Box<KeyValue> },

    /// The revision asked for is older than the oldest one kept (`compact_revision`): the caller
    /// must list again (the apiserver answers 410 Gone).
    #[error("revision {requested} has been compacted (the oldest revision kept is {compact_revision})")]
    Compacted { requested: Revision, compact_revision: Revision },

    /// The revision asked for has not been written yet.
    #[error("revision {requested} is in the future (the current revision is {current})")]
    FutureRevision { requested: Revision, current: Revision },

    /// The key (or list/watch prefix) is not one this store accepts.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// The value is over the store's size limit (1.5 MiB by default, as etcd's request limit).
    #[error("value of key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge { key: String, size: usize, limit: usize },

    /// A list continue token that this store did not issue, or issued for another prefix.
    #[error("invalid continue token: {reason}")]
    InvalidContinue { reason: String },

    /// Any other argument out of range (a zero TTL, a revision below zero, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The watcher did not keep up with the store's event ring and was closed. Every event up to
    /// `revision` was delivered: watch again after it.
    #[error("watcher fell more than {capacity} events behind and was closed after revision {revision}: watch again from there")]
    WatcherTooSlow { revision: Revision, capacity: usize },

    /// The store cannot answer now (closed, etcd unreachable, no leader, timeout). A write that
    /// failed this way may or may not have been applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),

    /// A failure inside the store (database error, corrupt data, a protocol surprise).
    #[error("store internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn invalid_key(key: &str, reason: impl Into<String>) -> Self {
        StoreError::InvalidKey { key: key.to_string(), reason: reason.into() }
    }
}
