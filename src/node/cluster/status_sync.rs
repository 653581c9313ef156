//! Pod status back to the apiserver. When a worker publishes a status (and at least every
//! second) the statuses are compared with what was last sent for each pod bound to this node; a
//! changed one goes out as a merge patch of pods/status (the pod's uid in the patch makes it a
//! precondition, so a pod deleted and made again under the same name is not written to). A pod
//! whose deletion was asked for is deleted for good (grace 0, uid precondition) once its worker
//! has stopped it, which ends a graceful deletion as the kubelet does. Publications close
//! together are sent as one round (a short debounce), the writes of a round concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

use super::ClusterPods;
use crate::node::NodeShared;

/// The longest a change waits when no worker says anything (a pod's deletion asked for).
const SYNC_PERIOD: Duration = Duration::from_secs(1);
/// How long after a publication more are gathered into the same round.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Status writes in flight at once.
const CONCURRENT_WRITES: usize = 16;

/// One write a round makes.
enum Write {
    Status { uid: String, status: Box<PodStatus> },
    Delete { uid: String },
}

/// Syncs until `stop` fires.
pub async fn run(client: kube::Client, shared: Arc<NodeShared>, mut pods: watch::Receiver<ClusterPods>, mut stop: watch::Receiver<bool>) {
    // compared as structs: only a changed status is cloned and encoded
    let mut sent: BTreeMap<String, PodStatus> = BTreeMap::new();
    let mut tick = tokio::time::interval(SYNC_PERIOD);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            _ = shared.status_published.notified() => tokio::time::sleep(DEBOUNCE).await,
            r = pods.changed() => if r.is_err() { return },
        }
        // the pods bound here: uid, namespace, name, deletion asked for (not a copy of them all)
        let desired: Vec<(String, String, String, bool)> = {
            let d = pods.borrow_and_update();
            if !d.synced {
                continue;
            }
            d.pods
                .iter()
                .filter_map(|(uid, p)| Some((uid.clone(), p.metadata.namespace.clone()?, p.metadata.name.clone()?, p.metadata.deletion_timestamp.is_some())))
                .collect()
        };
        let mut writes: Vec<(String, String, Write)> = vec![];
        {
            let statuses = shared.statuses.read().await;
            for (uid, ns, name, deleting) in &desired {
                match statuses.get(uid).and_then(|p| p.status.as_ref()) {
                    Some(status) if sent.get(uid) != Some(status) => {
                        writes.push((ns.clone(), name.clone(), Write::Status { uid: uid.clone(), status: Box::new(status.clone()) }))
                    }
                    Some(_) => {}
                    // asked to go, and its worker has stopped and forgotten it: delete for good
                    None if *deleting => writes.push((ns.clone(), name.clone(), Write::Delete { uid: uid.clone() })),
                    None => {}
                }
            }
        }
        let done: Vec<Option<(String, PodStatus)>> =
            stream::iter(writes.into_iter().map(|(ns, name, w)| write(client.clone(), ns, name, w))).buffer_unordered(CONCURRENT_WRITES).collect().await;
        sent.extend(done.into_iter().flatten());
        let live: std::collections::BTreeSet<&str> = desired.iter().map(|(uid, ..)| uid.as_str()).collect();
        sent.retain(|uid, _| live.contains(uid.as_str()));
    }
}

/// Makes one write; a status that went out is returned to be remembered as sent.
async fn write(client: kube::Client, ns: String, name: String, w: Write) -> Option<(String, PodStatus)> {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let name = name.as_str();
    match w {
        Write::Status { uid, status } => {
            let body = json!({"metadata": {"uid": uid}, "status": &*status});
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(body)).await {
                Ok(_) => Some((uid, *status)),
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "writing the pod status");
                    None
                }
            }
        }
        Write::Delete { uid } => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                ..Default::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting the pod"),
            }
            None
        }
    }
}
