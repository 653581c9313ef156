//! NodeResourcesBalancedAllocation: prefers nodes where, with the pod, the fractions of cpu and
//! memory requested stay close to each other (score 100 × (1 − their standard deviation)).

use k8s_openapi::api::core::v1::Pod;

use super::node_resources_fit::default_scored_resources;
use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{CycleState, ScorePlugin, MAX_NODE_SCORE};
use crate::scheduler::resources::{pod_requests, Resources};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation {
    pub resources: Vec<(String, i64)>,
}

impl Default for BalancedAllocation {
    fn default() -> Self {
        BalancedAllocation { resources: default_scored_resources() }
    }
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> i64 {
        self.score_requests(&pod_requests(pod, false), node)
    }

    /// The pod's requests, added up once per cycle rather than once per node.
    fn pre_score(&self, pod: &Pod, _: &Snapshot) -> CycleState {
        Some(Box::new(pod_requests(pod, false)))
    }

    fn score_with(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot, state: &CycleState) -> i64 {
        match state.as_ref().and_then(|s| s.downcast_ref::<Resources>()) {
            Some(req) => self.score_requests(req, node),
            None => self.score(pod, node, snapshot),
        }
    }
}

impl BalancedAllocation {
    fn score_requests(&self, req: &Resources, node: &NodeInfo) -> i64 {
        let fractions: Vec<f64> = self
            .resources
            .iter()
            .filter_map(|(name, _)| {
                let alloc = node.allocatable.get(name);
                (alloc > 0).then(|| ((node.requested.get(name) + req.get(name)) as f64 / alloc as f64).min(1.0))
            })
            .collect();
        let std = match fractions.as_slice() {
            [] | [_] => 0.0,
            [a, b] => (a - b).abs() / 2.0,
            many => {
                let mean = many.iter().sum::<f64>() / many.len() as f64;
                (many.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / many.len() as f64).sqrt()
            }
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn balanced_use_scores_higher() {
        let snap = Snapshot::default();
        let n = node(serde_json::json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}));
        let even = pod(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}}));
        let skewed = pod(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}]}}));
        assert_eq!(BalancedAllocation::default().score(&even, &n, &snap), 100);
        assert_eq!(BalancedAllocation::default().score(&skewed, &n, &snap), 75);
    }
}
