//! The StatefulSet controller, as kube-controller-manager's: pods `<set>-<ordinal>` with stable
//! names, hostnames and claims ([`identity`]). OrderedReady creates ordinals in order, each
//! Running and Ready (and available for minReadySeconds) before the next, and removes from the
//! highest down, one at a time, once every other pod is healthy; Parallel creates and removes
//! at once. Failed pods are deleted and made again. RollingUpdate replaces pods from the
//! highest ordinal down to the partition, one at a time (or maxUnavailable), each at the update
//! revision, waiting for each to be healthy; OnDelete waits for the user. Templates are kept as
//! ControllerRevisions (`<set>-<hash>`, the pods' `controller-revision-hash`), so `kubectl
//! rollout status|history|undo|restart statefulset` work; the status carries currentRevision,
//! updateRevision and the counts kubectl shows.

pub mod identity;
pub mod status;

use std::sync::Arc;

use berth_apiserver::selector::LabelSelector;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::controller::pods::error_message;
use crate::controller::{self, history, owner};
use crate::informer::{key_of, Informer, ObjectKey};
use crate::recorder::{Recorder, NORMAL, WARNING};
use crate::workqueue::WorkQueue;
use identity::{ordinal_of, revision_of, set_name};
use status::{running_and_available, running_and_ready};

const WORKERS: usize = 2;

pub struct Controller {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: Recorder,
    /// Pods this controller asked to delete (uid → when), seen as terminating until the
    /// informer shows it, so a lagging watch never makes it delete one twice.
    deleting: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a delete this controller asked for counts without the informer showing it.
const DELETE_EXPECTATION: std::time::Duration = std::time::Duration::from_secs(60);

/// What one pass did: went on to the end, or stopped to wait for the cluster.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Wait,
}

/// The revisions a pass works with: the template and name of the current and the update one.
struct Revisions {
    current: String,
    current_template: PodTemplateSpec,
    update: String,
    update_template: PodTemplateSpec,
}

