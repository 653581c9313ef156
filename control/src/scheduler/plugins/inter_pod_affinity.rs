//! InterPodAffinity: pod affinity and anti-affinity between pods, by topology domain (the value
//! of a node label, any topologyKey). Filter: the pod's required affinity terms need a matching
//! pod in the node's domain (unless no pod matches and the pod matches its own terms), its
//! required anti-affinity terms no matching pod there, and no existing pod's required
//! anti-affinity may match it in that domain. Score: preferred terms of the pod and of existing
//! pods (and existing pods' required affinity, weight 1) add or subtract their weights for the
//! domains they name, scaled between the lowest and highest node.
//! Terms select pods with labelSelector in `namespaces` ∪ `namespaceSelector` (the pod's own
//! namespace when both are empty).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_apiserver::selector::LabelSelector;
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{CycleState, FilterPlugin, Rejection, ScorePlugin, MAX_NODE_SCORE};

pub const NAME: &str = "InterPodAffinity";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// Weight of an existing pod's required affinity term when scoring (upstream's default).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// A term resolved against the pod that owns it.
struct Term {
    selector: Option<LabelSelector>,
    namespaces: Vec<String>,
    /// namespaceSelector (None: not given).
    ns_selector: Option<LabelSelector>,
    topology_key: String,
}

impl Term {
    fn new(t: &PodAffinityTerm, owner: &Pod) -> Term {
        let selector = t.label_selector.as_ref().and_then(|s| LabelSelector::from_api(s).ok());
        let ns_selector = t.namespace_selector.as_ref().and_then(|s| LabelSelector::from_api(s).ok());
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(owner.metadata.namespace.clone().unwrap_or_default());
        }
        Term { selector, namespaces, ns_selector, topology_key: t.topology_key.clone() }
    }

    fn matches(&self, pod: &Pod, namespaces: &HashMap<String, BTreeMap<String, String>>) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let in_ns = self.namespaces.iter().any(|n| n == ns) || self.ns_selector.as_ref().is_some_and(|s| s.matches(namespaces.get(ns).unwrap_or(&EMPTY)));
        let labels = pod.metadata.labels.as_ref().unwrap_or(&EMPTY);
        in_ns && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

fn required(pod: &Pod) -> (Vec<Term>, Vec<Term>) {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let aff = a.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| p.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default();
    let anti = a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|p| p.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default();
    (aff.iter().map(|t| Term::new(t, pod)).collect(), anti.iter().map(|t| Term::new(t, pod)).collect())
}

/// Terms with their weights.
type Weighted = Vec<(Term, i64)>;

fn preferred(pod: &Pod) -> (Weighted, Weighted) {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let conv = |ts: &[WeightedPodAffinityTerm]| ts.iter().map(|w| (Term::new(&w.pod_affinity_term, pod), w.weight as i64)).collect::<Vec<_>>();
    let aff = a.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| p.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default();
    let anti = a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|p| p.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default();
    (conv(aff), conv(anti))
}

type Pair = (String, String);

/// Per-cycle counts (upstream's preFilterState).
struct FilterState {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    /// Per affinity term: domain value -> matching pods.
    affinity_counts: Vec<HashMap<String, i64>>,
    anti_counts: Vec<HashMap<String, i64>>,
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    existing_anti: HashMap<Pair, i64>,
    /// Does the pod match all its own affinity terms?
    self_match: bool,
}

pub struct InterPodAffinity;

