//! The watch cache: one per resource, fed by ONE store watch on the resource's prefix. It keeps
//! the current objects (for lists at resourceVersion=0 and a watch's initial events) and a window
//! of recent events (for watches from an older resourceVersion), and fans changes out to every
//! watcher. A watch from before the window is 410 Gone, as upstream's cache answers. When the
//! store watch fails (compaction, a slow reader, etcd trouble) the cache lists again and ends its
//! watchers, which re-watch from the resourceVersion they last saw.
//!
//! Objects are kept as their JSON ([`Encoded`]), one copy per revision shared by the current
//! objects, the event window and every watcher; what selectors look at (labels, selectable
//! fields) is worked out from it the first time a selector asks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use berth_store::{KeyValue, ListOptions, Revision, Store, WatchEvent, WatchOptions};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::encoded::Encoded;
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
    pub object: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
}

/// One revision of one object.
#[derive(Debug)]
pub struct CachedObject {
    pub encoded: Encoded,
    selectable: OnceLock<Option<Selectable>>,
    /// A reader's typed form of the object (RBAC's compiled roles), worked out once per revision.
    typed: OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

/// What label and field selectors match an object on.
#[derive(Debug, Default)]
pub struct Selectable {
    pub labels: BTreeMap<String, String>,
    pub name: String,
    pub namespace: String,
    /// The kind's selectable fields (the strategy's).
    pub fields: Vec<(&'static str, String)>,
}

impl Selectable {
    pub fn of(res: &Resource, obj: &Value) -> Self {
        Selectable {
            labels: obj.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok()).unwrap_or_default(),
            name: crate::meta::name(obj).to_string(),
            namespace: crate::meta::get(obj, "namespace").unwrap_or("").to_string(),
            fields: res.strategy.fields(obj),
        }
    }

    /// The value of a selectable field (metadata.name and metadata.namespace included).
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            other => self.fields.iter().find(|(k, _)| *k == other).map(|(_, v)| v.clone()),
        }
    }
}

impl CachedObject {
    pub fn new(encoded: Encoded) -> Self {
        CachedObject { encoded, selectable: OnceLock::new(), typed: OnceLock::new() }
    }

    /// The object in a reader's typed form `T`, made by `make` the first time it is asked for
    /// (None when the object cannot be decoded or `make` refuses it). One reader type per kind
    /// is kept; another type is made afresh on every call.
    pub fn typed<T: Send + Sync + 'static>(&self, make: impl FnOnce(Value) -> Option<T>) -> Option<Arc<T>> {
        if let Some(kept) = self.typed.get() {
            if let Ok(t) = kept.clone().downcast::<T>() {
                return Some(t);
            }
            return make(self.encoded.value().ok()?).map(Arc::new);
        }
        let made: Arc<T> = Arc::new(make(self.encoded.value().ok()?)?);
        let _ = self.typed.set(made.clone());
        Some(made)
    }

    /// The object as a Value (as `decode_kv` gives it).
    pub fn value(&self) -> Result<Value, ApiError> {
        self.encoded.value().map_err(ApiError::internal)
    }

    /// Labels and fields for selectors (None when the object cannot be decoded).
    pub fn selectable(&self, res: &Resource) -> Option<&Selectable> {
        self.selectable.get_or_init(|| self.encoded.value().ok().map(|v| Selectable::of(res, &v))).as_ref()
    }
}

struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
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
                match Encoded::from_kv(kv) {
                    Ok(o) => {
                        objects.insert(kv.key.clone(), Arc::new(CachedObject::new(o)));
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
                let Ok(obj) = Encoded::from_kv(&kv) else { return };
                let obj = Arc::new(CachedObject::new(obj));
                let prev = st.objects.insert(kv.key.clone(), obj.clone());
                let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
                CacheEvent { kind, revision: kv.mod_revision, key: kv.key, object: obj, prev }
            }
            WatchEvent::Deleted { key, revision, prev } => {
                let old = st.objects.remove(&key);
                // The deleted object carries the revision of its deletion, as upstream's does.
                let obj = match &old {
                    Some(o) => o.encoded.at_revision(revision),
                    None => Encoded::new(&prev.value, revision),
                };
                let Ok(obj) = obj else { return };
                CacheEvent { kind: EventType::Deleted, revision, key, object: Arc::new(CachedObject::new(obj)), prev: old }
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

    /// Notices of the cache's progress (every event and progress notification).
    pub fn changes(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// Ends every watch of this cache (its resource is no longer served).
    pub fn close(&self) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.tx = broadcast::channel(WINDOW).0;
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
    pub fn snapshot(&self, prefix: &str) -> (Vec<Arc<CachedObject>>, Revision) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let items = st.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
        (items, st.revision)
    }

    /// The object at `key` now.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).objects.get(key).cloned()
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
