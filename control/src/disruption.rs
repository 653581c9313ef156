//! The disruption controller, as kube-controller-manager's: each PodDisruptionBudget's status
//! from the pods it selects (policy/v1: an empty selector selects the whole namespace). The
//! pods expected are the pods themselves for an integer minAvailable, else the scale of their
//! controllers (a ReplicaSet's Deployment, a ReplicationController, a StatefulSet);
//! desiredHealthy is minAvailable (a percentage of the expected, rounded up) or the expected less
//! maxUnavailable; currentHealthy counts the Ready pods not being deleted and not just
//! evicted (`disruptedPods`, forgotten after two minutes or once the pod goes);
//! disruptionsAllowed is what is left, with the DisruptionAllowed condition (SufficientPods /
//! InsufficientPods). pods/eviction in the apiserver spends it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_apiserver::selector::LabelSelector;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, owner};
use crate::deployment::util::scaled;
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::workqueue::WorkQueue;

/// How long an evicted pod stays out of currentHealthy when it is not deleted.
const DISRUPTION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

pub struct Controller {
    client: kube::Client,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    controllers: Arc<Informer<ReplicationController>>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

fn selector(pdb: &PodDisruptionBudget) -> Option<LabelSelector> {
    LabelSelector::from_api(pdb.spec.as_ref()?.selector.as_ref()?).ok()
}

impl Controller {
    pub fn new(
        client: kube::Client,
        budgets: Arc<Informer<PodDisruptionBudget>>,
        pods: Arc<Informer<Pod>>,
        replicasets: Arc<Informer<ReplicaSet>>,
        deployments: Arc<Informer<Deployment>>,
        controllers: Arc<Informer<ReplicationController>>,
    ) -> Arc<Self> {
        let c = Arc::new(Controller { client, budgets, pods, replicasets, deployments, controllers, queue: WorkQueue::new() });
        let q = c.queue.clone();
        c.budgets.on_change(move |change| {
            let b = change.object();
            q.add(key_of(b.as_ref()));
        });
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (old, new) = match change {
                Change::Added(p) | Change::Deleted(p) => (None, p),
                Change::Updated { old, new } => (Some(old), new),
            };
            for pod in old.into_iter().chain([new]) {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                for b in c.budgets.list_namespace(ns) {
                    if selector(&b).is_some_and(|s| s.matches(&labels)) {
                        c.queue.add(key_of(b.as_ref()));
                    }
                }
            }
        });
        // a controller's scale changes the pods expected
        let weak = Arc::downgrade(&c);
        let on_scale = move |ns: &str| {
            if let Some(c) = weak.upgrade() {
                for b in c.budgets.list_namespace(ns) {
                    c.queue.add(key_of(b.as_ref()));
                }
            }
        };
        let (a, b) = (on_scale.clone(), on_scale.clone());
        c.replicasets.on_change(move |change| {
            if let Change::Updated { new, .. } = change {
                a(new.metadata.namespace.as_deref().unwrap_or(""));
            }
        });
        c.deployments.on_change(move |change| {
            if let Change::Updated { new, .. } = change {
                b(new.metadata.namespace.as_deref().unwrap_or(""));
            }
        });
        c.controllers.on_change(move |change| {
            if let Change::Updated { new, .. } = change {
                on_scale(new.metadata.namespace.as_deref().unwrap_or(""));
            }
        });
        c
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.budgets.synced().await;
        self.pods.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(2, stop, move |k| {
                let this = this.clone();
                async move { this.sync(&k).await }
            })
            .await;
    }

    /// The scale of the controller of `pod` (kind and name, for counting each once), following
    /// a ReplicaSet to its Deployment.
    async fn scale_of(&self, ns: &str, pod: &Pod) -> Result<Option<((String, String), i32)>, String> {
        let Some(r) = owner::controller_of(&pod.metadata) else { return Ok(None) };
        let found = match r.kind.as_str() {
            "ReplicaSet" => {
                let Some(rs) = self.replicasets.get(ns, &r.name) else { return Ok(None) };
                match owner::controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
                    Some(d) => self
                        .deployments
                        .get(ns, &d.name)
                        .map(|dep| (("Deployment".to_string(), d.name.clone()), dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
                    None => Some((("ReplicaSet".to_string(), r.name.clone()), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
                }
            }
            "ReplicationController" => self
                .controllers
                .get(ns, &r.name)
                .map(|rc| (("ReplicationController".to_string(), r.name.clone()), rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
            "StatefulSet" => {
                let api: kube::Api<StatefulSet> = kube::Api::namespaced(self.client.clone(), ns);
                let sts = api.get_opt(&r.name).await.map_err(|e| format!("reading statefulset {}: {e}", r.name))?;
                sts.map(|s| (("StatefulSet".to_string(), r.name.clone()), s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            _ => None,
        };
        Ok(found)
    }

    async fn sync(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(pdb) = self.budgets.get(&k.0, &k.1) else { return Ok(()) };
        let now = Timestamp::now();
        let pods: Vec<Arc<Pod>> = match selector(&pdb) {
            Some(sel) => self.pods.list_namespace(&k.0).into_iter().filter(|p| sel.matches(&p.metadata.labels.clone().unwrap_or_default())).collect(),
            None => vec![],
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let from_controllers = || async {
            let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
            let mut total = 0;
            for p in &pods {
                if let Some((id, n)) = self.scale_of(&k.0, p).await? {
                    if seen.insert(id) {
                        total += n;
                    }
                }
            }
            Ok::<i32, String>(total)
        };
        let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
            (Some(max), _) => {
                let expected = from_controllers().await?;
                (expected, (expected - scaled(Some(max), expected, true)).max(0))
            }
            (None, Some(IntOrString::Int(n))) => (pods.len() as i32, *n),
            (None, Some(pct)) => {
                let expected = from_controllers().await?;
                (expected, scaled(Some(pct), expected, true))
            }
            (None, None) => (pods.len() as i32, 0),
        };
        // pods evicted a moment ago stay out of the healthy count for a while
        let before = pdb.status.clone().unwrap_or_default();
        let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
        let mut recheck: Option<Duration> = None;
        for (name, at) in before.disrupted_pods.clone().unwrap_or_default() {
            let live = pods.iter().any(|p| p.metadata.name.as_deref() == Some(name.as_str()) && p.metadata.deletion_timestamp.is_none());
            let Ok(until) = at.0.checked_add(DISRUPTION_TIMEOUT) else { continue };
            if live && until > now {
                let wait = until.duration_since(now).unsigned_abs();
                recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
                disrupted.insert(name, at);
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && controller::is_ready(p) && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
            .count() as i32;
        let allowed = (healthy - desired).max(0);
        let (state, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
        let mut conditions = before.conditions.clone().unwrap_or_default();
        let changed = conditions.iter().find(|c| c.type_ == "DisruptionAllowed").is_none_or(|c| c.status != state || c.reason != reason);
        if changed {
            conditions.retain(|c| c.type_ != "DisruptionAllowed");
            conditions.push(Condition {
                type_: "DisruptionAllowed".into(),
                status: state.into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: Time(now),
                observed_generation: pdb.metadata.generation,
            });
        }
        let status = PodDisruptionBudgetStatus {
            conditions: Some(conditions),
            current_healthy: healthy,
            desired_healthy: desired,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            disruptions_allowed: allowed,
            expected_pods: expected,
            observed_generation: pdb.metadata.generation,
        };
        if pdb.status.as_ref() != Some(&status) {
            let mut next = (*pdb).clone();
            next.status = Some(status);
            let api: kube::Api<PodDisruptionBudget> = kube::Api::namespaced(self.client.clone(), &k.0);
            match api.replace_status(&k.1, &PostParams::default(), &next).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(format!("updating the disruption budget status: {e}")),
            }
        }
        if let Some(wait) = recheck {
            self.queue.add_after(k.clone(), wait + Duration::from_millis(100));
        }
        Ok(())
    }
}
