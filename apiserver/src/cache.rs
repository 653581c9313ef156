//! The watch cache: one per resource, fed by ONE store watch on the resource's prefix. It keeps
//! the current objects (for lists at resourceVersion=0 and a watch's initial events) and a window
//! of recent events (for watches from an older resourceVersion), and fans changes out to every
//! watcher. A watch from before the window is 410 Gone, as upstream's cache answers. When the
//! store watch fails (compaction, a slow reader, etcd trouble) the cache lists again and ends its
//! watchers, which re-watch from the resourceVersion they last saw.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_store::{KeyValue, ListOptions, Revision, Store, WatchEvent, WatchOptions};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::resources::Resource;
use crate::status::ApiError;

/// Events kept per resource for watches from an older resourceVersion.
const WINDOW: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object, with the object's previous state (for selector transitions).
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventType,
    pub revision: Revision,
    pub key: String,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
}

struct State {
    objects: BTreeMap<String, Arc<Value>>,
    revision: Revision,
    /// Every event after this revision is in `events`.
    window_start: Revision,
    events: VecDeque<Arc<CacheEvent>>,
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

/// A subscription: the events to send first, then the live ones.
pub struct Subscription {
    pub initial: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
    /// Events at or below this revision are already covered by `initial`.
    pub after: Revision,
}

pub struct WatchCache {
    pub res: Arc<Resource>,
    prefix: String,
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
}

/// A stored object with its resourceVersion.
pub fn decode_kv(kv: &KeyValue) -> Result<Value, String> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| format!("stored object {} is not JSON: {e}", kv.key))?;
    crate::meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
    Ok(obj)
}

impl WatchCache {
    pub fn new(res: Arc<Resource>, store_prefix: &str) -> Arc<Self> {
        let (tx, _) = broadcast::channel(WINDOW);
        let prefix = res.prefix(store_prefix);
        Arc::new(WatchCache {
            res,
            prefix,
            state: RwLock::new(State { objects: BTreeMap::new(), revision: 0, window_start: 0, events: VecDeque::new(), tx }),
            revision: watch::channel(0).0,
        })
    }

    /// Runs the cache: list, watch, list again on failure. Returns when the store is closed.
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let span = tracing::info_span!("watch_cache", resource = %me.res.qualified());
        tokio::spawn(async move { me.run(store).await }.instrument(span))
    }

    async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            let rev = match self.relist(store.as_ref()).await {
                Ok(rev) => rev,
                Err(e) => {
                    tracing::warn!(error = %e, "listing for the watch cache failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let opts = WatchOptions { progress_interval: Some(Duration::from_secs(1)) };
            let mut w = match store.watch(&self.prefix, rev, opts).await {
                Ok(w) => w,
                Err(berth_store::StoreError::Unavailable(e)) if e.contains("closed") => return,
                Err(e) => {
                    tracing::warn!(error = %e, "store watch failed; listing again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(ev) = w.next().await {
                match ev {
                    Ok(ev) => self.apply(ev),
                    Err(e) => {
                        tracing::info!(error = %e, "store watch ended; listing again");
                        break;
                    }
                }
            }
        }
    }

    async fn relist(&self, store: &dyn Store) -> Result<Revision, berth_store::StoreError> {
        let mut objects = BTreeMap::new();
        let mut opts = ListOptions { limit: Some(1000), ..Default::default() };
        let revision = loop {
            let page = store.list(&self.prefix, opts.clone()).await?;
            for kv in &page.kvs {
                match decode_kv(kv) {
                    Ok(o) => {
                        objects.insert(kv.key.clone(), Arc::new(o));
                    }
                    Err(e) => tracing::error!(error = %e, "skipping an undecodable object"),
                }
            }
            match page.continue_token {
                Some(t) => opts = ListOptions { limit: Some(1000), continue_token: Some(t), ..Default::default() },
                None => break page.revision,
            }
        };
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.objects = objects;
        st.revision = revision;
        st.window_start = revision;
        st.events.clear();
        // Watchers of the old state end; they watch again from what they saw.
        st.tx = broadcast::channel(WINDOW).0;
        drop(st);
        self.revision.send_replace(revision);
        Ok(revision)
    }

    fn apply(&self, ev: WatchEvent) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let event = match ev {
            WatchEvent::Progress { revision } => {
                if revision > st.revision {
                    st.revision = revision;
                    drop(st);
                    self.revision.send_replace(revision);
                }
                return;
            }
            WatchEvent::Created { kv } | WatchEvent::Updated { kv, .. } => {
                let Ok(obj) = decode_kv(&kv) else { return };
                let obj = Arc::new(obj);
                let prev = st.objects.insert(kv.key.clone(), obj.clone());
                let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
                CacheEvent { kind, revision: kv.mod_revision, key: kv.key, object: obj, prev }
            }
            WatchEvent::Deleted { key, revision, prev } => {
                let old = st.objects.remove(&key);
                let mut obj = match old.as_deref().cloned().map(Ok).unwrap_or_else(|| decode_kv(&prev)) {
                    Ok(o) => o,
                    Err(_) => return,
                };
                // The deleted object carries the revision of its deletion, as upstream's does.
                crate::meta::set(&mut obj, "resourceVersion", json!(revision.to_string()));
                CacheEvent { kind: EventType::Deleted, revision, key, object: Arc::new(obj), prev: old }
            }
        };
        let event = Arc::new(event);
        st.revision = st.revision.max(event.revision);
        st.events.push_back(event.clone());
        while st.events.len() > WINDOW {
            if let Some(old) = st.events.pop_front() {
                st.window_start = old.revision;
            }
        }
        let _ = st.tx.send(event);
        let rev = st.revision;
        drop(st);
        self.revision.send_replace(rev);
    }

    /// The revision the cache has seen everything up to.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the cache has seen `rev` (or `timeout` passes).
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await.is_ok_and(|r| r.is_ok())
    }

    /// The objects under `prefix` now, and the revision they are at.
    pub fn snapshot(&self, prefix: &str) -> (Vec<Arc<Value>>, Revision) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let items = st.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
        (items, st.revision)
    }

    /// Subscribes from `from`: None starts with the current objects as ADDED events (watch at
    /// resourceVersion "" or "0"), Some(rv) with the events after rv (410 when rv is too old).
    pub fn subscribe(&self, from: Option<Revision>, prefix: &str) -> Result<Subscription, ApiError> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let live = st.tx.subscribe();
        match from {
            None => {
                let initial = st
                    .objects
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| Arc::new(CacheEvent { kind: EventType::Added, revision: st.revision, key: k.clone(), object: v.clone(), prev: None }))
                    .collect();
                Ok(Subscription { initial, live, after: st.revision })
            }
            Some(rv) if rv < st.window_start => Err(ApiError::gone(format!("too old resource version: {rv} ({})", st.window_start + 1))),
            Some(rv) => {
                let initial = st.events.iter().filter(|e| e.revision > rv && e.key.starts_with(prefix)).cloned().collect();
                Ok(Subscription { initial, live, after: rv.max(st.revision) })
            }
        }
    }
}
