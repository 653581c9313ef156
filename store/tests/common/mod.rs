//! Fixtures shared by the store's test files: a store of each backend, with everything it made
//! (temp dir, etcd process) removed when the fixture is dropped, also when a test fails.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use berth_store::etcd_process::EtcdCluster;
use berth_store::{EmbeddedConfig, EmbeddedStore, EtcdConfig, EtcdStore, Store, StoreError, WatchEvent, WatchStream};
use bytes::Bytes;

/// etcd flags for tests: frequent progress notifications (etcd's default is 10 minutes).
pub const TEST_ETCD_ARGS: &[&str] = &["--experimental-watch-progress-notify-interval=500ms"];

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub embedded: Option<EmbeddedStore>,
    pub etcd: Option<EtcdCluster>,
    pub dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub async fn finish(self) {
        self.store.close().await;
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-store-test-").tempdir().expect("temp dir")
}

/// The embedded defaults for tests: no periodic compaction.
pub fn embedded_config(dir: &std::path::Path) -> EmbeddedConfig {
    let mut config = EmbeddedConfig::new(dir);
    config.compaction_interval = None;
    config
}

pub async fn embedded() -> Fixture {
    embedded_with(|c| c).await
}

pub async fn embedded_with(tune: impl FnOnce(EmbeddedConfig) -> EmbeddedConfig) -> Fixture {
    let dir = temp_dir();
    let store = EmbeddedStore::open(tune(embedded_config(dir.path()))).await.expect("open the embedded store");
    Fixture { store: Arc::new(store.clone()), embedded: Some(store), etcd: None, dir: Some(dir) }
}

pub async fn etcd() -> Fixture {
    let cluster = EtcdCluster::single(TEST_ETCD_ARGS).await.expect("start etcd (install etcd-server: hack/deps.sh)");
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.compaction_interval = None;
    let store = EtcdStore::connect(config).await.expect("connect to etcd");
    Fixture { store: Arc::new(store), embedded: None, etcd: Some(cluster), dir: None }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The next change (bookmarks skipped); fails the test on an error or after [`WAIT`].
pub async fn next_change(w: &mut WatchStream) -> WatchEvent {
    loop {
        match tokio::time::timeout(WAIT, w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
            Ok(Some(Ok(e))) => return e,
            Ok(Some(Err(e))) => panic!("watch failed: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no watch event within {WAIT:?}"),
        }
    }
}

/// Changes until one at `revision` or later has arrived.
pub async fn changes_through(w: &mut WatchStream, revision: i64) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    loop {
        let e = next_change(w).await;
        let r = e.revision();
        out.push(e);
        if r >= revision {
            return out;
        }
    }
}

/// The error a watch from a compacted revision ends with: from `watch` itself or as the
/// stream's first item (etcd reports it a moment after creating the watch).
pub async fn watch_error(result: Result<WatchStream, StoreError>) -> StoreError {
    match result {
        Err(e) => e,
        Ok(mut w) => loop {
            match tokio::time::timeout(WAIT, w.next()).await {
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
                Ok(Some(Ok(e))) => panic!("expected the watch to fail, got {e:?}"),
                Ok(None) => panic!("watch ended without an error"),
                Err(_) => panic!("watch did not fail within {WAIT:?}"),
            }
        },
    }
}

/// Waits until `f` holds, checking every 20 ms, for at most [`WAIT`].
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
