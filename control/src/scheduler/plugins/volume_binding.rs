//! VolumeBinding: the pod's PersistentVolumeClaims must be usable on the node. PreFilter: a
//! claim that does not exist or is being deleted, or an unbound claim of an Immediate class,
//! makes the pod unschedulable everywhere. Filter: a bound claim's volume must admit the node
//! (its node affinity); an unbound claim of a WaitForFirstConsumer class needs on the node either
//! an Available volume that fits it or a class that provisions (whose allowedTopologies admit
//! the node). The PreBind half (naming the node on those claims and waiting for them to bind)
//! is in [`crate::scheduler::volumes`].

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::scheduler::cache::{NodeInfo, Snapshot, Volumes};
use crate::scheduler::framework::{CycleState, FilterPlugin, Rejection};
use crate::volume::matching::{self, NodeRef};
use crate::volume::NO_PROVISIONER;

pub const NAME: &str = "VolumeBinding";
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const PV_NOT_EXIST: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// The names of the claims a pod uses (a generic ephemeral volume's claim is `<pod>-<volume>`).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    volumes
        .iter()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

/// The pod's claims sorted by what binding they need.
#[derive(Debug, Default)]
pub struct PodClaims {
    /// Bound claims and their volume (None: the volume does not exist).
    pub bound: Vec<(Arc<PersistentVolumeClaim>, Option<Arc<PersistentVolume>>)>,
    /// Unbound claims of a WaitForFirstConsumer class, with the class.
    pub delayed: Vec<(Arc<PersistentVolumeClaim>, Option<Arc<StorageClass>>)>,
}

/// Sorts the pod's claims, or says why the pod cannot be scheduled anywhere (upstream's
/// PreFilter messages).
pub fn pod_claims(pod: &Pod, v: &Volumes) -> Result<PodClaims, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = PodClaims::default();
    let mut immediate = false;
    for name in claim_names(pod) {
        let Some(claim) = v.claims.get(&(ns.clone(), name.clone())) else { return Err(format!("persistentvolumeclaim {name:?} not found")) };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
        }
        let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("");
        if !volume_name.is_empty() {
            out.bound.push((claim.clone(), v.volumes.get(volume_name).cloned()));
            continue;
        }
        let class_name = matching::claim_class(claim);
        let class = (!class_name.is_empty()).then(|| v.classes.get(class_name).cloned()).flatten();
        if matching::delays_binding(class.as_deref()) {
            out.delayed.push((claim.clone(), class));
        } else {
            immediate = true;
        }
    }
    if immediate {
        return Err(UNBOUND_IMMEDIATE.into());
    }
    Ok(out)
}

/// The class's allowedTopologies admit the node (none: every node).
fn topology_admits(class: &StorageClass, node: &NodeInfo) -> bool {
    let terms = class.allowed_topologies.as_deref().unwrap_or_default();
    terms.is_empty()
        || terms
            .iter()
            .any(|t| t.match_label_expressions.as_deref().unwrap_or_default().iter().all(|r| node.labels().get(&r.key).is_some_and(|v| r.values.contains(v))))
}

/// Whether the pod's claims can be used on `node`.
pub fn check_node(claims: &PodClaims, volumes: &Volumes, node: &NodeInfo) -> Result<(), &'static str> {
    let at = NodeRef { name: node.name(), labels: node.labels() };
    for (_, volume) in &claims.bound {
        match volume {
            None => return Err(PV_NOT_EXIST),
            Some(v) if !matching::node_affinity_admits(v, at) => return Err(NODE_CONFLICT),
            Some(_) => {}
        }
    }
    // volumes matched to one claim of the pod are not offered to the next
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (claim, class) in &claims.delayed {
        let free: Vec<&Arc<PersistentVolume>> = volumes.volumes.values().filter(|v| !taken.contains(v.metadata.name.as_deref().unwrap_or(""))).collect();
        if let Some(v) = matching::find_best_match(claim, free, Some(at), true) {
            taken.insert(v.metadata.name.clone().unwrap_or_default());
            continue;
        }
        let provisions = class.as_ref().is_some_and(|c| c.provisioner != NO_PROVISIONER && topology_admits(c, node));
        if !provisions {
            return Err(BIND_CONFLICT);
        }
    }
    Ok(())
}

struct State {
    claims: PodClaims,
    volumes: Arc<Volumes>,
}

