//! PodTopologySpread: spreads pods matching a constraint's labelSelector evenly over the
//! domains of its topologyKey. DoNotSchedule constraints filter: a node whose domain would then
//! hold more than maxSkew pods over the emptiest eligible domain is rejected (with fewer eligible
//! domains than minDomains the minimum counts as 0). ScheduleAnyway constraints score: fewer
//! matching pods in the node's domain is better. Eligible nodes carry every constraint's key and,
//! per nodeAffinityPolicy (default Honor) / nodeTaintsPolicy (default Ignore), match the pod's
//! node affinity / tolerate the node's taints. matchLabelKeys narrow the selector to the pod's
//! values. (The cluster-level default constraints for pods without any are not applied yet.)

use std::collections::{BTreeMap, HashMap};

use berth_apiserver::selector::{LabelSelector, Op, Requirement};
use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use super::node_affinity::pod_matches_node;
use super::taint_toleration::tolerates;
use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{CycleState, FilterPlugin, Rejection, ScorePlugin, MAX_NODE_SCORE};

pub const NAME: &str = "PodTopologySpread";
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

struct Constraint {
    max_skew: i64,
    key: String,
    selector: Option<LabelSelector>,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
}

fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let list: &[TopologySpreadConstraint] = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_deref()).unwrap_or_default();
    list.iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| {
            let mut selector = c.label_selector.as_ref().and_then(|s| LabelSelector::from_api(s).ok());
            if let Some(sel) = selector.as_mut() {
                for k in c.match_label_keys.iter().flatten() {
                    if let Some(v) = labels.get(k) {
                        sel.requirements.push(Requirement { key: k.clone(), op: Op::In, values: vec![v.clone()] });
                    }
                }
            }
            Constraint {
                max_skew: c.max_skew as i64,
                key: c.topology_key.clone(),
                selector,
                min_domains: c.min_domains.unwrap_or(1) as i64,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

fn pod_counts(c: &Constraint, pod: &Pod, other: &Pod) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    other.metadata.namespace == pod.metadata.namespace
        && other.metadata.deletion_timestamp.is_none()
        && c.selector.as_ref().is_some_and(|s| s.matches(other.metadata.labels.as_ref().unwrap_or(&EMPTY)))
}

fn eligible(c: &Constraint, all: &[Constraint], pod: &Pod, node: &NodeInfo) -> bool {
    if !all.iter().all(|o| node.labels().contains_key(&o.key)) {
        return false;
    }
    if c.honor_affinity && !pod_matches_node(pod, node.labels(), node.name()) {
        return false;
    }
    if c.honor_taints {
        let tols = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
        let blocked = node.taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").any(|taint| !tols.iter().any(|t| tolerates(t, taint)));
        if blocked {
            return false;
        }
    }
    true
}

/// Matching pods per domain of each constraint, over eligible nodes.
fn count(cs: &[Constraint], pod: &Pod, snapshot: &Snapshot) -> Vec<HashMap<String, i64>> {
    cs.iter()
        .map(|c| {
            let mut m: HashMap<String, i64> = HashMap::new();
            for node in snapshot.nodes.iter().filter(|n| eligible(c, cs, pod, n)) {
                let Some(v) = node.labels().get(&c.key) else { continue };
                *m.entry(v.clone()).or_default() += node.pods.iter().filter(|p| pod_counts(c, pod, p)).count() as i64;
            }
            m
        })
        .collect()
}

struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    self_match: Vec<bool>,
}

