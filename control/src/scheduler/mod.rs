//! The default scheduler: watches nodes and pods through the API, queues pending pods whose
//! schedulerName is one of its profiles', and for each runs the profile's filters and scores
//! over a snapshot of the cluster, then binds it through pods/binding (or, when nothing fits,
//! preempts lower-priority pods or reports why with upstream's message).
//!
//! Files, one job each: `queue` (order, back-off, re-queue on events), `cache` (nodes and their
//! pods), `resources` (requests arithmetic), `framework` (plugins, profile, fit error),
//! `plugins/` (one per filter/score), `preemption`, `volumes` (VolumeBinding's PreBind),
//! `binder`, `events` (Events and the PodScheduled condition), `config`
//! (KubeSchedulerConfiguration). This file wires them to the
//! watches and runs the scheduling loop.

pub mod binder;
pub mod cache;
pub mod config;
pub mod events;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod slim;
pub mod volumes;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::DeleteParams;
use kube::runtime::{watcher, WatchStreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use cache::{pod_key, Cache, PodKey, Volumes};
use framework::{FitError, Profile};
use queue::{Queue, QueuedPod};

/// How the scheduler lists and watches: as a streaming list (a watch with sendInitialEvents),
/// so the objects arrive one by one instead of as a list response of every pod at once (which
/// an apiserver answers whole from its watch cache, limit or not): the scheduler never holds
/// more than its own cache of them.
fn watch_config() -> watcher::Config {
    watcher::Config::default().streaming_lists()
}

/// A running scheduler's shared state.
struct Shared {
    client: kube::Client,
    profiles: Vec<Arc<Profile>>,
    identity: String,
    cache: Mutex<Cache>,
    queue: Queue,
    /// Woken on every claim, volume or class change (pods waiting in PreBind look again).
    volumes_changed: tokio::sync::Notify,
    /// Bindings (with their Scheduled event) in flight at most: the placing goes on while they
    /// are written, but a burst of placements does not open a request (and, against a remote
    /// apiserver, a connection) per pod at once, as upstream's client rate limit also prevents.
    binds: tokio::sync::Semaphore,
}

/// How many bindings are written at once.
const CONCURRENT_BINDS: usize = 32;

impl Shared {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reporter<'a>(&'a self, pod: &'a Pod) -> events::Reporter<'a> {
        events::Reporter { component: events::component(pod), instance: &self.identity }
    }

    fn profile_for(&self, pod: &Pod) -> Option<Arc<Profile>> {
        let name = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(config::DEFAULT_SCHEDULER_NAME);
        self.profiles.iter().find(|p| p.scheduler_name == name).cloned()
    }
}

fn assigned_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

/// Runs the scheduler with `profiles` until `stop`.
pub async fn run(client: kube::Client, profiles: Vec<Arc<Profile>>, identity: String, stop: CancellationToken) {
    let shared = Arc::new(Shared {
        client,
        profiles,
        identity,
        cache: Mutex::new(Cache::default()),
        queue: Queue::new(),
        volumes_changed: tokio::sync::Notify::new(),
        binds: tokio::sync::Semaphore::new(CONCURRENT_BINDS),
    });
    let nodes = tokio::spawn(watch_nodes(shared.clone()).instrument(tracing::info_span!("node-watch")));
    let pods = tokio::spawn(watch_pods(shared.clone()).instrument(tracing::info_span!("pod-watch")));
    let namespaces = tokio::spawn(watch_namespaces(shared.clone()).instrument(tracing::info_span!("namespace-watch")));
    let budgets = tokio::spawn(watch_budgets(shared.clone()).instrument(tracing::info_span!("pdb-watch")));
    let claims = tokio::spawn(
        watch_volume_kind::<PersistentVolumeClaim>(
            shared.clone(),
            "PvcAddOrUpdate",
            |v, c| {
                v.claims.insert(pod_key_of(&c.metadata), c);
            },
            |v, c| {
                v.claims.remove(&pod_key_of(&c.metadata));
            },
            |v| v.claims.clear(),
        )
        .instrument(tracing::info_span!("pvc-watch")),
    );
    let volumes = tokio::spawn(
        watch_volume_kind::<PersistentVolume>(
            shared.clone(),
            "PvAddOrUpdate",
            |v, pv| {
                v.volumes.insert(pv.metadata.name.clone().unwrap_or_default(), pv);
            },
            |v, pv| {
                v.volumes.remove(pv.metadata.name.as_deref().unwrap_or_default());
            },
            |v| v.volumes.clear(),
        )
        .instrument(tracing::info_span!("pv-watch")),
    );
    let classes = tokio::spawn(
        watch_volume_kind::<StorageClass>(
            shared.clone(),
            "StorageClassAdd",
            |v, c| {
                v.classes.insert(c.metadata.name.clone().unwrap_or_default(), c);
            },
            |v, c| {
                v.classes.remove(c.metadata.name.as_deref().unwrap_or_default());
            },
            |v| v.classes.clear(),
        )
        .instrument(tracing::info_span!("storageclass-watch")),
    );
    let looping = tokio::spawn(schedule_loop(shared.clone()));
    tracing::info!("scheduler started");
    stop.cancelled().await;
    shared.queue.close();
    nodes.abort();
    pods.abort();
    namespaces.abort();
    budgets.abort();
    claims.abort();
    volumes.abort();
    classes.abort();
    let _ = looping.await;
    tracing::info!("scheduler stopped");
}

async fn watch_nodes(shared: Arc<Shared>) {
    let api: kube::Api<Node> = kube::Api::all(shared.client.clone());
    let mut stream = watcher(api, watch_config()).default_backoff().boxed();
    let mut relisted: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(n)) | Ok(watcher::Event::InitApply(n)) => {
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(n.metadata.name.clone().unwrap_or_default());
                }
                let name = n.metadata.name.clone().unwrap_or_default();
                let changed = shared.cache().set_node(n);
                if changed {
                    tracing::debug!(node = %name, "node added or changed");
                    shared.queue.move_all_to_active_or_backoff("NodeAddOrUpdate");
                }
            }
            Ok(watcher::Event::Delete(n)) => shared.cache().remove_node(n.metadata.name.as_deref().unwrap_or_default()),
            Ok(watcher::Event::Init) => relisted = Some(HashSet::new()),
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    let mut cache = shared.cache();
                    for name in cache.node_names() {
                        if !seen.contains(&name) {
                            cache.remove_node(&name);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching nodes"),
        }
    }
}

