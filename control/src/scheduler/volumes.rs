//! VolumeBinding's PreBind: before a pod is bound to its node, each of its unbound claims of a
//! WaitForFirstConsumer class is annotated with the node (volume.kubernetes.io/selected-node),
//! and the pod waits — on its own task, never holding up the scheduling of other pods — until
//! the PV binder (and the provisioner) have bound them all, up to upstream's bind timeout of
//! 600 s. The claims are read from the scheduler's copy, which the claim watch keeps current
//! and which wakes the waiters on every claim change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams};
use tokio::sync::Notify;

use super::cache::Volumes;
use super::plugins::volume_binding::pod_claims;
use crate::volume::{ANN_BIND_COMPLETED, ANN_SELECTED_NODE};

/// Upstream's --bind-timeout-seconds default.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the claims are looked at again even when no change woke the waiter.
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PreBindError {
    #[error("binding volumes: {0}")]
    Claims(String),
    #[error("binding volumes: persistentvolumeclaim {claim:?}: {source}")]
    Annotate { claim: String, source: kube::Error },
    #[error("binding volumes: selectedNode annotation reset for PVC {0:?}")]
    Reset(String),
    #[error("binding volumes: context deadline exceeded")]
    Timeout,
}

/// The claim is bound: its volume named and the binding marked complete.
fn fully_bound(c: &PersistentVolumeClaim) -> bool {
    let named = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty());
    named && c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED))
}

fn selected_node(c: &PersistentVolumeClaim) -> Option<&str> {
    c.metadata.annotations.as_ref().and_then(|a| a.get(ANN_SELECTED_NODE)).map(String::as_str)
}

/// Names `node` on the pod's unbound delayed claims and waits until they are bound.
/// `current` gives the scheduler's copy of the claims; `changed` wakes on every claim change.
pub async fn prebind(
    client: &kube::Client,
    pod: &Pod,
    node: &str,
    current: impl Fn() -> Arc<Volumes>,
    changed: &Notify,
    timeout: Duration,
) -> Result<(), PreBindError> {
    let claims = pod_claims(pod, &current()).map_err(PreBindError::Claims)?;
    if claims.delayed.is_empty() {
        return Ok(());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(client.clone(), &ns);
    let mut names = vec![];
    for (claim, _) in &claims.delayed {
        let name = claim.metadata.name.clone().unwrap_or_default();
        if selected_node(claim) != Some(node) {
            let patch = serde_json::json!({"metadata": {"annotations": BTreeMap::from([(ANN_SELECTED_NODE, node)])}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|source| PreBindError::Annotate { claim: name.clone(), source })?;
            tracing::debug!(claim = %name, %node, "selected the node for the claim");
        }
        names.push(name);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let woken = changed.notified();
        let now = current();
        let mut waiting = false;
        for name in &names {
            let Some(c) = now.claims.get(&(ns.clone(), name.clone())) else {
                return Err(PreBindError::Claims(format!("persistentvolumeclaim {name:?} not found")));
            };
            if fully_bound(c) {
                continue;
            }
            // the copy may still show the claim before our annotation: only a node named and
            // then taken away is a reset
            if selected_node(c).is_some_and(|n| n != node) {
                return Err(PreBindError::Reset(format!("{ns}/{name}")));
            }
            waiting = true;
        }
        if !waiting {
            return Ok(());
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = tokio::time::sleep_until(deadline) => return Err(PreBindError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::matching::tests::claim;
    use serde_json::json;

    #[test]
    fn a_claim_is_bound_when_named_and_marked_complete() {
        let c = claim(json!({"metadata": {"name": "c", "annotations": {ANN_BIND_COMPLETED: "yes"}}, "spec": {"volumeName": "pv"}}));
        assert!(fully_bound(&c));
        let c = claim(json!({"metadata": {"name": "c"}, "spec": {"volumeName": "pv"}}));
        assert!(!fully_bound(&c), "named by the user, not yet bound by the controller");
    }
}
