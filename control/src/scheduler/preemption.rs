//! Preemption (the DefaultPreemption post-filter): when no node fits, find nodes where removing
//! pods of lower priority would make room, keep as many of them as still fit (highest priority
//! first), and pick the node whose victims matter least (lowest highest-victim priority, then
//! fewest victims), honouring PodDisruptionBudgets where possible: victims whose eviction would
//! exceed a budget's disruptionsAllowed are reprieved first, and nodes with fewer such
//! violations are preferred. Nodes rejected for reasons no eviction can change are skipped, and the
//! message says why preemption did not help, in upstream's words. Pure: the caller deletes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::cache::{pod_key, NodeInfo, Snapshot};
use super::framework::{reasons_histogram, Diagnosis, Profile};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// The chosen node and the pods to evict from it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
    /// How many victims' eviction a PodDisruptionBudget does not allow.
    pub pdb_violations: usize,
}

/// Splits pods into (violating, not violating) their budgets, in the given order, each eviction
/// using up one of its budgets' allowed disruptions.
fn split_by_budget(pods: Vec<Arc<Pod>>, snapshot: &Snapshot) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut left: std::collections::BTreeMap<&str, i32> = snapshot.budgets.iter().map(|(k, b)| (k.as_str(), b.allowed)).collect();
    let (mut violating, mut fine) = (vec![], vec![]);
    for p in pods {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let labels = p.metadata.labels.as_ref().unwrap_or(&EMPTY);
        let mut violates = false;
        for (k, b) in snapshot.budgets.iter() {
            if b.namespace != ns || b.selector.requirements.is_empty() || !b.selector.matches(labels) {
                continue;
            }
            let n = left.entry(k.as_str()).or_insert(0);
            *n -= 1;
            if *n < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Victims on one node, or None when evicting every lower-priority pod still leaves no room.
fn victims_on(profile: &Profile, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> Option<(Vec<Arc<Pod>>, usize)> {
    let mine = priority(pod);
    let mut lower: Vec<Arc<Pod>> = node.pods.iter().filter(|p| priority(p) < mine).cloned().collect();
    if lower.is_empty() {
        return None;
    }
    let mut trial = node.clone();
    for p in &lower {
        trial.remove_pod(&pod_key(p));
    }
    let states = profile.pre_filter(pod, snapshot).ok()?;
    profile.filter_node(pod, &trial, &states).ok()?;
    // Reprieve: put back the pods a budget protects, then the rest, the most important first,
    // while the preemptor still fits.
    lower.sort_by_key(|p| std::cmp::Reverse(priority(p)));
    let (violating, fine) = split_by_budget(lower, snapshot);
    let mut victims = vec![];
    let mut violations = 0;
    for (p, protected) in violating.into_iter().map(|p| (p, true)).chain(fine.into_iter().map(|p| (p, false))) {
        trial.add_pod(p.clone());
        if profile.filter_node(pod, &trial, &states).is_err() {
            trial.remove_pod(&pod_key(&p));
            victims.push(p);
            violations += usize::from(protected);
        }
    }
    Some((victims, violations))
}

/// Runs preemption for `pod`: a candidate, or the post-filter message ("preemption: ...").
pub fn preempt(profile: &Profile, pod: &Pod, snapshot: &Snapshot, diagnosis: &Diagnosis) -> Result<Candidate, String> {
    if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    // Victims already on their way out of the nominated node: wait for them, evict no more.
    let nominated = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
    if let Some(node) = nominated.and_then(|n| snapshot.nodes.iter().find(|i| i.name() == n)) {
        let mine = priority(pod);
        if node.pods.iter().any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < mine) {
            return Err("preemption: not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    let mut reasons: Vec<String> = vec![];
    let mut best: Option<((usize, i32, usize), Candidate)> = None;
    for node in snapshot.nodes.iter() {
        let helpful = diagnosis.rejected.get(node.name()).is_none_or(|r| r.resolvable);
        if !helpful {
            reasons.push(NOT_HELPFUL.into());
            continue;
        }
        match victims_on(profile, pod, node, snapshot) {
            None => reasons.push(NO_VICTIMS.into()),
            Some((victims, pdb_violations)) => {
                let top = victims.iter().map(|v| priority(v)).max().unwrap_or(i32::MIN);
                let rank = (pdb_violations, top, victims.len());
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, Candidate { node: node.name().to_string(), victims, pdb_violations }));
                }
            }
        }
    }
    match best {
        Some((_, c)) => Ok(c),
        None => Err(format!("preemption: 0/{} nodes are available: {}.", snapshot.nodes.len(), reasons_histogram(reasons.iter()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::config::{build_profile, ProfileConfig};
    use crate::scheduler::framework::Rejection;
    use crate::scheduler::plugins::testing::{node, pod};

    fn asking(name: &str, cpu: &str, priority: i32) -> Arc<Pod> {
        Arc::new(pod(serde_json::json!({"metadata": {"name": name, "namespace": "d"},
            "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}})))
    }

    #[test]
    fn budgets_steer_preemption_to_the_node_without_violations() {
        let profile = build_profile(&ProfileConfig::default(), 0).expect("profile");
        let guarded = |name: &str| {
            let mut p = (*asking(name, "2", 0)).clone();
            p.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
            Arc::new(p)
        };
        let mut a = node(serde_json::json!({"metadata": {"name": "a"}, "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}));
        a.add_pod(guarded("db-0"));
        let mut b = node(serde_json::json!({"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}));
        b.add_pod(asking("batch", "2", 5));
        let budgets = [(
            "d/db".to_string(),
            crate::scheduler::cache::Budget {
                namespace: "d".into(),
                selector: berth_apiserver::selector::LabelSelector::parse("app=db").expect("selector"),
                allowed: 0,
            },
        )]
        .into();
        let snap = Snapshot { budgets: Arc::new(budgets), ..Snapshot::with_nodes(vec![Arc::new(a), Arc::new(b)]) };
        let mut d = Diagnosis::default();
        d.rejected.insert("a".into(), Rejection::resolvable("Insufficient cpu"));
        d.rejected.insert("b".into(), Rejection::resolvable("Insufficient cpu"));
        let c = preempt(&profile, &asking("p", "2", 100), &snap, &d).expect("candidate");
        assert_eq!((c.node.as_str(), c.pdb_violations), ("b", 0), "the budget-protected db pod is spared though batch has the higher priority");
    }

    #[test]
    fn evicts_the_fewest_lower_priority_pods() {
        let profile = build_profile(&ProfileConfig::default(), 0).expect("profile");
        let mut n = node(serde_json::json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}));
        n.add_pod(asking("low-a", "1", 0));
        n.add_pod(asking("low-b", "500m", 1));
        n.add_pod(asking("high", "500m", 1000));
        let snap = Snapshot::with_nodes(vec![Arc::new(n)]);
        let mut d = Diagnosis::default();
        d.rejected.insert("n".into(), Rejection::resolvable("Insufficient cpu"));
        let c = preempt(&profile, &asking("p", "1", 100), &snap, &d).expect("candidate");
        let names: Vec<String> = c.victims.iter().map(|v| pod_key(v).1).collect();
        assert_eq!(names, vec!["low-a"], "low-b is reprieved: evicting low-a alone makes room");
        let err = preempt(&profile, &asking("p", "2", 100), &snap, &d).expect_err("the high pod stays");
        assert_eq!(err, "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");
        let mut never = (*asking("p", "1", 100)).clone();
        if let Some(s) = never.spec.as_mut() {
            s.preemption_policy = Some("Never".into());
        }
        assert_eq!(preempt(&profile, &never, &snap, &d).expect_err("never"), "preemption: not eligible due to preemptionPolicy=Never.");
        let mut nominated = (*asking("p", "1", 100)).clone();
        nominated.status = Some(k8s_openapi::api::core::v1::PodStatus { nominated_node_name: Some("n".into()), ..Default::default() });
        let mut terminating = snap.nodes[0].as_ref().clone();
        let mut leaving = (*asking("leaving", "1m", 0)).clone();
        leaving.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        terminating.add_pod(Arc::new(leaving));
        let snap2 = Snapshot::with_nodes(vec![Arc::new(terminating)]);
        assert_eq!(
            preempt(&profile, &nominated, &snap2, &d).expect_err("terminating"),
            "preemption: not eligible due to a terminating pod on the nominated node."
        );
        d.rejected.insert("n".into(), Rejection::unresolvable("node(s) didn't match Pod's node affinity/selector"));
        assert_eq!(
            preempt(&profile, &asking("p", "1", 100), &snap, &d).expect_err("unresolvable"),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }
}