fn all_pods(snapshot: &Snapshot) -> impl Iterator<Item = (&Arc<NodeInfo>, &Arc<Pod>)> {
    snapshot.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| (n, p)))
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _pod: &Pod, _node: &NodeInfo) -> Result<(), Rejection> {
        Ok(())
    }

    fn pre_filter(&self, pod: &Pod, snapshot: &Snapshot) -> CycleState {
        let (affinity, anti) = required(pod);
        let mut existing_anti: HashMap<Pair, i64> = HashMap::new();
        let nodes: &[Arc<NodeInfo>] = if snapshot.pods_with_affinity == 0 { &[] } else { &snapshot.nodes };
        for node in nodes {
            for other in &node.pods_with_affinity {
                for t in required(other).1 {
                    if let Some(v) = node.labels().get(&t.topology_key) {
                        if t.matches(pod, &snapshot.namespaces) {
                            *existing_anti.entry((t.topology_key.clone(), v.clone())).or_default() += 1;
                        }
                    }
                }
            }
        }
        let mut affinity_counts = vec![HashMap::new(); affinity.len()];
        let mut anti_counts = vec![HashMap::new(); anti.len()];
        if !affinity.is_empty() || !anti.is_empty() {
            for (node, other) in all_pods(snapshot) {
                for (t, counts) in affinity.iter().zip(affinity_counts.iter_mut()).chain(anti.iter().zip(anti_counts.iter_mut())) {
                    if let Some(v) = node.labels().get(&t.topology_key) {
                        if t.matches(other, &snapshot.namespaces) {
                            *counts.entry(v.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
        if affinity.is_empty() && anti.is_empty() && existing_anti.is_empty() {
            return None;
        }
        let self_match = affinity.iter().all(|t| t.matches(pod, &snapshot.namespaces));
        Some(Box::new(FilterState { affinity, anti, affinity_counts, anti_counts, existing_anti, self_match }))
    }

    fn filter_with(&self, _pod: &Pod, node: &NodeInfo, state: &CycleState) -> Result<(), Rejection> {
        let Some(s) = state.as_ref().and_then(|s| s.downcast_ref::<FilterState>()) else { return Ok(()) };
        let labels = node.labels();
        if labels.iter().any(|(k, v)| s.existing_anti.get(&(k.clone(), v.clone())).is_some_and(|c| *c > 0)) {
            return Err(Rejection::resolvable(REASON_EXISTING_ANTI_AFFINITY));
        }
        for (t, counts) in s.anti.iter().zip(&s.anti_counts) {
            if labels.get(&t.topology_key).is_some_and(|v| counts.get(v).is_some_and(|c| *c > 0)) {
                return Err(Rejection::resolvable(REASON_ANTI_AFFINITY));
            }
        }
        let satisfied =
            s.affinity.iter().zip(&s.affinity_counts).all(|(t, counts)| labels.get(&t.topology_key).is_some_and(|v| counts.get(v).is_some_and(|c| *c > 0)));
        if !satisfied {
            // The first pod of a group that wants to be together may start anywhere its terms
            // could hold.
            let none_match = s.affinity_counts.iter().all(|c| c.is_empty());
            let has_keys = s.affinity.iter().all(|t| labels.contains_key(&t.topology_key));
            if !(none_match && s.self_match && has_keys) {
                return Err(Rejection::unresolvable(REASON_AFFINITY));
            }
        }
        Ok(())
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, _pod: &Pod, _node: &NodeInfo, _: &Snapshot) -> i64 {
        0
    }

    fn pre_score(&self, pod: &Pod, snapshot: &Snapshot) -> CycleState {
        let (pref_aff, pref_anti) = preferred(pod);
        let mut scores: HashMap<Pair, i64> = HashMap::new();
        let mut add = |node: &NodeInfo, key: &str, w: i64| {
            if let Some(v) = node.labels().get(key) {
                *scores.entry((key.to_string(), v.clone())).or_default() += w;
            }
        };
        let own_terms = !pref_aff.is_empty() || !pref_anti.is_empty();
        if !own_terms && snapshot.pods_with_affinity == 0 {
            return None;
        }
        for node in snapshot.nodes.iter() {
            // The incoming pod's preferences count every existing pod; existing pods'
            // preferences only those that carry terms.
            let pods: &[Arc<Pod>] = if own_terms { &node.pods } else { &node.pods_with_affinity };
            for other in pods {
                for (t, w) in &pref_aff {
                    if t.matches(other, &snapshot.namespaces) {
                        add(node, &t.topology_key, *w);
                    }
                }
                for (t, w) in &pref_anti {
                    if t.matches(other, &snapshot.namespaces) {
                        add(node, &t.topology_key, -*w);
                    }
                }
                if !crate::scheduler::cache::has_pod_affinity(other) {
                    continue;
                }
                for t in required(other).0 {
                    if t.matches(pod, &snapshot.namespaces) {
                        add(node, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                let (oa, on) = preferred(other);
                for (t, w) in oa {
                    if t.matches(pod, &snapshot.namespaces) {
                        add(node, &t.topology_key, w);
                    }
                }
                for (t, w) in on {
                    if t.matches(pod, &snapshot.namespaces) {
                        add(node, &t.topology_key, -w);
                    }
                }
            }
        }
        if scores.is_empty() {
            return None;
        }
        Some(Box::new(scores))
    }

    fn score_with(&self, _pod: &Pod, node: &NodeInfo, _: &Snapshot, state: &CycleState) -> i64 {
        let Some(scores) = state.as_ref().and_then(|s| s.downcast_ref::<HashMap<Pair, i64>>()) else { return 0 };
        node.labels().iter().filter_map(|(k, v)| scores.get(&(k.clone(), v.clone()))).sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        let (min, max) = (scores.iter().copied().min().unwrap_or(0), scores.iter().copied().max().unwrap_or(0));
        for s in scores.iter_mut() {
            *s = if max > min { MAX_NODE_SCORE * (*s - min) / (max - min) } else { 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    fn zone_node(name: &str, zone: &str) -> NodeInfo {
        node(serde_json::json!({"metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}}}))
    }

    fn labelled(name: &str, ns: &str, app: &str, affinity: serde_json::Value) -> Arc<Pod> {
        Arc::new(pod(
            serde_json::json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": app}}, "spec": {"containers": [], "affinity": affinity}}),
        ))
    }

    fn snapshot(nodes: Vec<NodeInfo>) -> Snapshot {
        Snapshot::with_nodes(nodes.into_iter().map(Arc::new).collect())
    }

    fn run(p: &Pod, snap: &Snapshot) -> Vec<Result<(), Rejection>> {
        let state = InterPodAffinity.pre_filter(p, snap);
        snap.nodes.iter().map(|n| InterPodAffinity.filter_with(p, n, &state)).collect()
    }

    #[test]
    fn required_anti_affinity_spreads_by_hostname_and_existing_pods_are_honoured() {
        let mut a = zone_node("a", "z1");
        a.add_pod(labelled(
            "web-0",
            "d",
            "web",
            serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}),
        ));
        let snap = snapshot(vec![a, zone_node("b", "z1")]);
        let anti = serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        let web1 = labelled("web-1", "d", "web", anti);
        assert_eq!(run(&web1, &snap), vec![Err(Rejection::resolvable(REASON_EXISTING_ANTI_AFFINITY)), Ok(())]);
        // A pod without terms but matched by web-0's anti-affinity is kept off a too.
        let plain = labelled("x", "d", "web", serde_json::json!(null));
        assert_eq!(run(&plain, &snap)[0], Err(Rejection::resolvable(REASON_EXISTING_ANTI_AFFINITY)));
        // Other namespaces are not selected by default.
        let other_ns = labelled("x", "e", "web", serde_json::json!(null));
        assert_eq!(run(&other_ns, &snap), vec![Ok(()), Ok(())]);
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_domain_except_for_the_first() {
        let mut a = zone_node("a", "z1");
        a.add_pod(labelled("db", "d", "db", serde_json::json!(null)));
        let snap = snapshot(vec![a, zone_node("b", "z1"), zone_node("c", "z2")]);
        let near_db = labelled(
            "app",
            "d",
            "app",
            serde_json::json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}, "topologyKey": "zone"}]}}),
        );
        assert_eq!(run(&near_db, &snap), vec![Ok(()), Ok(()), Err(Rejection::unresolvable(REASON_AFFINITY))]);
        let first = labelled(
            "cache-0",
            "d",
            "cache",
            serde_json::json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}),
        );
        assert_eq!(run(&first, &snap), vec![Ok(()), Ok(()), Ok(())], "no pod matches yet and it matches itself");
        let by_ns_selector = labelled(
            "app",
            "d",
            "app",
            serde_json::json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {}, "topologyKey": "zone"}]}}),
        );
        assert_eq!(run(&by_ns_selector, &snap)[2], Err(Rejection::unresolvable(REASON_AFFINITY)));
        assert_eq!(run(&by_ns_selector, &snap)[1], Ok(()));
    }

    #[test]
    fn preferred_terms_score_domains() {
        let mut a = zone_node("a", "z1");
        a.add_pod(labelled("db", "d", "db", serde_json::json!(null)));
        let snap = snapshot(vec![a, zone_node("b", "z2")]);
        let p = labelled(
            "app",
            "d",
            "app",
            serde_json::json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}),
        );
        let state = InterPodAffinity.pre_score(&p, &snap);
        let mut s: Vec<i64> = snap.nodes.iter().map(|n| InterPodAffinity.score_with(&p, n, &snap, &state)).collect();
        assert_eq!(s, vec![-50, 0]);
        InterPodAffinity.normalize(&mut s);
        assert_eq!(s, vec![0, 100]);
    }
}