/// PodDisruptionBudgets, for preemption.
async fn watch_budgets(shared: Arc<Shared>) {
    let api: kube::Api<PodDisruptionBudget> = kube::Api::all(shared.client.clone());
    let mut stream = watcher(api, watch_config()).default_backoff().boxed();
    let key = |p: &PodDisruptionBudget| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), p.metadata.name.as_deref().unwrap_or_default());
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                let selector = p.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| berth_apiserver::selector::LabelSelector::from_api(s).ok());
                let budget = selector.map(|selector| cache::Budget {
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    selector,
                    allowed: p.status.as_ref().map(|s| s.disruptions_allowed).unwrap_or(0),
                });
                shared.cache().set_budget(key(&p), budget);
            }
            Ok(watcher::Event::Delete(p)) => shared.cache().set_budget(key(&p), None),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching pod disruption budgets"),
        }
    }
}

/// Namespace labels, for pod affinity's namespaceSelector.
async fn watch_namespaces(shared: Arc<Shared>) {
    let api: kube::Api<Namespace> = kube::Api::all(shared.client.clone());
    let mut stream = watcher(api, watch_config()).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(ns)) | Ok(watcher::Event::InitApply(ns)) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                if shared.cache().set_namespace(&name, ns.metadata.labels.unwrap_or_default()) {
                    shared.queue.move_all_to_active_or_backoff("NamespaceLabelChange");
                }
            }
            Ok(watcher::Event::Delete(ns)) => shared.cache().remove_namespace(ns.metadata.name.as_deref().unwrap_or_default()),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching namespaces"),
        }
    }
}

fn pod_key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

type PutVolume<K> = fn(&mut Volumes, Arc<K>);
type DropVolume<K> = fn(&mut Volumes, &K);

/// Claims, volumes or storage classes into the cache's [`Volumes`]: every change may make a
/// waiting pod schedulable (`event`) and wakes the pods waiting in PreBind.
async fn watch_volume_kind<K>(shared: Arc<Shared>, event: &'static str, put: PutVolume<K>, drop_one: DropVolume<K>, clear: fn(&mut Volumes))
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let api: kube::Api<K> = kube::Api::all(shared.client.clone());
    let mut stream = watcher(api, watch_config()).default_backoff().boxed();
    let mut relisted: Option<Vec<K>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => {
                relisted = Some(vec![]);
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(list) = relisted.as_mut() {
                    list.push(o);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let list = relisted.take().unwrap_or_default();
                shared.cache().update_volumes(|v| {
                    clear(v);
                    for o in list {
                        put(v, Arc::new(o));
                    }
                });
            }
            Ok(watcher::Event::Apply(o)) => shared.cache().update_volumes(|v| put(v, Arc::new(o))),
            Ok(watcher::Event::Delete(o)) => shared.cache().update_volumes(|v| drop_one(v, &o)),
            Err(e) => {
                tracing::warn!(error = %e, "watching");
                continue;
            }
        }
        shared.queue.move_all_to_active_or_backoff(event);
        shared.volumes_changed.notify_waiters();
    }
}

