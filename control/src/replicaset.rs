//! The ReplicaSet controller (and the ReplicationController one: the same controller over the
//! older kind), as kube-controller-manager's: each owner keeps `replicas` active pods matching
//! its selector. It adopts orphans its selector matches and releases pods it no longer matches;
//! creates missing pods from its template in slow-start batches (at most 500 per sync) and
//! deletes surplus ones in the order of [`ranking`](crate::controller::ranking); waits on
//! [`expectations`](crate::controller::expectations) before counting again; and writes its
//! status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
//! minReadySeconds), observedGeneration and a ReplicaFailure condition while creates or deletes
//! fail.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use berth_apiserver::selector::LabelSelector;
use futures_util::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use kube::api::PostParams;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::controller::expectations::Expectations;
use crate::controller::{self, owner, pods, ranking};
use crate::informer::{Change, Informer, ObjectKey};
use crate::recorder::Recorder;
use crate::workqueue::WorkQueue;

/// Most pods created or deleted in one sync (upstream's burstReplicas).
const BURST: usize = 500;
/// Workers syncing owners at once (--concurrent-replicaset-syncs).
const WORKERS: usize = 5;

/// What the controller needs of its kind.
pub trait Replicated:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
    fn selector(&self) -> Result<LabelSelector, String>;
    fn desired(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
}

impl Replicated for ReplicaSet {
    fn selector(&self) -> Result<LabelSelector, String> {
        let sel = self.spec.as_ref().map(|s| &s.selector).ok_or("no spec")?;
        LabelSelector::from_api(sel)
    }
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
}

impl Replicated for ReplicationController {
    fn selector(&self) -> Result<LabelSelector, String> {
        let labels = self.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        if labels.is_empty() {
            return Err("empty selector".into());
        }
        LabelSelector::from_api(&ApiSelector { match_labels: Some(labels), match_expressions: None })
    }
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
}

pub struct Controller<K> {
    client: kube::Client,
    owners: Arc<Informer<K>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    expectations: Expectations,
    recorder: Recorder,
}

fn key(ns: &str, name: &str) -> ObjectKey {
    (ns.to_string(), name.to_string())
}

