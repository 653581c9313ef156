//! Which PersistentVolume fits which claim, as upstream's volume helpers decide it: class equal
//! ("" only with ""), access modes a superset, capacity at least the request, volume mode equal,
//! the claim's selector, and, where a node is known, the volume's node affinity. Among the
//! volumes that fit, the one with the fewest access modes and then the smallest capacity wins.
//! Pure functions over API objects: no I/O, shared by the binder and the scheduler.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_apiserver::selector::LabelSelector;
use berth_names::quantity::Quantity;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::ANN_BETA_STORAGE_CLASS;
use crate::scheduler::plugins::node_affinity::term_matches;

/// Why a volume does not satisfy a claim (upstream's checkVolumeSatisfyClaim words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("requested PV is too small")]
    TooSmall,
    #[error("storageClassName does not match")]
    Class,
    #[error("incompatible volumeMode")]
    VolumeMode,
    #[error("incompatible accessMode")]
    AccessMode,
}

/// A node as volume matching sees it: its name and labels.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The claim's class: the beta annotation, else spec.storageClassName, else "".
pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    let ann = c.metadata.annotations.as_ref().and_then(|a| a.get(ANN_BETA_STORAGE_CLASS));
    ann.or(c.spec.as_ref().and_then(|s| s.storage_class_name.as_ref())).map(String::as_str).unwrap_or("")
}

/// The volume's class: the beta annotation, else spec.storageClassName, else "".
pub fn volume_class(v: &PersistentVolume) -> &str {
    let ann = v.metadata.annotations.as_ref().and_then(|a| a.get(ANN_BETA_STORAGE_CLASS));
    ann.or(v.spec.as_ref().and_then(|s| s.storage_class_name.as_ref())).map(String::as_str).unwrap_or("")
}

/// The claim's storage request (0 when absent or unparsable).
pub fn requested(c: &PersistentVolumeClaim) -> Quantity {
    let q = c.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage"));
    q.and_then(|q| Quantity::parse(&q.0).ok()).unwrap_or_default()
}

/// The volume's storage capacity (0 when absent or unparsable).
pub fn capacity(v: &PersistentVolume) -> Quantity {
    let q = v.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage"));
    q.and_then(|q| Quantity::parse(&q.0).ok()).unwrap_or_default()
}

fn claim_modes(c: &PersistentVolumeClaim) -> &[String] {
    c.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or_default()
}

fn volume_modes(v: &PersistentVolume) -> &[String] {
    v.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or_default()
}

/// Every access mode the claim asks for is one the volume offers.
pub fn access_modes_satisfied(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let offered = volume_modes(v);
    claim_modes(c).iter().all(|m| offered.contains(m))
}

/// The claim and the volume differ in volumeMode (both default to Filesystem).
pub fn volume_mode_mismatch(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let cm = c.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem");
    let vm = v.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem");
    cm != vm
}

/// The volume's required node affinity admits the node (no affinity admits every node).
pub fn node_affinity_admits(v: &PersistentVolume, node: NodeRef<'_>) -> bool {
    let required = v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, node.labels, node.name)),
    }
}

/// The volume's claimRef names this claim (by namespace and name, and by uid when it has one).
pub fn bound_to_claim(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.namespace == c.metadata.namespace && r.name == c.metadata.name && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref())
}

/// Whether a volume the user named (spec.volumeName) satisfies the claim.
pub fn check_satisfies(v: &PersistentVolume, c: &PersistentVolumeClaim) -> Result<(), Mismatch> {
    if capacity(v) < requested(c) {
        return Err(Mismatch::TooSmall);
    }
    if volume_class(v) != claim_class(c) {
        return Err(Mismatch::Class);
    }
    if volume_mode_mismatch(c, v) {
        return Err(Mismatch::VolumeMode);
    }
    if !access_modes_satisfied(c, v) {
        return Err(Mismatch::AccessMode);
    }
    Ok(())
}