fn pod_seen(shared: &Shared, pod: Pod) {
    let key = pod_key(&pod);
    if let Some(node) = assigned_node(&pod) {
        shared.queue.remove(&key);
        if terminal(&pod) {
            if shared.cache().remove_pod(&key) {
                shared.queue.move_all_to_active_or_backoff("AssignedPodDelete");
            }
        } else {
            let node = node.to_string();
            if shared.cache().add_pod(&node, pod) {
                shared.queue.move_all_to_active_or_backoff("AssignedPodAddOrUpdate");
            }
        }
        return;
    }
    if shared.cache().has_pod(&key) {
        // Assumed by this scheduler; the binding has not reached the watch yet.
        return;
    }
    if pod.metadata.deletion_timestamp.is_some() || terminal(&pod) || shared.profile_for(&pod).is_none() {
        shared.queue.remove(&key);
        return;
    }
    shared.queue.add_or_update(Arc::new(slim::pending(pod)));
}

fn pod_gone(shared: &Shared, key: &PodKey) {
    shared.queue.remove(key);
    if shared.cache().remove_pod(key) {
        shared.queue.move_all_to_active_or_backoff("AssignedPodDelete");
    }
}

async fn watch_pods(shared: Arc<Shared>) {
    let api: kube::Api<Pod> = kube::Api::all(shared.client.clone());
    let mut stream = watcher(api, watch_config()).default_backoff().boxed();
    let mut relisted: Option<HashSet<PodKey>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(pod_key(&p));
                }
                pod_seen(&shared, p);
            }
            Ok(watcher::Event::Delete(p)) => pod_gone(&shared, &pod_key(&p)),
            Ok(watcher::Event::Init) => relisted = Some(HashSet::new()),
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    let gone: Vec<PodKey> = shared.cache().pod_keys().into_iter().filter(|k| !seen.contains(k)).collect();
                    for k in gone {
                        pod_gone(&shared, &k);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching pods"),
        }
    }
}

/// What one scheduling attempt decided.
enum Decision {
    Place(String),
    Preempt(preemption::Candidate, String),
    Unschedulable(String),
}

/// Filters, scores and, when nothing fits, preemption: CPU work on a snapshot, no I/O.
fn decide(profile: &Profile, pod: &Pod, snapshot: &cache::Snapshot, start: usize) -> Decision {
    if snapshot.nodes.is_empty() {
        return Decision::Unschedulable("no nodes available to schedule pods".into());
    }
    let (feasible, diagnosis) = profile.find_feasible(pod, snapshot, start);
    if let Some(node) = profile.select_host(pod, &feasible, snapshot) {
        return Decision::Place(node.name().to_string());
    }
    let mut fit = FitError { num_all_nodes: snapshot.nodes.len(), diagnosis, post_filter_msg: None };
    match preemption::preempt(profile, pod, snapshot, &fit.diagnosis) {
        Ok(c) => Decision::Preempt(c, fit.to_string()),
        Err(msg) => {
            fit.post_filter_msg = Some(msg);
            Decision::Unschedulable(fit.to_string())
        }
    }
}

async fn schedule_loop(shared: Arc<Shared>) {
    let mut start = 0usize;
    while let Some(q) = shared.queue.pop().await {
        let key = pod_key(&q.pod);
        let span = tracing::debug_span!("schedule", pod = %format!("{}/{}", key.0, key.1), attempt = q.attempts);
        start = schedule_one(&shared, q, start).instrument(span).await;
    }
}

