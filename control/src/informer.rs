//! Shared informers, as client-go's: one watch per kind, a local copy of every object, and the
//! handlers of every controller interested in the kind told what changed (added, updated with
//! the old and the new object, deleted). Controllers read the copy instead of the API; several
//! controllers share one informer (the pods the ReplicaSet controller and the Deployment
//! controller see are the same objects in memory).
//!
//! The copy is kept by namespace and name in a BTreeMap, so the objects of one namespace are one
//! range. A relist (the first list, or after the watch expired) is applied at once when it is
//! complete, and its differences from the copy reach the handlers as adds, updates and deletes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::StreamExt;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// An object's namespace ("" for cluster-scoped objects) and name.
pub type ObjectKey = (String, String);

/// What happened to one object.
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

impl<K> Change<'_, K> {
    /// The object as it is now (as it was last, when deleted).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Deleted(o) => o,
            Change::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// The local copy of one kind and the handlers told of its changes.
pub struct Informer<K> {
    objects: RwLock<BTreeMap<ObjectKey, Arc<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

/// The key of an object.
pub fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    let meta = obj.meta();
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    pub fn new() -> Arc<Self> {
        Arc::new(Informer { objects: RwLock::new(BTreeMap::new()), handlers: Mutex::new(vec![]), synced: tokio::sync::watch::channel(false).0 })
    }

    /// Adds a handler: it is told of every later change (and of every object, as added, by the
    /// first list). Handlers run on the watch's task: they only queue work.
    pub fn on_change(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(handler));
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let start = (namespace.to_string(), String::new());
        self.read().range(start..).take_while(|((ns, _), _)| ns == namespace).map(|(_, o)| o.clone()).collect()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// Waits until the first list is in the copy.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ObjectKey, Arc<K>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, change: Change<'_, K>) {
        for h in self.handlers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h(&change);
        }
    }

    fn apply(&self, obj: K) {
        let new = Arc::new(obj);
        let old = self.objects.write().unwrap_or_else(|e| e.into_inner()).insert(key_of(new.as_ref()), new.clone());
        match old {
            Some(old) => self.notify(Change::Updated { old: &old, new: &new }),
            None => self.notify(Change::Added(&new)),
        }
    }

    fn delete(&self, obj: K) {
        let gone = self.objects.write().unwrap_or_else(|e| e.into_inner()).remove(&key_of(&obj));
        let gone = gone.unwrap_or_else(|| Arc::new(obj));
        self.notify(Change::Deleted(&gone));
    }

    /// Replaces the copy by a complete list, telling the handlers the differences.
    fn replace(&self, listed: BTreeMap<ObjectKey, Arc<K>>) {
        let before = std::mem::replace(&mut *self.objects.write().unwrap_or_else(|e| e.into_inner()), listed.clone());
        for (key, new) in &listed {
            match before.get(key) {
                Some(old) if old.meta().resource_version == new.meta().resource_version => {}
                Some(old) => self.notify(Change::Updated { old, new }),
                None => self.notify(Change::Added(new)),
            }
        }
        for (key, old) in &before {
            if !listed.contains_key(key) {
                self.notify(Change::Deleted(old));
            }
        }
        self.synced.send_replace(true);
    }

    /// Keeps the copy current from `api` until `stop` (a failed watch backs off and relists).
    pub async fn run(self: Arc<Self>, api: kube::Api<K>, stop: CancellationToken) {
        let mut relist: Option<BTreeMap<ObjectKey, Arc<K>>> = None;
        // a streaming list (a watch with sendInitialEvents): the objects come one by one, not as
        // one list response held whole beside the copy being built
        let stream = watcher(api, watcher::Config::default().streaming_lists()).default_backoff();
        futures_util::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = stream.next() => e,
            };
            match event {
                None => return,
                Some(Err(e)) => tracing::debug!(kind = %K::kind(&Default::default()), error = %e, "watch failed; retrying"),
                Some(Ok(watcher::Event::Init)) => relist = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(obj))) => {
                    if let Some(r) = relist.as_mut() {
                        r.insert(key_of(&obj), Arc::new(obj));
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(r) = relist.take() {
                        self.replace(r);
                    }
                }
                Some(Ok(watcher::Event::Apply(obj))) => self.apply(obj),
                Some(Ok(watcher::Event::Delete(obj))) => self.delete(obj),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cm(ns: &str, name: &str, rv: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"namespace": ns, "name": name, "resourceVersion": rv}})).expect("cm")
    }

    #[test]
    fn relists_tell_the_differences_and_namespaces_are_ranges() {
        let inf: Arc<Informer<ConfigMap>> = Informer::new();
        let (added, updated, deleted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, u, d) = (added.clone(), updated.clone(), deleted.clone());
        inf.on_change(move |c| {
            let counter = match c {
                Change::Added(_) => &a,
                Change::Updated { .. } => &u,
                Change::Deleted(_) => &d,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let list = |items: Vec<ConfigMap>| items.into_iter().map(|o| (key_of(&o), Arc::new(o))).collect::<BTreeMap<_, _>>();
        inf.replace(list(vec![cm("a", "x", "1"), cm("a", "y", "1"), cm("b", "x", "1"), cm("ab", "z", "1")]));
        assert_eq!(added.load(Ordering::SeqCst), 4);
        assert_eq!(inf.list_namespace("a").len(), 2);
        assert_eq!(inf.list_namespace("ab").len(), 1);
        inf.replace(list(vec![cm("a", "x", "1"), cm("a", "y", "2")]));
        assert_eq!((updated.load(Ordering::SeqCst), deleted.load(Ordering::SeqCst)), (1, 2));
        inf.apply(cm("a", "y", "3"));
        inf.delete(cm("a", "x", "1"));
        assert_eq!((updated.load(Ordering::SeqCst), deleted.load(Ordering::SeqCst)), (2, 3));
        assert!(inf.get("a", "x").is_none() && inf.get("a", "y").is_some());
    }
}