pub struct VolumeBinding;

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _pod: &Pod, _node: &NodeInfo) -> Result<(), Rejection> {
        Ok(())
    }

    fn pre_filter_check(&self, pod: &Pod, snapshot: &Snapshot) -> Result<CycleState, Rejection> {
        if claim_names(pod).is_empty() {
            return Ok(None);
        }
        let claims = pod_claims(pod, &snapshot.volumes).map_err(Rejection::unresolvable)?;
        Ok(Some(Box::new(State { claims, volumes: snapshot.volumes.clone() })))
    }

    fn filter_with(&self, _pod: &Pod, node: &NodeInfo, state: &CycleState) -> Result<(), Rejection> {
        let Some(state) = state.as_ref().and_then(|s| s.downcast_ref::<State>()) else { return Ok(()) };
        check_node(&state.claims, &state.volumes, node).map_err(Rejection::unresolvable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use crate::volume::matching::tests::{claim, volume};
    use serde_json::json;

    fn state(claims: Vec<PersistentVolumeClaim>, vols: Vec<Arc<PersistentVolume>>, classes: Vec<serde_json::Value>) -> Snapshot {
        let mut v = Volumes::default();
        for c in claims {
            v.claims.insert((c.metadata.namespace.clone().unwrap_or_default(), c.metadata.name.clone().unwrap_or_default()), Arc::new(c));
        }
        for pv in vols {
            v.volumes.insert(pv.metadata.name.clone().unwrap_or_default(), pv);
        }
        for c in classes {
            let c: StorageClass = serde_json::from_value(c).expect("class");
            v.classes.insert(c.metadata.name.clone().unwrap_or_default(), Arc::new(c));
        }
        Snapshot { volumes: Arc::new(v), ..Default::default() }
    }

    fn using(claim: &str) -> Pod {
        pod(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}))
    }

    fn pvc(name: &str, class: &str, volume_name: Option<&str>) -> PersistentVolumeClaim {
        claim(json!({"metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": class, "volumeName": volume_name}}))
    }

    fn host(name: &str) -> NodeInfo {
        node(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}))
    }

    fn run(p: &Pod, snap: &Snapshot, n: &NodeInfo) -> Result<(), Rejection> {
        let state = VolumeBinding.pre_filter_check(p, snap)?;
        VolumeBinding.filter_with(p, n, &state)
    }

    const WFFC: &str = "WaitForFirstConsumer";

    #[test]
    fn missing_deleted_and_unbound_immediate_claims_fit_nowhere() {
        let snap = state(vec![], vec![], vec![]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Err(Rejection::unresolvable("persistentvolumeclaim \"data\" not found")));
        let mut deleting = pvc("data", "", None);
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        let snap = state(vec![deleting], vec![], vec![]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Err(Rejection::unresolvable("persistentvolumeclaim \"data\" is being deleted")));
        let snap =
            state(vec![pvc("data", "fast", None)], vec![], vec![json!({"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "Immediate"})]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Err(Rejection::unresolvable(UNBOUND_IMMEDIATE)));
        assert_eq!(run(&pod(json!({"spec": {"containers": []}})), &snap, &host("n1")), Ok(()), "a pod without claims is not concerned");
    }

    #[test]
    fn a_bound_claims_volume_must_admit_the_node() {
        let pinned = volume(
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}),
        );
        let snap = state(vec![pvc("data", "", Some("pv1"))], vec![pinned], vec![]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Ok(()));
        assert_eq!(run(&using("data"), &snap, &host("n2")), Err(Rejection::unresolvable(NODE_CONFLICT)));
        let snap = state(vec![pvc("data", "", Some("gone"))], vec![], vec![]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Err(Rejection::unresolvable(PV_NOT_EXIST)));
    }

    #[test]
    fn a_delayed_claim_fits_where_a_volume_waits_or_its_class_provisions() {
        let lp = json!({"metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path", "volumeBindingMode": WFFC});
        let snap = state(vec![pvc("data", "local-path", None)], vec![], vec![lp]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Ok(()), "local-path provisions on any node");
        let manual = json!({"metadata": {"name": "manual"}, "provisioner": NO_PROVISIONER, "volumeBindingMode": WFFC});
        let local_pv = volume(json!({"metadata": {"name": "disk"}, "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual", "local": {"path": "/mnt/disk"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}},
            "status": {"phase": "Available"}}));
        let snap = state(vec![pvc("data", "manual", None)], vec![local_pv], vec![manual]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Err(Rejection::unresolvable(BIND_CONFLICT)));
        assert_eq!(run(&using("data"), &snap, &host("n2")), Ok(()));
        let zoned = json!({"metadata": {"name": "zoned"}, "provisioner": "p", "volumeBindingMode": WFFC,
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "kubernetes.io/hostname", "values": ["n2"]}]}]});
        let snap = state(vec![pvc("data", "zoned", None)], vec![], vec![zoned]);
        assert_eq!(run(&using("data"), &snap, &host("n1")), Err(Rejection::unresolvable(BIND_CONFLICT)));
        assert_eq!(run(&using("data"), &snap, &host("n2")), Ok(()));
    }
}