async fn schedule_one(shared: &Arc<Shared>, q: QueuedPod, start: usize) -> usize {
    let pod = q.pod.clone();
    let key = pod_key(&pod);
    let Some(profile) = shared.profile_for(&pod) else {
        shared.queue.remove(&key);
        return start;
    };
    let snapshot = shared.cache().snapshot();
    let n = snapshot.nodes.len().max(1);
    let p2 = pod.clone();
    // the snapshot ends with the cycle, before the cache changes (no copy on write)
    let decision = match tokio::task::spawn_blocking(move || decide(&profile, &p2, &snapshot, start % n)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "scheduling attempt panicked");
            shared.queue.requeue_failed(&q, false);
            return start;
        }
    };
    let next = start + 1;
    match decision {
        Decision::Place(node) => {
            let mut assumed = (*pod).clone();
            if let Some(s) = assumed.spec.as_mut() {
                s.node_name = Some(node.clone());
            }
            shared.cache().add_pod(&node, assumed);
            shared.queue.done(&key);
            shared.queue.move_all_to_active_or_backoff("AssignedPodAdd");
            let shared = shared.clone();
            let volumes = profile_binds_volumes(&shared, &pod);
            tokio::spawn(async move { bind_and_report(&shared, &pod, &node, volumes).await }.instrument(tracing::Span::current()));
        }
        Decision::Preempt(candidate, message) => {
            tracing::info!(node = %candidate.node, victims = candidate.victims.len(), "preempting");
            report_failure(shared, &pod, "Unschedulable", &message, Some(&candidate.node)).await;
            for v in &candidate.victims {
                evict(shared, v, &pod, &candidate.node).await;
            }
            shared.queue.requeue_failed(&q, true);
        }
        Decision::Unschedulable(message) => {
            tracing::debug!(%message, "unschedulable");
            let clear = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_ref()).map(|_| "");
            report_failure(shared, &pod, "Unschedulable", &message, clear).await;
            shared.queue.requeue_failed(&q, true);
        }
    }
    next
}

async fn report_failure(shared: &Shared, pod: &Pod, reason: &str, message: &str, nominated: Option<&str>) {
    if let Err(e) = events::record(&shared.client, pod, shared.reporter(pod), "Warning", "FailedScheduling", "Scheduling", message).await {
        tracing::warn!(error = %e, "recording FailedScheduling");
    }
    if let Err(e) = events::set_unschedulable(&shared.client, pod, reason, message, nominated).await {
        tracing::warn!(error = %e, "updating the pod's condition");
    }
}

async fn evict(shared: &Shared, victim: &Pod, preemptor: &Pod, node: &str) {
    let (ns, name) = pod_key(victim);
    let msg = format!("Preempted by pod {} on node {node}", preemptor.metadata.uid.as_deref().unwrap_or_default());
    if let Err(e) = events::record(&shared.client, victim, shared.reporter(preemptor), "Normal", "Preempted", "Preempting", &msg).await {
        tracing::warn!(error = %e, "recording Preempted");
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(shared.client.clone(), &ns);
    if let Err(e) = pods.delete(&name, &DeleteParams::default()).await {
        tracing::warn!(error = %e, victim = %name, "deleting a preemption victim");
    }
}

/// Whether the pod's profile runs VolumeBinding (and so its PreBind) and the pod uses claims.
fn profile_binds_volumes(shared: &Shared, pod: &Pod) -> bool {
    let runs = shared.profile_for(pod).is_some_and(|p| p.filters.iter().any(|f| f.name() == plugins::volume_binding::NAME));
    runs && !plugins::volume_binding::claim_names(pod).is_empty()
}

/// The pod's delayed claims bound to volumes on `node` (VolumeBinding's PreBind); on failure the
/// pod leaves the node and goes back to the queue.
async fn prebind_volumes(shared: &Arc<Shared>, pod: &Arc<Pod>, node: &str) -> bool {
    let current = || shared.cache().volumes();
    match volumes::prebind(&shared.client, pod, node, current, &shared.volumes_changed, volumes::BIND_TIMEOUT).await {
        Ok(()) => true,
        Err(e) => {
            let message = format!("running PreBind plugin \"{}\": {e}", plugins::volume_binding::NAME);
            tracing::warn!(%message, "volume binding failed");
            report_failure(shared, pod, "SchedulerError", &message, None).await;
            shared.cache().remove_pod(&pod_key(pod));
            shared.queue.add_or_update(pod.clone());
            shared.queue.move_all_to_active_or_backoff("AssignedPodDelete");
            false
        }
    }
}

async fn bind_and_report(shared: &Arc<Shared>, pod: &Arc<Pod>, node: &str, volumes: bool) {
    let key = pod_key(pod);
    if volumes && !prebind_volumes(shared, pod, node).await {
        return;
    }
    // never closed: the semaphore lives as long as the scheduler
    let Ok(_permit) = shared.binds.acquire().await else { return };
    match binder::bind(&shared.client, pod, node).await {
        Ok(()) => {
            let msg = format!("Successfully assigned {}/{} to {node}", key.0, key.1);
            tracing::debug!(%node, "bound");
            if let Err(e) = events::record(&shared.client, pod, shared.reporter(pod), "Normal", "Scheduled", "Binding", &msg).await {
                tracing::warn!(error = %e, "recording Scheduled");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "binding failed");
            shared.cache().remove_pod(&key);
            let gone = matches!(&e.source, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            if !gone {
                shared.queue.add_or_update(pod.clone());
            }
            shared.queue.move_all_to_active_or_backoff("AssignedPodDelete");
        }
    }
}
