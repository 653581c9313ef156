//! ImageLocality: prefers nodes that already have the pod's images, by their size scaled by how
//! many nodes have them (an image everywhere is no reason to pick one node), between upstream's
//! thresholds of 23 MB and 1000 MB per container.

use k8s_openapi::api::core::v1::Pod;

use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{ScorePlugin, MAX_NODE_SCORE};

pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// `image` with ":latest" when it names no tag or digest.
pub fn normalized(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The size of `image` on the node, when one of its image names is it.
pub fn node_image_size(node: &NodeInfo, image: &str) -> Option<i64> {
    let want = normalized(image);
    let full = if want.contains('/') { format!("docker.io/{want}") } else { format!("docker.io/library/{want}") };
    let images = node.node.status.as_ref().and_then(|s| s.images.as_deref()).unwrap_or_default();
    images.iter().find(|i| i.names.iter().flatten().any(|n| *n == want || *n == full)).map(|i| i.size_bytes.unwrap_or(0))
}

pub struct ImageLocality;

impl ScorePlugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> i64 {
        let Some(spec) = pod.spec.as_ref() else { return 0 };
        let containers: Vec<_> = spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect();
        let total = snapshot.nodes.len().max(1) as f64;
        let mut sum = 0i64;
        for c in &containers {
            let Some(image) = c.image.as_deref() else { continue };
            if let Some(size) = node_image_size(node, image) {
                let spread = snapshot.image_spread(image).max(1) as f64;
                sum += (size as f64 * spread / total) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * containers.len().max(1) as i64;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn nodes_with_the_image_score_by_size_and_spread() {
        let with =
            node(serde_json::json!({"metadata": {"name": "a"}, "status": {"images": [{"names": ["docker.io/library/big:latest"], "sizeBytes": 523 * MB}]}}));
        let without = node(serde_json::json!({"metadata": {"name": "b"}}));
        let snap = Snapshot::with_nodes(vec![Arc::new(with.clone()), Arc::new(without.clone())]);
        let p = pod(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "big"}]}}));
        // 523 MB on 1 of 2 nodes: 261.5 MB scaled between 23 MB and 1000 MB.
        assert_eq!(ImageLocality.score(&p, &with, &snap), 100 * ((523 * MB / 2) - MIN_THRESHOLD) / (MAX_CONTAINER_THRESHOLD - MIN_THRESHOLD));
        assert_eq!(ImageLocality.score(&p, &without, &snap), 0);
        assert_eq!(normalized("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(normalized("app@sha256:abc"), "app@sha256:abc");
    }
}
