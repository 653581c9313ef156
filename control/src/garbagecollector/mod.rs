//! The garbage collector, as kube-controller-manager's: it watches every resource that can be
//! listed, watched and deleted (discovery again every 30 s, so custom resources join and leave),
//! keeps a graph of owner references (`graph`), and looks at an object when its owners change or
//! an owner goes away. Looking means reading the object and each owner through the API (an
//! owner of another uid, or a namespaced owner looked for in the dependent's namespace and not
//! found there, is absent), then deciding (`decide`): keep it, remove the dangling references,
//! or delete it. So dependents created with a reference to an owner that never existed, or that
//! went while they were being created, are collected.
//!
//! Owners being deleted are finished here as upstream's collector finishes them, whoever marked
//! them and whenever: one with a deletionTimestamp and the `foregroundDeletion` finalizer has
//! its dependents looked at (deleted, as their owner waits) and loses the finalizer when no
//! dependent with blockOwnerDeletion is left; one with the `orphan` finalizer has its reference
//! removed from every dependent, then loses the finalizer. Both are seen again on every list,
//! so a restart in the middle, or dependents that take long to go (a grace period, a finalizer
//! of their own), change nothing. The apiserver does the same at delete time (`rest/cascade.rs`)
//! so that the common case is fast and also works with this controller turned off; what it
//! leaves (its wait for dependents gives up after two minutes) this controller finishes.
//! Decisions that need every dependent (removing a finalizer) wait until each resource has been
//! listed once. Other objects being deleted are skipped. This controller only deletes, patches
//! owner references and finalizers, and records events, through the API.

pub mod decide;
pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::discovery::{self, Served};
use crate::recorder::{Recorder, WARNING};
use crate::workqueue::WorkQueue;
use decide::{Decision, Owner, Waiting};
use graph::{Graph, Node, Work};

/// How often discovery is read again (upstream's resync of the monitors).
const DISCOVERY_PERIOD: Duration = Duration::from_secs(30);
/// Items looked at at once (upstream's --concurrent-gc-syncs is 20).
const WORKERS: usize = 4;
/// Owners remembered as absent (upstream's absentOwnerCache holds 500).
const ABSENT_REMEMBERED: usize = 500;
/// How soon a decision that needs the whole graph is tried again while it is being listed.
const UNSYNCED_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("unable to get REST mapping for {api_version}/{kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{verb} {kind} {namespace}/{name}: {source}")]
    Api { verb: &'static str, kind: String, namespace: String, name: String, source: Box<kube::Error> },
}

/// The group of an apiVersion ("" for "v1").
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// An owner reference as upstream's objectReference prints it in events.
fn describe(r: &OwnerReference, namespace: &str) -> String {
    format!("[{}/{}, namespace: {namespace}, name: {}, uid: {}]", r.api_version, r.kind, r.name, r.uid)
}

/// The message of an OwnerRefInvalidNamespace event.
pub fn invalid_namespace_message(r: &OwnerReference, namespace: &str) -> String {
    format!("ownerRef {} does not exist in namespace {namespace:?}", describe(r, namespace))
}

pub struct Collector {
    client: kube::Client,
    recorder: Recorder,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<Work>>,
    /// Monitors that have not finished their first list, and whether discovery ran once: the
    /// graph is complete when both are done.
    listing: Mutex<HashSet<String>>,
    discovered: std::sync::atomic::AtomicBool,
    /// (group, kind) → the resource serving it, from the last discovery.
    kinds: RwLock<HashMap<(String, String), Served>>,
    /// (owner uid, namespace looked in) found absent.
    absent: Mutex<HashSet<(String, String)>>,
}

