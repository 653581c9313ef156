//! NodeResourcesFit: the pod's requests (cpu, memory, ephemeral-storage, hugepages, extended
//! resources) must fit in what the node's pods leave of its allocatable, and one more pod must be
//! allowed (filter); the scoring strategy (LeastAllocated by default, MostAllocated,
//! RequestedToCapacityRatio) prefers nodes by how much of each weighted resource would be used.

use k8s_openapi::api::core::v1::Pod;

use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{CycleState, FilterPlugin, Rejection, ScorePlugin, MAX_NODE_SCORE};
use crate::scheduler::resources::{pod_requests, Resources};

pub const NAME: &str = "NodeResourcesFit";

/// One point of RequestedToCapacityRatio's shape: utilization (0-100) to score (0-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapePoint {
    pub utilization: i64,
    pub score: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
    RequestedToCapacityRatio(Vec<ShapePoint>),
}

pub struct NodeResourcesFit {
    pub strategy: Strategy,
    /// The resources scored, with their weights (default cpu 1, memory 1).
    pub resources: Vec<(String, i64)>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit { strategy: Strategy::LeastAllocated, resources: default_scored_resources() }
    }
}

pub fn default_scored_resources() -> Vec<(String, i64)> {
    vec![("cpu".into(), 1), ("memory".into(), 1)]
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
        fits(&pod_requests(pod, false), node)
    }

    /// The pod's requests, added up once per cycle rather than once per node.
    fn pre_filter(&self, pod: &Pod, _: &Snapshot) -> CycleState {
        Some(Box::new(pod_requests(pod, false)))
    }

    fn filter_with(&self, pod: &Pod, node: &NodeInfo, state: &CycleState) -> Result<(), Rejection> {
        match state.as_ref().and_then(|s| s.downcast_ref::<Resources>()) {
            Some(req) => fits(req, node),
            None => self.filter(pod, node),
        }
    }
}

/// Whether requests `req` fit what the node has left (upstream's reasons when not).
fn fits(req: &Resources, node: &NodeInfo) -> Result<(), Rejection> {
    let mut reasons = vec![];
    let mut unresolvable = false;
    if node.pods.len() as i64 + 1 > node.allowed_pods {
        reasons.push("Too many pods".to_string());
    }
    let mut check = |name: &str, want: i64| {
        let free = node.allocatable.get(name) - node.requested.get(name);
        if want > 0 && want > free {
            reasons.push(format!("Insufficient {name}"));
            unresolvable |= want > node.allocatable.get(name);
        }
    };
    check("cpu", req.milli_cpu);
    check("memory", req.memory);
    check("ephemeral-storage", req.ephemeral_storage);
    for (name, want) in &req.scalar {
        check(name, *want);
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection { reasons, resolvable: !unresolvable })
    }
}

/// Requested (with this pod) and allocatable of one resource on a node, as scoring counts them.
pub fn requested_and_allocatable(node: &NodeInfo, pod_req: &Resources, name: &str, node_req: &Resources) -> (i64, i64) {
    (node_req.get(name) + pod_req.get(name), node.allocatable.get(name))
}

fn shape_score(shape: &[ShapePoint], utilization: i64) -> i64 {
    let Some(first) = shape.first() else { return 0 };
    if utilization <= first.utilization {
        return first.score * 10;
    }
    for w in shape.windows(2) {
        let (a, b) = (w[0], w[1]);
        if utilization <= b.utilization {
            let span = (b.utilization - a.utilization).max(1);
            return (a.score * 10) + (b.score - a.score) * 10 * (utilization - a.utilization) / span;
        }
    }
    shape.last().map(|p| p.score * 10).unwrap_or(0)
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> i64 {
        self.score_requests(&pod_requests(pod, true), node)
    }

    fn pre_score(&self, pod: &Pod, _: &Snapshot) -> CycleState {
        Some(Box::new(pod_requests(pod, true)))
    }

    fn score_with(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot, state: &CycleState) -> i64 {
        match state.as_ref().and_then(|s| s.downcast_ref::<Resources>()) {
            Some(req) => self.score_requests(req, node),
            None => self.score(pod, node, snapshot),
        }
    }
}