pub struct PodTopologySpread;

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _pod: &Pod, _node: &NodeInfo) -> Result<(), Rejection> {
        Ok(())
    }

    fn pre_filter(&self, pod: &Pod, snapshot: &Snapshot) -> CycleState {
        let cs = constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return None;
        }
        let counts = count(&cs, pod, snapshot);
        let self_match = cs.iter().map(|c| pod_counts(c, pod, pod)).collect();
        Some(Box::new(FilterState { constraints: cs, counts, self_match }))
    }

    fn filter_with(&self, _pod: &Pod, node: &NodeInfo, state: &CycleState) -> Result<(), Rejection> {
        let Some(s) = state.as_ref().and_then(|s| s.downcast_ref::<FilterState>()) else { return Ok(()) };
        for ((c, counts), self_match) in s.constraints.iter().zip(&s.counts).zip(&s.self_match) {
            let Some(v) = node.labels().get(&c.key) else { return Err(Rejection::unresolvable(REASON_MISSING_LABEL)) };
            let mut min = counts.values().copied().min().unwrap_or(0);
            if (counts.len() as i64) < c.min_domains {
                min = 0;
            }
            let skew = counts.get(v).copied().unwrap_or(0) + i64::from(*self_match) - min;
            if skew > c.max_skew {
                return Err(Rejection::resolvable(REASON));
            }
        }
        Ok(())
    }
}

struct ScoreState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    /// ln(domains + 2) per constraint: spreading over many domains weighs more.
    weights: Vec<f64>,
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, _pod: &Pod, _node: &NodeInfo, _: &Snapshot) -> i64 {
        0
    }

    fn pre_score(&self, pod: &Pod, snapshot: &Snapshot) -> CycleState {
        let cs = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() {
            return None;
        }
        let counts = count(&cs, pod, snapshot);
        let weights = counts.iter().map(|m| ((m.len() + 2) as f64).ln()).collect();
        Some(Box::new(ScoreState { constraints: cs, counts, weights }))
    }

    fn score_with(&self, _pod: &Pod, node: &NodeInfo, _: &Snapshot, state: &CycleState) -> i64 {
        let Some(s) = state.as_ref().and_then(|s| s.downcast_ref::<ScoreState>()) else { return 0 };
        let mut total = 0.0;
        for ((c, counts), w) in s.constraints.iter().zip(&s.counts).zip(&s.weights) {
            // A node without the key cannot be scored: the worst (marked negative).
            let Some(v) = node.labels().get(&c.key) else { return -1 };
            total += counts.get(v).copied().unwrap_or(0) as f64 * w + (c.max_skew - 1) as f64;
        }
        total.round() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = valid.fold((i64::MAX, 0i64), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    fn zone_node(name: &str, zone: &str) -> NodeInfo {
        node(serde_json::json!({"metadata": {"name": name, "labels": {"zone": zone}}}))
    }

    fn web(name: &str, when: &str, skew: i32) -> Pod {
        pod(serde_json::json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}}, "spec": {"containers": [],
            "topologySpreadConstraints": [{"maxSkew": skew, "topologyKey": "zone", "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}}))
    }

    #[test]
    fn do_not_schedule_keeps_the_skew_within_max_skew() {
        let mut a = zone_node("a", "z1");
        a.add_pod(Arc::new(web("w0", "DoNotSchedule", 1)));
        a.add_pod(Arc::new(web("w1", "DoNotSchedule", 1)));
        let b = zone_node("b", "z2");
        let bare = node(serde_json::json!({"metadata": {"name": "c"}}));
        let snap = Snapshot::with_nodes(vec![Arc::new(a), Arc::new(b), Arc::new(bare)]);
        let p = web("w2", "DoNotSchedule", 1);
        let state = PodTopologySpread.pre_filter(&p, &snap);
        let got: Vec<_> = snap.nodes.iter().map(|n| PodTopologySpread.filter_with(&p, n, &state)).collect();
        assert_eq!(got, vec![Err(Rejection::resolvable(REASON)), Ok(()), Err(Rejection::unresolvable(REASON_MISSING_LABEL))]);
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain() {
        let mut a = zone_node("a", "z1");
        a.add_pod(Arc::new(web("w0", "ScheduleAnyway", 1)));
        let snap = Snapshot::with_nodes(vec![Arc::new(a), Arc::new(zone_node("b", "z2"))]);
        let p = web("w1", "ScheduleAnyway", 1);
        let state = PodTopologySpread.pre_score(&p, &snap);
        let mut s: Vec<i64> = snap.nodes.iter().map(|n| PodTopologySpread.score_with(&p, n, &snap, &state)).collect();
        PodTopologySpread.normalize(&mut s);
        assert!(s[1] > s[0], "{s:?}");
        assert_eq!(s[1], 100);
    }
}