impl<K: Replicated> Controller<K> {
    /// The controller, its handlers registered on the shared informers. `client` writes as
    /// the controller's service account.
    pub fn new(client: kube::Client, owners: Arc<Informer<K>>, pods: Arc<Informer<Pod>>, component: &str) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), component);
        let c = Arc::new(Controller { client, owners, pods, queue: WorkQueue::new(), expectations: Expectations::default(), recorder });
        let q = c.queue.clone();
        c.owners.on_change(move |change| {
            let obj = change.object();
            q.add(crate::informer::key_of(obj.as_ref()));
        });
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            if let Some(c) = weak.upgrade() {
                c.pod_changed(change);
            }
        });
        c
    }

    /// The owner a pod event concerns: its controller (if of this kind and known), or for an
    /// orphan every owner of its namespace whose selector matches it.
    fn enqueue_for(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        match owner::controller_of(&pod.metadata) {
            Some(r) => {
                let ours = r.kind == K::kind(&()) && self.owners.get(ns, &r.name).is_some_and(|o| o.meta().uid.as_deref() == Some(r.uid.as_str()));
                if ours {
                    self.queue.add(key(ns, &r.name));
                }
            }
            None if pod.metadata.deletion_timestamp.is_none() => {
                let empty = BTreeMap::new();
                let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
                for o in self.owners.list_namespace(ns) {
                    if o.selector().is_ok_and(|s| s.matches(labels)) {
                        self.queue.add(key(ns, o.meta().name.as_deref().unwrap_or("")));
                    }
                }
            }
            None => {}
        }
    }

    fn pod_changed(&self, change: &Change<'_, Pod>) {
        match change {
            Change::Added(p) | Change::Deleted(p) => self.enqueue_for(p),
            Change::Updated { old, new } => {
                let moved = old.metadata.labels != new.metadata.labels || old.metadata.owner_references != new.metadata.owner_references;
                if moved {
                    self.enqueue_for(old);
                }
                self.enqueue_for(new);
            }
        }
    }

    /// Runs the workers until `stop` (the informers run elsewhere).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.owners.synced().await;
        self.pods.synced().await;
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
        let Some(rs) = self.owners.get(&k.0, &k.1) else {
            self.expectations.forget(k);
            return Ok(());
        };
        let selector = match rs.selector() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(owner = %format!("{}/{}", k.0, k.1), error = %e, "invalid selector");
                return Ok(());
            }
        };
        let deleting = rs.meta().deletion_timestamp.is_some();
        let uid = rs.meta().uid.clone().unwrap_or_default();
        let active: Vec<Arc<Pod>> = self.pods.list_namespace(&k.0).into_iter().filter(|p| controller::is_active(p)).collect();
        let claim = owner::claim(&uid, deleting, &selector, active);
        let owned = owner::settle(&self.client, rs.as_ref(), claim).await?;
        let satisfied = self.expectations.satisfied(
            k,
            |name| self.pods.get(&k.0, name).is_some(),
            |uid| !self.pods.list_namespace(&k.0).iter().any(|p| p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()),
        );
        let failure = if satisfied && !deleting { self.manage(rs.as_ref(), k, &owned).await } else { None };
        let now = Timestamp::now();
        self.write_status(rs.as_ref(), &owned, failure.as_ref(), now).await?;
        // come back when a ready pod becomes available
        let min_ready = rs.min_ready_seconds();
        if min_ready > 0 {
            if let Some(at) = owned.iter().filter_map(|p| controller::available_at(p, min_ready, now)).min() {
                let wait = at.duration_since(now).unsigned_abs();
                self.queue.add_after(k.clone(), wait + Duration::from_millis(100));
            }
        }
        match failure {
            Some((_, msg)) => Err(msg),
            None => Ok(()),
        }
    }

    /// Creates or deletes pods toward `replicas`; the failure's reason and message, if any.
    async fn manage(&self, rs: &K, k: &ObjectKey, owned: &[Arc<Pod>]) -> Option<(&'static str, String)> {
        let want = rs.desired().max(0) as usize;
        if owned.len() < want {
            let template = rs.template()?;
            let owner_ref = owner::controller_ref(rs);
            let name = rs.meta().name.clone().unwrap_or_default();
            let n = (want - owned.len()).min(BURST);
            let (_, err) = pods::create_batches(
                &self.client,
                &self.recorder,
                rs,
                n,
                || pods::from_template(template, &k.0, &name, owner_ref.clone()),
                |created| self.expectations.created(k, created),
            )
            .await;
            return err.map(|e| ("FailedCreate", e));
        }
        if owned.len() > want {
            let n = (owned.len() - want).min(BURST);
            let doomed: Vec<Arc<Pod>> = ranking::deletion_order(owned.to_vec(), owned).into_iter().take(n).collect();
            for p in &doomed {
                self.expectations.deleted(k, p.metadata.uid.as_deref().unwrap_or(""));
            }
            let results = join_all(doomed.iter().map(|p| pods::delete(&self.client, &self.recorder, rs, p))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Some(("FailedDelete", e));
            }
        }
        None
    }

    async fn write_status(&self, rs: &K, owned: &[Arc<Pod>], failure: Option<&(&'static str, String)>, now: Timestamp) -> Result<(), String> {
        let current = serde_json::to_value(rs).map_err(|e| e.to_string())?.get("status").cloned().unwrap_or(json!({}));
        let template_labels = rs.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
        let min_ready = rs.min_ready_seconds();
        let count = |f: &dyn Fn(&Pod) -> bool| owned.iter().filter(|p| f(p)).count() as i64;
        let fully_labeled = count(&|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        let ready = count(&|p| controller::is_ready(p));
        let available = count(&|p| controller::is_available(p, min_ready, now));
        let mut conditions: Vec<Value> = current.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        match failure {
            Some((reason, message)) => {
                if !conditions.iter().any(|c| c["type"] == "ReplicaFailure") {
                    conditions
                        .push(json!({"type": "ReplicaFailure", "status": "True", "reason": reason, "message": message, "lastTransitionTime": now.to_string()}));
                }
            }
            None => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        }
        let mut status = json!({
            "replicas": owned.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs.meta().generation.unwrap_or(0),
        });
        let field = |s: &Value, f: &str| s.get(f).and_then(Value::as_i64).unwrap_or(0);
        let same = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
            .iter()
            .all(|f| field(&current, f) == field(&status, f))
            && current.get("conditions").and_then(Value::as_array).map(Vec::len).unwrap_or(0) == conditions.len();
        if same {
            return Ok(());
        }
        status["conditions"] = if conditions.is_empty() { Value::Null } else { Value::Array(conditions) };
        // Go omits these when zero (omitempty); replicas is always written
        for f in ["fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"] {
            if field(&status, f) == 0 {
                status[f] = Value::Null;
            }
        }
        // an update of the status (the controllers' roles may update it, not patch it)
        let mut next = serde_json::to_value(rs).map_err(|e| e.to_string())?;
        if let Some(s) = status.as_object_mut() {
            s.retain(|_, v| !v.is_null());
        }
        next["status"] = status;
        let next: K = serde_json::from_value(next).map_err(|e| e.to_string())?;
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), rs.meta().namespace.as_deref().unwrap_or(""));
        let name = rs.meta().name.as_deref().unwrap_or("");
        let mut attempt = api.replace_status(name, &PostParams::default(), &next).await;
        if matches!(&attempt, Err(kube::Error::Api(s)) if s.code == 409) {
            // the copy was stale (a scale, our last write): once more on a fresh read, as upstream
            if let Ok(Some(fresh)) = api.get_opt(name).await {
                let mut retry = serde_json::to_value(&fresh).map_err(|e| e.to_string())?;
                retry["status"] = serde_json::to_value(&next).map_err(|e| e.to_string())?["status"].take();
                let retry: K = serde_json::from_value(retry).map_err(|e| e.to_string())?;
                attempt = api.replace_status(name, &PostParams::default(), &retry).await;
            }
        }
        match attempt {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("updating the status: {e}")),
        }
    }
}
