//! The values that cross the store trait: key-values with their revisions, list and watch
//! options and answers, watch events, and the watch stream handle shared by both backends.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Result, StoreError};

/// The store's global revision: it grows by one with every write and is the objects'
/// `resourceVersion`. Revision 0 means "nothing written yet".
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created the key (it changes when a key is deleted and created again).
    pub create_revision: Revision,
    /// The revision of the key's last write: the compare-and-swap token.
    pub mod_revision: Revision,
}

/// Options of [`Store::list`](crate::Store::list).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// List the prefix as it was at this revision (None or 0: the latest). Not allowed together
    /// with a continue token, which carries its own revision.
    pub revision: Option<Revision>,
    /// At most this many items (None or 0: all).
    pub limit: Option<usize>,
    /// The token of the previous page: the next page is read at the same revision, so the pages
    /// together are one consistent snapshot.
    pub continue_token: Option<String>,
    /// Also count the items after this page ([`ListResponse::remaining`]).
    pub count_remaining: bool,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResponse {
    /// The items, ordered by key.
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at (the list's `resourceVersion`).
    pub revision: Revision,
    /// Present when more items follow: pass it in [`ListOptions::continue_token`].
    pub continue_token: Option<String>,
    /// With [`ListOptions::count_remaining`]: how many items follow this page.
    pub remaining: Option<u64>,
}

/// What a delete removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The key's last value before the delete.
    pub prev: KeyValue,
    /// The revision of the delete.
    pub revision: Revision,
}

/// One change seen by a watch, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created (it did not exist just before).
    Created { kv: KeyValue },
    /// The key was updated; `prev` is its value just before.
    Updated { kv: KeyValue, prev: KeyValue },
    /// The key was deleted at `revision`; `prev` is its last value.
    Deleted { key: String, revision: Revision, prev: KeyValue },
    /// A bookmark: every change under the watched prefix up to `revision` has been delivered.
    Progress { revision: Revision },
}

impl WatchEvent {
    /// The revision of the change (or of the bookmark).
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Created { kv } | WatchEvent::Updated { kv, .. } => kv.mod_revision,
            WatchEvent::Deleted { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }

    /// The key changed (None for a bookmark).
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Created { kv } | WatchEvent::Updated { kv, .. } => Some(&kv.key),
            WatchEvent::Deleted { key, .. } => Some(key),
            WatchEvent::Progress { .. } => None,
        }
    }
}

/// Options of [`Store::watch`](crate::Store::watch).
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Send a [`WatchEvent::Progress`] bookmark when the watch has been idle this long (None:
    /// no bookmarks). The etcd backend also asks etcd for its own periodic notifications.
    pub progress_interval: Option<Duration>,
}

/// How many messages a watch buffers for its reader before the producer waits.
pub(crate) const WATCH_BUFFER: usize = 1024;

/// A running watch: its events in revision order. An `Err` item ends the stream (compacted,
/// too slow, store closed); dropping the stream stops the watch.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchEvent>>,
    task: JoinHandle<()>,
}

impl WatchStream {
    /// A stream fed by `task` through the sender paired with `rx`.
    pub fn new(rx: mpsc::Receiver<Result<WatchEvent>>, task: JoinHandle<()>) -> Self {
        WatchStream { rx, task }
    }

    /// The next event; None once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        self.rx.recv().await
    }

    /// An event if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Result<WatchEvent>> {
        self.rx.try_recv().ok()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for WatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

/// Sends `item` to a watch's reader; false when the reader has gone.
pub(crate) async fn deliver(tx: &mpsc::Sender<Result<WatchEvent>>, item: Result<WatchEvent, StoreError>) -> bool {
    tx.send(item).await.is_ok()
}
