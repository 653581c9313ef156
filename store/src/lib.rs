//! Berth's cluster store: the revisioned key-value store with watch that the control plane keeps
//! every Kubernetes object in — the contract the Kubernetes apiserver has with etcd, as one Rust
//! trait ([`Store`]) with two backends:
//!
//! - [`EmbeddedStore`]: the default, one SQLite file (plus its write-ahead log) under the data
//!   dir, crash-safe, group-committed, with an in-memory watch fan-out;
//! - [`EtcdStore`]: etcd v3, for control planes spread over several machines.
//!
//! This crate knows nothing of Kubernetes objects: keys are paths, values are bytes (the
//! apiserver stores JSON). It must not depend on the `berth` package; the apiserver depends on it.

mod compactor;
mod continue_token;
pub mod embedded;
mod error;
pub mod etcd;
pub mod etcd_process;
mod key;
mod store;
mod types;

pub use embedded::{DiskUsage, EmbeddedConfig, EmbeddedStore};
pub use error::{Result, StoreError};
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use key::{check_key, check_prefix, normalize_prefix, prefix_end, DEFAULT_MAX_VALUE_BYTES, DEFAULT_PREFIX, MAX_KEY_BYTES};
pub use store::Store;
pub use types::{Deleted, KeyValue, ListOptions, ListResponse, Revision, WatchEvent, WatchOptions, WatchStream};