impl Collector {
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(Collector {
            recorder: Recorder::new(client.clone(), "garbage-collector-controller"),
            client,
            graph: Mutex::new(Graph::default()),
            queue: WorkQueue::new(),
            kinds: RwLock::new(HashMap::new()),
            absent: Mutex::new(HashSet::new()),
            listing: Mutex::new(HashSet::new()),
            discovered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        let workers = self.queue.clone().run_workers(WORKERS, stop.clone(), move |work: Work| {
            let me = me.clone();
            async move {
                match work {
                    Work::Attempt(uid) => {
                        let span = tracing::debug_span!("garbagecollector", uid = %uid);
                        me.attempt(&uid).instrument(span).await.map_err(|e| e.to_string())
                    }
                    Work::Orphan(uid) => {
                        let span = tracing::debug_span!("garbagecollector-orphan", uid = %uid);
                        me.orphan(&uid).instrument(span).await.map_err(|e| e.to_string())
                    }
                }
            }
        });
        let monitors = self.clone().keep_monitors(stop);
        tokio::join!(workers, monitors);
    }

    /// Watches every deletable resource, reading discovery again every 30 s.
    async fn keep_monitors(self: Arc<Self>, stop: CancellationToken) {
        let mut running: HashMap<String, CancellationToken> = HashMap::new();
        let mut tick = tokio::time::interval(DISCOVERY_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let found = match discovery::preferred(&self.client).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "garbage collector: discovery failed");
                    continue;
                }
            };
            let mut kinds = HashMap::new();
            let mut wanted = HashMap::new();
            for s in found.resources {
                kinds.insert((s.resource.group.clone(), s.resource.kind.clone()), s.clone());
                let ignored = s.resource.plural == "events" && (s.resource.group.is_empty() || s.resource.group == "events.k8s.io");
                if !ignored && ["list", "watch", "delete"].iter().all(|v| s.supports(v)) {
                    wanted.insert(format!("{}/{}", s.resource.api_version, s.resource.plural), s);
                }
            }
            *self.kinds.write().unwrap_or_else(|e| e.into_inner()) = kinds;
            // a group whose discovery failed keeps its monitors (upstream does not stop them)
            let failed: HashSet<&str> = found.failed.keys().map(String::as_str).collect();
            running.retain(|key, token| {
                let gv = key.rsplit_once('/').map(|(gv, _)| gv).unwrap_or("");
                let keep = wanted.contains_key(key) || failed.contains(gv);
                if !keep {
                    token.cancel();
                    self.listing().remove(key);
                }
                keep
            });
            for (key, served) in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                let token = stop.child_token();
                running.insert(key.clone(), token.clone());
                self.listing().insert(key.clone());
                let span = tracing::debug_span!("gc-monitor", resource = %key);
                tokio::spawn(self.clone().monitor(key, served, token).instrument(span));
            }
            self.discovered.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Keeps the graph current for one resource until `stop`.
    async fn monitor(self: Arc<Self>, key: String, served: Served, stop: CancellationToken) {
        let api: kube::Api<DynamicObject> = kube::Api::all_with(self.client.clone(), &served.resource);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut relist: Option<HashSet<String>> = None;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = stream.next() => e,
            };
            match event {
                None => break,
                Some(Err(e)) => tracing::debug!(error = %e, "watch failed; retrying"),
                Some(Ok(watcher::Event::Init)) => relist = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(obj))) => {
                    if let (Some(seen), Some(uid)) = (relist.as_mut(), obj.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.observe(&key, &served, obj);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(seen) = relist.take() {
                        let gone: Vec<String> = self.graph().of_resource(&key).into_iter().filter(|u| !seen.contains(u)).collect();
                        for uid in gone {
                            self.forget(&uid);
                        }
                    }
                    self.listing().remove(&key);
                }
                Some(Ok(watcher::Event::Apply(obj))) => self.observe(&key, &served, obj),
                Some(Ok(watcher::Event::Delete(obj))) => {
                    if let Some(uid) = obj.metadata.uid.as_deref() {
                        self.forget(uid);
                    }
                }
            }
        }
        // the resource is no longer served: its objects leave the graph
        self.listing().remove(&key);
        let gone = self.graph().of_resource(&key);
        for uid in gone {
            self.forget(&uid);
        }
    }

    fn observe(&self, key: &str, served: &Served, obj: DynamicObject) {
        let Some(uid) = obj.metadata.uid.clone() else { return };
        let node = Node {
            api_version: served.resource.api_version.clone(),
            kind: served.resource.kind.clone(),
            resource: key.to_string(),
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            owners: obj.metadata.owner_references.clone().unwrap_or_default(),
            deleting_dependents: deleting_with(&obj, decide::FOREGROUND_FINALIZER),
            orphaning: deleting_with(&obj, decide::ORPHAN_FINALIZER),
        };
        let todo = self.graph().upsert(&uid, node);
        for work in todo {
            self.queue.add(work);
        }
    }

    fn forget(&self, uid: &str) {
        let todo = self.graph().remove(uid);
        for work in todo {
            self.queue.add(work);
        }
    }

    fn listing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.listing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every resource has been listed once (the graph names every dependent).
    fn synced(&self) -> bool {
        self.discovered.load(std::sync::atomic::Ordering::SeqCst) && self.listing().is_empty()
    }

    fn served(&self, api_version: &str, kind: &str) -> Result<Served, AttemptError> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        kinds
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .cloned()
            .ok_or_else(|| AttemptError::UnknownKind { api_version: api_version.into(), kind: kind.into() })
    }

    fn api(&self, served: &Served, namespace: &str) -> kube::Api<DynamicObject> {
        if served.namespaced {
            kube::Api::namespaced_with(self.client.clone(), namespace, &served.resource)
        } else {
            kube::Api::all_with(self.client.clone(), &served.resource)
        }
    }

    /// Looks at the item `uid` (upstream's attemptToDeleteItem).
    async fn attempt(&self, uid: &str) -> Result<(), AttemptError> {
        let Some(node) = self.graph().get(uid).cloned() else { return Ok(()) };
        // every owner observed (and in the item's namespace or cluster-scoped), none waiting for
        // its dependents, the item not waiting for its own: nothing to ask the API (upstream
        // only looks harder at owners its graph has not observed)
        let observed = !node.deleting_dependents && {
            let g = self.graph();
            node.owners.iter().all(|r| g.get(&r.uid).is_some_and(|o| (o.namespace.is_empty() || o.namespace == node.namespace) && !o.deleting_dependents))
        };
        if observed {
            return Ok(());
        }
        let served = self.served(&node.api_version, &node.kind)?;
        let api = self.api(&served, &node.namespace);
        let failed = |verb: &'static str| {
            let (kind, namespace, name) = (node.kind.clone(), node.namespace.clone(), node.name.clone());
            move |source| AttemptError::Api { verb, kind, namespace, name, source: Box::new(source) }
        };
        let latest = api.get_opt(&node.name).await.map_err(failed("get"))?;
        let Some(latest) = latest.filter(|l| l.metadata.uid.as_deref() == Some(uid)) else {
            // gone, or another object by that name now: as if its delete had been seen
            self.forget(uid);
            return Ok(());
        };
        // being deleted: waiting for its dependents, or on its way (its finalizers' owners, its
        // node, finish it)
        if latest.metadata.deletion_timestamp.is_some() {
            if deleting_with(&latest, decide::FOREGROUND_FINALIZER) {
                return self.finish_waiting(uid, &node, &api, &latest).await;
            }
            return Ok(());
        }
        let refs = latest.metadata.owner_references.clone().unwrap_or_default();
        let mut owners = vec![];
        for r in &refs {
            let Some(state) = self.owner_state(&node, &latest, r).await? else {
                // a cluster-scoped object naming a namespaced owner: never valid, never retried
                return Ok(());
            };
            owners.push((r.uid.clone(), state));
        }
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let has_dependents = self.graph().has_dependents(uid);
        let rv = latest.metadata.resource_version.clone();
        match decide::decide(&owners, has_dependents, &finalizers) {
            Decision::Keep => Ok(()),
            Decision::RemoveReferences(gone) => {
                let kept: Vec<&OwnerReference> = refs.iter().filter(|r| !gone.contains(&r.uid)).collect();
                let patch = serde_json::json!({"metadata": {"ownerReferences": kept, "resourceVersion": rv, "uid": uid}});
                tracing::info!(kind = %node.kind, namespace = %node.namespace, name = %node.name, removed = ?gone, "removing dangling owner references");
                match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(failed("patch")(e)),
                }
            }
            Decision::Delete(policy) => {
                tracing::info!(kind = %node.kind, namespace = %node.namespace, name = %node.name, ?policy, "deleting an object whose owners are gone");
                let params = DeleteParams {
                    propagation_policy: Some(policy.policy()),
                    preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: rv }),
                    ..Default::default()
                };
                match api.delete(&node.name, &params).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(failed("delete")(e)),
                }
            }
        }
    }

    /// An owner waiting for its dependents (upstream's processDeletingDependentsItem): its
    /// blocking dependents are looked at until none is left, then the finalizer goes.
    async fn finish_waiting(&self, uid: &str, node: &Node, api: &kube::Api<DynamicObject>, latest: &DynamicObject) -> Result<(), AttemptError> {
        let blocking = self.graph().blocking_dependents(uid);
        match decide::waiting(&blocking) {
            Waiting::LookAt(dependents) => {
                for d in dependents {
                    self.queue.add(Work::Attempt(d));
                }
                Ok(())
            }
            Waiting::RemoveFinalizer if !self.synced() => {
                self.queue.add_after(Work::Attempt(uid.to_string()), UNSYNCED_RETRY);
                Ok(())
            }
            Waiting::RemoveFinalizer => {
                tracing::info!(kind = %node.kind, namespace = %node.namespace, name = %node.name, "no blocking dependents left: removing the foregroundDeletion finalizer");
                self.remove_finalizer(node, api, latest, decide::FOREGROUND_FINALIZER).await
            }
        }
    }

    /// An owner orphaning its dependents (upstream's attemptToOrphan): the reference to it is
    /// removed from every dependent, then its `orphan` finalizer.
    async fn orphan(&self, uid: &str) -> Result<(), AttemptError> {
        let Some(node) = self.graph().get(uid).cloned() else { return Ok(()) };
        if !self.synced() {
            self.queue.add_after(Work::Orphan(uid.to_string()), UNSYNCED_RETRY);
            return Ok(());
        }
        let dependents: Vec<Node> = {
            let g = self.graph();
            g.dependents(uid).iter().filter_map(|d| g.get(d).cloned()).collect()
        };
        for dependent in dependents {
            let served = self.served(&dependent.api_version, &dependent.kind)?;
            let api = self.api(&served, &dependent.namespace);
            let failed = |verb: &'static str| {
                let (kind, namespace, name) = (dependent.kind.clone(), dependent.namespace.clone(), dependent.name.clone());
                move |source| AttemptError::Api { verb, kind, namespace, name, source: Box::new(source) }
            };
            let Some(latest) = api.get_opt(&dependent.name).await.map_err(failed("get"))? else { continue };
            let refs = latest.metadata.owner_references.clone().unwrap_or_default();
            let Some(kept) = decide::without_reference(&refs, uid) else { continue };
            let patch =
                serde_json::json!({"metadata": {"ownerReferences": kept, "resourceVersion": latest.metadata.resource_version, "uid": latest.metadata.uid}});
            match api.patch(&dependent.name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(failed("patch")(e)),
            }
        }
        let served = self.served(&node.api_version, &node.kind)?;
        let api = self.api(&served, &node.namespace);
        let latest = api.get_opt(&node.name).await.map_err(|source| AttemptError::Api {
            verb: "get",
            kind: node.kind.clone(),
            namespace: node.namespace.clone(),
            name: node.name.clone(),
            source: Box::new(source),
        })?;
        let Some(latest) = latest.filter(|l| l.metadata.uid.as_deref() == Some(uid)) else { return Ok(()) };
        tracing::info!(kind = %node.kind, namespace = %node.namespace, name = %node.name, "dependents orphaned: removing the orphan finalizer");
        self.remove_finalizer(&node, &api, &latest, decide::ORPHAN_FINALIZER).await
    }

    /// Removes `finalizer` from `latest` (a conflict is an error: the item is tried again).
    async fn remove_finalizer(&self, node: &Node, api: &kube::Api<DynamicObject>, latest: &DynamicObject, finalizer: &str) -> Result<(), AttemptError> {
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let Some(rest) = decide::without_finalizer(&finalizers, finalizer) else { return Ok(()) };
        let patch = serde_json::json!({"metadata": {"finalizers": rest, "resourceVersion": latest.metadata.resource_version, "uid": latest.metadata.uid}});
        match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(AttemptError::Api {
                verb: "patch",
                kind: node.kind.clone(),
                namespace: node.namespace.clone(),
                name: node.name.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// What the owner `r` of `item` is (upstream's isDangling and classifyReferences); None when
    /// a cluster-scoped item names a namespaced owner.
    async fn owner_state(&self, item: &Node, latest: &DynamicObject, r: &OwnerReference) -> Result<Option<Owner>, AttemptError> {
        let served = self.served(&r.api_version, &r.kind)?;
        if served.namespaced && item.namespace.is_empty() {
            self.recorder.record(self.reference(item, latest), WARNING, "OwnerRefInvalidNamespace", invalid_namespace_message(r, ""));
            return Ok(None);
        }
        let looked_in = if served.namespaced { item.namespace.clone() } else { String::new() };
        let cached = (r.uid.clone(), looked_in.clone());
        if self.absent.lock().unwrap_or_else(|e| e.into_inner()).contains(&cached) {
            return Ok(Some(Owner::Absent));
        }
        let owner = self.api(&served, &looked_in).get_opt(&r.name).await.map_err(|source| AttemptError::Api {
            verb: "get",
            kind: r.kind.clone(),
            namespace: looked_in.clone(),
            name: r.name.clone(),
            source: Box::new(source),
        })?;
        let Some(owner) = owner.filter(|o| o.metadata.uid.as_deref() == Some(r.uid.as_str())) else {
            // the uid known in another namespace: a reference across namespaces, which is invalid
            let elsewhere = self.graph().get(&r.uid).is_some_and(|o| !o.namespace.is_empty() && o.namespace != item.namespace);
            if elsewhere {
                self.recorder.record(self.reference(item, latest), WARNING, "OwnerRefInvalidNamespace", invalid_namespace_message(r, &item.namespace));
            }
            let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            if absent.len() >= ABSENT_REMEMBERED {
                absent.clear();
            }
            absent.insert(cached);
            return Ok(Some(Owner::Absent));
        };
        let waiting = deleting_with(&owner, decide::FOREGROUND_FINALIZER);
        Ok(Some(if waiting { Owner::WaitingForDependents } else { Owner::Solid }))
    }

    fn reference(&self, item: &Node, latest: &DynamicObject) -> ObjectReference {
        ObjectReference {
            api_version: Some(item.api_version.clone()),
            kind: Some(item.kind.clone()),
            namespace: Some(item.namespace.clone()).filter(|n| !n.is_empty()),
            name: Some(item.name.clone()),
            uid: latest.metadata.uid.clone(),
            resource_version: latest.metadata.resource_version.clone(),
            ..Default::default()
        }
    }
}

/// Whether `obj` is being deleted and still carries `finalizer`.
fn deleting_with(obj: &DynamicObject, finalizer: &str) -> bool {
    obj.metadata.deletion_timestamp.is_some() && obj.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == finalizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_namespace_events_read_as_upstream_writes_them() {
        let r = OwnerReference { api_version: "apps/v1".into(), kind: "ReplicaSet".into(), name: "web".into(), uid: "u1".into(), ..Default::default() };
        assert_eq!(invalid_namespace_message(&r, "b"), r#"ownerRef [apps/v1/ReplicaSet, namespace: b, name: web, uid: u1] does not exist in namespace "b""#);
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }
}
