//! The Deployment controller, as kube-controller-manager's: a Deployment owns ReplicaSets, one
//! per pod template it has had (named `<deployment>-<pod-template-hash>`), and moves replicas
//! from the old ones to the new one by its strategy: RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate (all old pods gone before new ones start). A change of replicas
//! mid-rollout is spread over the ReplicaSets in proportion; a paused Deployment only scales.
//! ReplicaSets carry the revision (`deployment.kubernetes.io/revision`), the old ones beyond
//! revisionHistoryLimit are deleted once they have no pods, and the status carries the
//! Progressing condition (with progressDeadlineSeconds) and the Available one, so `kubectl
//! rollout status|history|undo|pause|resume|restart` work as against upstream.
//!
//! Files: `util` (arithmetic, annotations, conditions), `rollout` (the strategies, scaling and
//! history cleanup), `status` (the status and its conditions). This file has the controller:
//! handlers, claiming, and the choice of what a sync does.

mod rollout;
mod status;
pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_apiserver::selector::LabelSelector;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use crate::controller::owner;
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::recorder::{Recorder, WARNING};
use crate::workqueue::WorkQueue;

/// Workers syncing Deployments at once (--concurrent-deployment-syncs).
const WORKERS: usize = 5;

pub struct Controller {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: Recorder,
}

fn selector_of(d: &Deployment) -> Option<LabelSelector> {
    let sel = &d.spec.as_ref()?.selector;
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return None;
    }
    LabelSelector::from_api(sel).ok()
}

impl Controller {
    pub fn new(client: kube::Client, deployments: Arc<Informer<Deployment>>, replicasets: Arc<Informer<ReplicaSet>>, pods: Arc<Informer<Pod>>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "deployment-controller");
        let c = Arc::new(Controller { client, deployments, replicasets, pods, queue: WorkQueue::new(), recorder });
        let q = c.queue.clone();
        c.deployments.on_change(move |change| {
            let d = change.object();
            q.add(key_of(d.as_ref()));
        });
        let weak = Arc::downgrade(&c);
        c.replicasets.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            match change {
                Change::Added(rs) | Change::Deleted(rs) => c.enqueue_owner_of(rs),
                Change::Updated { old, new } => {
                    if old.metadata.owner_references != new.metadata.owner_references || old.metadata.labels != new.metadata.labels {
                        c.enqueue_owner_of(old);
                    }
                    c.enqueue_owner_of(new);
                }
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            // a Recreate rollout waits for the old pods to be gone
            if let (Some(c), Change::Deleted(pod)) = (weak.upgrade(), change) {
                c.enqueue_for_pod(pod);
            }
        });
        c
    }

    /// The Deployment controlling `rs`, or for an orphan those of its namespace selecting it.
    fn enqueue_owner_of(&self, rs: &ReplicaSet) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        match owner::controller_of(&rs.metadata) {
            Some(r) => {
                let ours = r.kind == "Deployment" && self.deployments.get(ns, &r.name).is_some_and(|d| d.metadata.uid.as_deref() == Some(r.uid.as_str()));
                if ours {
                    self.queue.add((ns.to_string(), r.name.clone()));
                }
            }
            None => {
                let empty = BTreeMap::new();
                let labels = rs.metadata.labels.as_ref().unwrap_or(&empty);
                for d in self.deployments.list_namespace(ns) {
                    if selector_of(&d).is_some_and(|s| s.matches(labels)) {
                        self.queue.add(key_of(d.as_ref()));
                    }
                }
            }
        }
    }

    fn enqueue_for_pod(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else { return };
        if let Some(rs) = self.replicasets.get(ns, &r.name) {
            if let Some(d) = owner::controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
                if self.deployments.get(ns, &d.name).is_some_and(|dep| !util::is_rolling(&dep)) {
                    self.queue.add((ns.to_string(), d.name.clone()));
                }
            }
        }
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.deployments.synced().await;
        self.replicasets.synced().await;
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
        let Some(d) = self.deployments.get(&k.0, &k.1) else { return Ok(()) };
        let mut d = (*d).clone();
        let Some(selector) = selector_of(&d) else {
            self.recorder.event(&d, WARNING, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.".into());
            return Ok(());
        };
        let rss = self.claim(&d, &selector).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = util::split(&d, rss);
            return self.sync_status(&d, new_rs.as_ref(), &old).await;
        }
        self.check_paused_conditions(&mut d).await?;
        if util::paused(&d) || self.scaling_event(&d, &rss) {
            return self.sync_scale(&mut d, rss).await;
        }
        if util::is_rolling(&d) {
            self.rolling(&mut d, rss).await
        } else {
            self.recreate(&mut d, rss).await
        }
    }

    /// The ReplicaSets the Deployment controls (adopting and releasing as its selector says).
    async fn claim(&self, d: &Deployment, selector: &LabelSelector) -> Result<Vec<Arc<ReplicaSet>>, String> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let c = owner::claim(&uid, d.metadata.deletion_timestamp.is_some(), selector, self.replicasets.list_namespace(&ns));
        owner::settle(&self.client, d, c).await
    }

    /// A change of replicas not yet spread over the ReplicaSets with pods.
    fn scaling_event(&self, d: &Deployment, rss: &[Arc<ReplicaSet>]) -> bool {
        let (new_rs, old) = util::split(d, rss.to_vec());
        old.iter()
            .chain(new_rs.iter())
            .filter(|rs| util::rs_replicas(rs) > 0)
            .any(|rs| util::desired_annotation(rs).is_some_and(|want| want != util::replicas(d)))
    }

    /// Writes the Deployment's status (conflicts come back as errors: the sync is retried).
    async fn write_status(&self, d: &mut Deployment, status: k8s_openapi::api::apps::v1::DeploymentStatus) -> Result<(), String> {
        let mut next = d.clone();
        next.status = Some(status);
        let api: kube::Api<Deployment> = kube::Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""));
        match api.replace_status(d.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &next).await {
            Ok(written) => {
                *d = written;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("updating the deployment status: {e}")),
        }
    }
}