fn phase(v: &PersistentVolume) -> &str {
    v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The class's binding waits for the first consumer (WaitForFirstConsumer).
pub fn delays_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The best volume for `claim` among `volumes` (upstream's findBestMatchForClaim): a volume
/// pre-bound to the claim (its claimRef names it) wins at once, unless its node affinity
/// refuses `node`; otherwise an Available volume of the claim's class, matching its selector,
/// access modes and volume mode, large enough, and (with a node) admitting the node — with the
/// fewest access modes, then the smallest. A delayed-binding claim with no node gets only a
/// pre-bound volume.
pub fn find_best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a Arc<PersistentVolume>>,
    node: Option<NodeRef<'_>>,
    delay_binding: bool,
) -> Option<Arc<PersistentVolume>> {
    let request = requested(claim);
    let class = claim_class(claim);
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref()).map(LabelSelector::from_api);
    let empty = BTreeMap::new();
    let mut best: Option<(usize, Quantity, &Arc<PersistentVolume>)> = None;
    for v in volumes {
        let claimed = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some();
        if claimed && !bound_to_claim(v, claim) {
            continue;
        }
        if !access_modes_satisfied(claim, v) || capacity(v) < request || volume_mode_mismatch(claim, v) || v.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let affinity_ok = node.is_none_or(|n| node_affinity_admits(v, n));
        if claimed {
            return affinity_ok.then(|| v.clone());
        }
        if node.is_none() && delay_binding {
            continue;
        }
        if phase(v) != "Available" || volume_class(v) != class || !affinity_ok {
            continue;
        }
        match &selector {
            Some(Ok(sel)) if !sel.matches(v.metadata.labels.as_ref().unwrap_or(&empty)) => continue,
            Some(Err(_)) => continue,
            _ => {}
        }
        let key = (volume_modes(v).len(), capacity(v));
        if best.as_ref().is_none_or(|(n, q, _)| key < (*n, *q)) {
            best = Some((key.0, key.1, v));
        }
    }
    best.map(|(_, _, v)| v.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).expect("claim")
    }

    pub fn volume(v: serde_json::Value) -> Arc<PersistentVolume> {
        Arc::new(serde_json::from_value(v).expect("volume"))
    }

    fn pv(name: &str, size: &str, modes: serde_json::Value, class: &str) -> Arc<PersistentVolume> {
        volume(json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}}))
    }

    fn pvc(size: &str, class: Option<&str>) -> PersistentVolumeClaim {
        claim(json!({"metadata": {"name": "data", "namespace": "default", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, "storageClassName": class}}))
    }

    fn name(v: Option<Arc<PersistentVolume>>) -> Option<String> {
        v.and_then(|v| v.metadata.name.clone())
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_claims_class_wins() {
        let vols = vec![
            pv("big", "10Gi", json!(["ReadWriteOnce"]), ""),
            pv("small", "1Gi", json!(["ReadWriteOnce"]), ""),
            pv("tiny", "100Mi", json!(["ReadWriteOnce"]), ""),
            pv("other-class", "1Gi", json!(["ReadWriteOnce"]), "fast"),
            pv("rox", "1Gi", json!(["ReadOnlyMany"]), ""),
        ];
        assert_eq!(name(find_best_match(&pvc("500Mi", Some("")), &vols, None, false)).as_deref(), Some("small"));
        assert_eq!(name(find_best_match(&pvc("500Mi", Some("fast")), &vols, None, false)).as_deref(), Some("other-class"));
        assert_eq!(name(find_best_match(&pvc("20Gi", Some("")), &vols, None, false)), None, "nothing large enough");
    }

    #[test]
    fn fewer_access_modes_win_over_size() {
        let vols = vec![pv("rwo-rox", "1Gi", json!(["ReadWriteOnce", "ReadOnlyMany"]), ""), pv("rwo", "5Gi", json!(["ReadWriteOnce"]), "")];
        assert_eq!(name(find_best_match(&pvc("1Gi", Some("")), &vols, None, false)).as_deref(), Some("rwo"));
    }

    #[test]
    fn volumes_claimed_by_others_bound_or_released_ones_are_skipped_and_a_pre_bound_one_wins() {
        let mut taken = (*pv("taken", "1Gi", json!(["ReadWriteOnce"]), "")).clone();
        taken.spec.as_mut().expect("spec").claim_ref = Some(serde_json::from_value(json!({"namespace": "default", "name": "someone"})).expect("ref"));
        let mut released = (*pv("released", "1Gi", json!(["ReadWriteOnce"]), "")).clone();
        released.status.as_mut().expect("status").phase = Some("Released".into());
        let mut mine = (*pv("mine", "8Gi", json!(["ReadWriteOnce"]), "other")).clone();
        mine.spec.as_mut().expect("spec").claim_ref = Some(serde_json::from_value(json!({"namespace": "default", "name": "data"})).expect("ref"));
        let vols = vec![Arc::new(taken), Arc::new(released.clone())];
        assert_eq!(name(find_best_match(&pvc("1Gi", Some("")), &vols, None, false)), None);
        let vols = vec![Arc::new(released), pv("free", "1Gi", json!(["ReadWriteOnce"]), ""), Arc::new(mine)];
        assert_eq!(name(find_best_match(&pvc("1Gi", Some("")), &vols, None, false)).as_deref(), Some("mine"), "pre-bound beats a better fit");
    }

    #[test]
    fn selectors_volume_modes_and_delayed_binding() {
        let vols = vec![pv("a", "1Gi", json!(["ReadWriteOnce"]), "")];
        let mut c = pvc("1Gi", Some(""));
        c.spec.as_mut().expect("spec").selector = Some(serde_json::from_value(json!({"matchLabels": {"tier": "slow"}})).expect("sel"));
        assert_eq!(name(find_best_match(&c, &vols, None, false)), None);
        let mut c = pvc("1Gi", Some(""));
        c.spec.as_mut().expect("spec").volume_mode = Some("Block".into());
        assert_eq!(name(find_best_match(&c, &vols, None, false)), None);
        assert_eq!(name(find_best_match(&pvc("1Gi", Some("")), &vols, None, true)), None, "a delayed claim waits for its node");
    }

    #[test]
    fn node_affinity_is_checked_against_the_selected_node() {
        let mut local = (*pv("local", "1Gi", json!(["ReadWriteOnce"]), "")).clone();
        local.spec.as_mut().expect("spec").node_affinity = Some(
            serde_json::from_value(json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}))
            .expect("affinity"),
        );
        let vols = vec![Arc::new(local)];
        let n1 = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n1".to_string())]);
        let n2 = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n2".to_string())]);
        let c = pvc("1Gi", Some(""));
        assert_eq!(name(find_best_match(&c, &vols, Some(NodeRef { name: "n1", labels: &n1 }), true)).as_deref(), Some("local"));
        assert_eq!(name(find_best_match(&c, &vols, Some(NodeRef { name: "n2", labels: &n2 }), true)), None);
    }

    #[test]
    fn a_named_volume_is_checked_with_upstreams_words() {
        let v = pv("v", "1Gi", json!(["ReadWriteOnce"]), "gold");
        assert_eq!(check_satisfies(&v, &pvc("2Gi", Some("gold"))), Err(Mismatch::TooSmall));
        assert_eq!(check_satisfies(&v, &pvc("1Gi", Some(""))).map_err(|e| e.to_string()), Err("storageClassName does not match".into()));
        assert_eq!(check_satisfies(&v, &pvc("1Gi", Some("gold"))), Ok(()));
    }
}