impl NodeResourcesFit {
    /// The node's score for a pod requesting `pod_req` (non-zero requests, as upstream scores).
    fn score_requests(&self, pod_req: &Resources, node: &NodeInfo) -> i64 {
        let (mut total, mut weights) = (0i64, 0i64);
        for (name, weight) in &self.resources {
            let (requested, alloc) = requested_and_allocatable(node, pod_req, name, &node.non_zero_requested);
            if alloc == 0 {
                continue;
            }
            let s = match &self.strategy {
                Strategy::LeastAllocated if requested > alloc => 0,
                Strategy::LeastAllocated => (alloc - requested) * MAX_NODE_SCORE / alloc,
                Strategy::MostAllocated => requested.min(alloc) * MAX_NODE_SCORE / alloc,
                Strategy::RequestedToCapacityRatio(shape) => shape_score(shape, requested.min(alloc) * 100 / alloc),
            };
            total += s * weight;
            weights += weight;
        }
        if weights == 0 {
            0
        } else {
            total / weights
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    fn sized(cpu: &str, mem: &str, pods: &str) -> NodeInfo {
        node(serde_json::json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods, "example.com/gpu": "1"}}}))
    }

    fn asking(cpu: &str, mem: &str) -> Pod {
        pod(serde_json::json!({"metadata": {"name": format!("p-{cpu}-{mem}"), "namespace": "d"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}))
    }

    #[test]
    fn requests_must_fit_what_is_left() {
        let mut n = sized("2", "2Gi", "2");
        assert_eq!(NodeResourcesFit::default().filter(&asking("1", "1Gi"), &n), Ok(()));
        n.add_pod(Arc::new(asking("1500m", "1Gi")));
        let got = NodeResourcesFit::default().filter(&asking("1", "1536Mi"), &n);
        assert_eq!(got, Err(Rejection { reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()], resolvable: true }));
        let too_big = NodeResourcesFit::default().filter(&asking("3", "1Mi"), &n);
        assert_eq!(too_big, Err(Rejection { reasons: vec!["Insufficient cpu".into()], resolvable: false }), "more than the node has: preemption cannot help");
        n.add_pod(Arc::new(asking("1m", "1Mi")));
        assert_eq!(NodeResourcesFit::default().filter(&asking("1m", "1Mi"), &n), Err(Rejection { reasons: vec!["Too many pods".into()], resolvable: true }));
    }

    #[test]
    fn extended_resources_and_hugepages_are_counted() {
        let n = sized("2", "2Gi", "10");
        let gpu2 = pod(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"example.com/gpu": "2"}}}]}}));
        assert_eq!(NodeResourcesFit::default().filter(&gpu2, &n), Err(Rejection { reasons: vec!["Insufficient example.com/gpu".into()], resolvable: false }));
        let huge = pod(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"hugepages-2Mi": "2Mi"}}}]}}));
        assert_eq!(NodeResourcesFit::default().filter(&huge, &n), Err(Rejection { reasons: vec!["Insufficient hugepages-2Mi".into()], resolvable: false }));
    }

    #[test]
    fn strategies_score_as_upstream() {
        let snap = Snapshot::default();
        let n = sized("4", "4Gi", "10");
        let p = asking("1", "1Gi");
        assert_eq!(NodeResourcesFit::default().score(&p, &n, &snap), 75);
        let most = NodeResourcesFit { strategy: Strategy::MostAllocated, resources: default_scored_resources() };
        assert_eq!(most.score(&p, &n, &snap), 25);
        let shape = vec![ShapePoint { utilization: 0, score: 0 }, ShapePoint { utilization: 100, score: 10 }];
        let ratio = NodeResourcesFit { strategy: Strategy::RequestedToCapacityRatio(shape), resources: default_scored_resources() };
        assert_eq!(ratio.score(&p, &n, &snap), 25);
        let empty = pod(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}));
        // 100m of 4000m and 200Mi of 4Gi counted for a pod without requests.
        assert_eq!(NodeResourcesFit::default().score(&empty, &n, &snap), (97 + 95) / 2);
    }
}