impl Controller {
    pub fn new(
        client: kube::Client,
        sets: Arc<Informer<StatefulSet>>,
        pods: Arc<Informer<Pod>>,
        claims: Arc<Informer<PersistentVolumeClaim>>,
        revisions: Arc<Informer<ControllerRevision>>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "statefulset-controller");
        let c = Arc::new(Controller { client, sets, pods, claims, revisions, queue: WorkQueue::new(), recorder, deleting: Default::default() });
        let q = c.queue.clone();
        c.sets.on_change(move |change| q.add(key_of(change.object().as_ref())));
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let pod = change.object();
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            match owner::controller_of(&pod.metadata) {
                Some(r) if r.kind == "StatefulSet" => c.queue.add((ns, r.name.clone())),
                Some(_) => {}
                None => {
                    // an orphan: the sets that could adopt it
                    for set in c.sets.list_namespace(&ns) {
                        if pod.metadata.name.as_deref().and_then(|n| ordinal_of(set_name(&set), n)).is_some() {
                            c.queue.add(key_of(set.as_ref()));
                        }
                    }
                }
            }
        });
        c
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.sets.synced().await;
        self.pods.synced().await;
        self.claims.synced().await;
        self.revisions.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(WORKERS, stop, move |k| {
                let this = this.clone();
                async move { this.sync(&k).await }
            })
            .await;
    }

    async fn sync(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(set) = self.sets.get(&k.0, &k.1) else { return Ok(()) };
        let Some(selector) = set.spec.as_ref().and_then(|s| LabelSelector::from_api(&s.selector).ok()) else { return Ok(()) };
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let deleting = set.metadata.deletion_timestamp.is_some();
        let name = set_name(&set).to_string();
        // only pods named after the set are its members
        let candidates: Vec<Arc<Pod>> =
            self.pods.list_namespace(&k.0).into_iter().filter(|p| p.metadata.name.as_deref().and_then(|n| ordinal_of(&name, n)).is_some()).collect();
        let claim = owner::claim(&uid, deleting, &selector, candidates);
        let owned = self.with_deletes_asked(owner::settle(&self.client, set.as_ref(), claim).await?);
        if deleting {
            return Ok(());
        }
        let revisions: Vec<Arc<ControllerRevision>> =
            self.revisions.list_namespace(&k.0).into_iter().filter(|r| owner::controlled_by(&r.metadata, "StatefulSet", &uid)).collect();
        let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let history_owner = history::Owner {
            name: &name,
            namespace: &k.0,
            reference: owner::controller_ref(set.as_ref()),
            template: &template,
            collision_count: set.status.as_ref().and_then(|s| s.collision_count),
            history_limit: set.spec.as_ref().and_then(|s| s.revision_history_limit),
        };
        let (update, old) = history::sync(&self.client, &history_owner, revisions).await?;
        let update_name = update.metadata.name.clone().unwrap_or_default();
        let wanted_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = old.iter().find(|r| r.metadata.name == wanted_current).map(|r| (**r).clone()).unwrap_or_else(|| update.clone());
        let revs = Revisions {
            current: current.metadata.name.clone().unwrap_or_default(),
            current_template: current.data.as_ref().and_then(|d| identity::template_of(&d.0)).unwrap_or_else(|| template.clone()),
            update: update_name.clone(),
            update_template: template.clone(),
        };
        let now = Timestamp::now();
        self.reconcile(&set, &owned, &revs, now).await?;
        let next = status::compute(&set, &owned, &revs.current, &revs.update, now);
        self.write_status(&set, next).await?;
        let in_use = |r: &ControllerRevision| {
            let n = r.metadata.name.as_deref();
            n == Some(revs.current.as_str()) || n == Some(revs.update.as_str()) || owned.iter().any(|p| revision_of(p) == n)
        };
        history::cleanup(&self.client, &history_owner, &old, in_use).await?;
        let min_ready = set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        if min_ready > 0 {
            if let Some(at) = owned.iter().filter_map(|p| controller::available_at(p, min_ready, now)).min() {
                self.queue.add_after(k.clone(), at.duration_since(now).unsigned_abs() + std::time::Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The pods, those this controller asked to delete marked as being deleted until the
    /// informer shows them so (or they are gone).
    fn with_deletes_asked(&self, pods: Vec<Arc<Pod>>) -> Vec<Arc<Pod>> {
        let mut asked = self.deleting.lock().unwrap_or_else(|e| e.into_inner());
        asked.retain(|uid, at| {
            at.elapsed() < DELETE_EXPECTATION && pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none())
        });
        pods.into_iter()
            .map(|p| match p.metadata.uid.as_deref() {
                Some(uid) if asked.contains_key(uid) => {
                    let mut marked = (*p).clone();
                    marked.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
                    Arc::new(marked)
                }
                _ => p,
            })
            .collect()
    }

    /// One pass of upstream's update: replicas in order, then the condemned from the highest
    /// ordinal, then the rolling update; OrderedReady stops at the first thing to wait for.
    async fn reconcile(&self, set: &StatefulSet, owned: &[Arc<Pod>], revs: &Revisions, now: Timestamp) -> Result<(), String> {
        let spec = set.spec.clone().unwrap_or_default();
        let ordered = spec.pod_management_policy.as_deref().unwrap_or("OrderedReady") == "OrderedReady";
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let (start, count) = (identity::start(set), identity::replicas(set).max(0));
        let name = set_name(set);
        let mut replicas: Vec<(i32, Option<Arc<Pod>>)> = (start..start + count).map(|o| (o, None)).collect();
        let mut condemned: Vec<(i32, Arc<Pod>)> = vec![];
        for p in owned {
            let Some(o) = p.metadata.name.as_deref().and_then(|n| ordinal_of(name, n)) else { continue };
            if (start..start + count).contains(&o) {
                replicas[(o - start) as usize].1 = Some(p.clone());
            } else {
                condemned.push((o, p.clone()));
            }
        }
        condemned.sort_by_key(|(o, _)| *o);
        let healthy = |p: &Pod| running_and_available(p, min_ready, now) && p.metadata.deletion_timestamp.is_none();
        // claims follow the retention policy before any pod goes
        for (o, p) in &replicas {
            self.retain_claims(set, *o, p.as_deref(), false).await?;
        }
        for (o, p) in &condemned {
            self.retain_claims(set, *o, Some(p), true).await?;
        }
        // the replicas, in order
        for (ordinal, pod) in &replicas {
            let step = match pod {
                None => {
                    let (rev, template) = self.revision_for(&spec, *ordinal, revs);
                    self.create_pod(set, identity::new_pod(set, template, *ordinal, rev), *ordinal).await?;
                    if ordered {
                        Step::Wait
                    } else {
                        Step::Continue
                    }
                }
                Some(p) => self.process_replica(set, p, *ordinal, ordered, min_ready, now).await?,
            };
            if step == Step::Wait {
                return Ok(());
            }
        }
        // the condemned, from the highest ordinal
        let first_unhealthy = replicas.iter().filter_map(|(_, p)| p.as_ref()).chain(condemned.iter().map(|(_, p)| p)).find(|p| !healthy(p)).cloned();
        for (_, pod) in condemned.iter().rev() {
            if pod.metadata.deletion_timestamp.is_some() {
                if ordered {
                    return Ok(());
                }
                continue;
            }
            let is_first_unhealthy = first_unhealthy.as_ref().is_some_and(|f| f.metadata.uid == pod.metadata.uid);
            if ordered && first_unhealthy.is_some() && !is_first_unhealthy {
                return Ok(());
            }
            self.delete_pod(set, pod).await?;
            if ordered {
                return Ok(());
            }
        }
        // the rolling update, from the highest ordinal down to the partition
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
            return Ok(());
        }
        let rolling = strategy.rolling_update.unwrap_or_default();
        let partition = rolling.partition.unwrap_or(0).max(0);
        let max_unavailable = crate::deployment::util::scaled(rolling.max_unavailable.as_ref(), count, false).max(1);
        let mut unavailable = replicas.iter().filter(|(_, p)| !p.as_ref().is_some_and(|p| healthy(p))).count() as i32;
        for (ordinal, pod) in replicas.iter().rev() {
            if *ordinal - start < partition {
                break;
            }
            let Some(pod) = pod else { return Ok(()) };
            if revision_of(pod) != Some(revs.update.as_str()) && pod.metadata.deletion_timestamp.is_none() {
                let was_healthy = healthy(pod);
                if !was_healthy || unavailable < max_unavailable {
                    self.delete_pod(set, pod).await?;
                    if was_healthy {
                        unavailable += 1;
                    }
                }
                if unavailable >= max_unavailable {
                    return Ok(());
                }
                continue;
            }
            if !healthy(pod) && unavailable >= max_unavailable {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The revision a new pod of `ordinal` gets: the current one below the partition of a
    /// RollingUpdate, else the update one.
    fn revision_for<'a>(&self, spec: &k8s_openapi::api::apps::v1::StatefulSetSpec, ordinal: i32, revs: &'a Revisions) -> (&'a str, &'a PodTemplateSpec) {
        let strategy = spec.update_strategy.as_ref();
        let rolling = strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
        let partition = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        if rolling && ordinal < start + partition {
            (&revs.current, &revs.current_template)
        } else {
            (&revs.update, &revs.update_template)
        }
    }

    async fn process_replica(&self, set: &StatefulSet, pod: &Arc<Pod>, ordinal: i32, ordered: bool, min_ready: i32, now: Timestamp) -> Result<Step, String> {
        if matches!(controller::phase(pod), "Failed" | "Succeeded") {
            // made again once it is gone
            if pod.metadata.deletion_timestamp.is_none() {
                self.delete_pod(set, pod).await?;
            }
            return Ok(Step::Wait);
        }
        if controller::phase(pod) == "Pending" {
            self.create_claims(set, ordinal, pod.metadata.name.as_deref().unwrap_or("")).await?;
        }
        if pod.metadata.deletion_timestamp.is_some() || !running_and_ready(pod) || !running_and_available(pod, min_ready, now) {
            return Ok(if ordered { Step::Wait } else { Step::Continue });
        }
        if let Some(labels) = identity::fixed_labels(set, pod, ordinal) {
            let mut next = (**pod).clone();
            next.metadata.labels = Some(labels);
            let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            match api.replace(&pod_name, &PostParams::default(), &next).await {
                Ok(_) => self.recorder.event(set, NORMAL, "SuccessfulUpdate", format!("update Pod {pod_name} in StatefulSet {} successful", set_name(set))),
                Err(e) => {
                    let msg = error_message(&e);
                    self.recorder.event(set, WARNING, "FailedUpdate", format!("update Pod {pod_name} in StatefulSet {} failed error: {msg}", set_name(set)));
                    return Err(msg);
                }
            }
        }
        Ok(Step::Continue)
    }

    async fn create_claims(&self, set: &StatefulSet, ordinal: i32, pod_name: &str) -> Result<(), String> {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let api: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(self.client.clone(), ns);
        for mut claim in identity::claims(set, ordinal) {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            if let Some(existing) = self.claims.get(ns, &claim_name) {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(format!("pvc {claim_name} is being deleted"));
                }
                continue;
            }
            let owners = identity::claim_owners(set, &claim, None, false);
            claim.metadata.owner_references = (!owners.is_empty()).then_some(owners);
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => self.recorder.event(
                    set,
                    NORMAL,
                    "SuccessfulCreate",
                    format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {} success", set_name(set)),
                ),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    let msg = error_message(&e);
                    self.recorder.event(
                        set,
                        WARNING,
                        "FailedCreate",
                        format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {msg}", set_name(set)),
                    );
                    return Err(msg);
                }
            }
        }
        Ok(())
    }

    async fn create_pod(&self, set: &StatefulSet, pod: Pod, ordinal: i32) -> Result<(), String> {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        self.create_claims(set, ordinal, &pod_name).await?;
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or(""));
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.recorder.event(set, NORMAL, "SuccessfulCreate", format!("create Pod {pod_name} in StatefulSet {} successful", set_name(set)));
                Ok(())
            }
            // a watch that lags behind our own create
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => {
                let msg = error_message(&e);
                self.recorder.event(set, WARNING, "FailedCreate", format!("create Pod {pod_name} in StatefulSet {} failed error: {msg}", set_name(set)));
                Err(msg)
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), String> {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let params = DeleteParams { preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }), ..Default::default() };
        match api.delete(&pod_name, &params).await {
            Ok(_) => {
                self.deleting.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, std::time::Instant::now());
                self.recorder.event(set, NORMAL, "SuccessfulDelete", format!("delete Pod {pod_name} in StatefulSet {} successful", set_name(set)));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => {
                let msg = error_message(&e);
                self.recorder.event(set, WARNING, "FailedDelete", format!("delete Pod {pod_name} in StatefulSet {} failed error: {msg}", set_name(set)));
                Err(msg)
            }
        }
    }

    /// Gives the claims of `ordinal` the owner references the retention policy asks for.
    async fn retain_claims(&self, set: &StatefulSet, ordinal: i32, pod: Option<&Pod>, condemned: bool) -> Result<(), String> {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let api: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(self.client.clone(), ns);
        for wanted in identity::claims(set, ordinal) {
            let claim_name = wanted.metadata.name.clone().unwrap_or_default();
            let Some(existing) = self.claims.get(ns, &claim_name) else { continue };
            if existing.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let owners = identity::claim_owners(set, &existing, pod, condemned);
            if existing.metadata.owner_references.clone().unwrap_or_default() == owners {
                continue;
            }
            let mut next = (*existing).clone();
            next.metadata.owner_references = (!owners.is_empty()).then_some(owners);
            match api.replace(&claim_name, &PostParams::default(), &next).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(format!("updating the owners of claim {claim_name}: {}", error_message(&e))),
            }
        }
        Ok(())
    }

    async fn write_status(&self, set: &StatefulSet, status: k8s_openapi::api::apps::v1::StatefulSetStatus) -> Result<(), String> {
        if set.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut next = set.clone();
        next.status = Some(status);
        let api: kube::Api<StatefulSet> = kube::Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or(""));
        match api.replace_status(set_name(set), &PostParams::default(), &next).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("updating the statefulset status: {e}")),
        }
    }
}
