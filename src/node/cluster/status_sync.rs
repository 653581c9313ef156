//! Pod status back to the apiserver. Every second the statuses the workers published are
//! compared with what was last sent for each pod bound to this node; a changed one goes out as
//! a merge patch of pods/status (the pod's uid in the patch makes it a precondition, so a pod
//! deleted and made again under the same name is not written to). A pod whose deletion was
//! asked for is deleted for good (grace 0, uid precondition) once its worker has stopped it,
//! which ends a graceful deletion as the kubelet does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::ClusterPods;
use crate::node::NodeShared;

const SYNC_PERIOD: Duration = Duration::from_secs(1);

/// Syncs until `stop` fires.
pub async fn run(client: kube::Client, shared: Arc<NodeShared>, pods: watch::Receiver<ClusterPods>, mut stop: watch::Receiver<bool>) {
    let mut sent: BTreeMap<String, Value> = BTreeMap::new();
    let mut tick = tokio::time::interval(SYNC_PERIOD);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let desired = pods.borrow().clone();
        if !desired.synced {
            continue;
        }
        let statuses: BTreeMap<String, Value> = shared
            .statuses
            .read()
            .await
            .iter()
            .filter(|(uid, _)| desired.pods.contains_key(*uid))
            .filter_map(|(uid, p)| Some((uid.clone(), serde_json::to_value(p.status.as_ref()?).ok()?)))
            .collect();
        for (uid, pod) in &desired.pods {
            let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else { continue };
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            match statuses.get(uid) {
                Some(status) if sent.get(uid) != Some(status) => {
                    let body = json!({"metadata": {"uid": uid}, "status": status});
                    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(body)).await {
                        Ok(_) => {
                            sent.insert(uid.clone(), status.clone());
                        }
                        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "writing the pod status"),
                    }
                }
                Some(_) => {}
                None if pod.metadata.deletion_timestamp.is_some() => {
                    // asked to go, and its worker has stopped and forgotten it: delete for good
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                        ..Default::default()
                    };
                    match api.delete(name, &params).await {
                        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted"),
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting the pod"),
                    }
                }
                None => {}
            }
        }
        sent.retain(|uid, _| desired.pods.contains_key(uid));
    }
}
