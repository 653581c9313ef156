//! The pod garbage collector, as kube-controller-manager's, every 20 s: pods bound to a node
//! that no longer exists (checked again with a read after the node has been missing for 20 s)
//! get the DisruptionTarget condition (DeletionByPodGC) and phase Failed, then are deleted at
//! once; pods being deleted that were never scheduled are deleted at once; finished pods
//! beyond `--terminated-pod-gc-threshold` (12,500; 0 keeps all) are deleted, oldest first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controller::phase;
use crate::informer::Informer;

const PERIOD: Duration = Duration::from_secs(20);
const QUARANTINE: Duration = Duration::from_secs(20);

pub struct Collector {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    /// Finished pods kept at most (--terminated-pod-gc-threshold; 0 keeps all).
    threshold: usize,
}

fn ids(pod: &Pod) -> (String, String) {
    (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default())
}

impl Collector {
    pub fn new(client: kube::Client, pods: Arc<Informer<Pod>>, nodes: Arc<Informer<Node>>, threshold: usize) -> Arc<Self> {
        Arc::new(Collector { client, pods, nodes, threshold })
    }

    async fn force_delete(&self, pod: &Pod) {
        let (ns, name) = ids(pod);
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "garbage collected the pod"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "garbage collecting the pod"),
        }
    }

    /// A pod of a node that is gone: marked failed by the garbage collector, then deleted.
    async fn collect_orphan(&self, pod: &Pod) {
        let (ns, name) = ids(pod);
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &ns);
        if !matches!(phase(pod), "Succeeded" | "Failed") {
            let status = serde_json::json!({"status": {"phase": "Failed", "conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(status)).await {
                tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "marking the orphaned pod failed");
            }
        }
        self.force_delete(pod).await;
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.pods.synced().await;
        self.nodes.synced().await;
        // when each missing node was first missed
        let mut missing: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pods = self.pods.list();
            // finished pods over the threshold, oldest first
            if self.threshold > 0 {
                let mut finished: Vec<&Arc<Pod>> = pods.iter().filter(|p| matches!(phase(p), "Succeeded" | "Failed")).collect();
                if finished.len() > self.threshold {
                    // oldest first; pods of the same second by name
                    finished.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.metadata.name.clone()));
                    let extra = finished.len() - self.threshold;
                    for p in finished.into_iter().take(extra) {
                        self.force_delete(p).await;
                    }
                }
            }
            // pods of nodes that are gone
            let mut seen_missing: Vec<String> = vec![];
            for pod in &pods {
                let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()) else {
                    if pod.metadata.deletion_timestamp.is_some() {
                        self.force_delete(pod).await;
                    }
                    continue;
                };
                if self.nodes.get("", node).is_some() {
                    continue;
                }
                seen_missing.push(node.to_string());
                let since = *missing.entry(node.to_string()).or_insert_with(Instant::now);
                if since.elapsed() < QUARANTINE {
                    continue;
                }
                // the informer may lag: ask the API before acting
                let nodes_api: kube::Api<Node> = kube::Api::all(self.client.clone());
                if let Ok(None) = nodes_api.get_opt(node).await {
                    self.collect_orphan(pod).await;
                }
            }
            missing.retain(|n, _| seen_missing.contains(n));
        }
    }
}
