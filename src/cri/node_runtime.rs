//! `NodeRuntimeApi` over Berth's runtime: the node agent's pod cgroups and pod netns, a thin
//! adapter like the CRI services next to it. No mechanism lives here.
use super::api::{CriResult, NodeRuntimeApi, PodCgroupLimits};
use super::runtime::CriRuntime;

#[tonic::async_trait]
impl NodeRuntimeApi for CriRuntime {
    fn streaming(&self) -> Option<std::sync::Arc<crate::streaming::StreamingServer>> {
        Some(self.streaming_server())
    }

    fn pod_cgroup_parent(&self, root: &str, qos: &str, uid: &str) -> CriResult<String> {
        Ok(self.runtime().node_pod_parent(root, qos, uid)?)
    }

    async fn ensure_pod_cgroup(&self, parent: &str, limits: PodCgroupLimits) -> CriResult<()> {
        Ok(self.runtime().ensure_node_pod_cgroup(parent, &limits.resources, limits.max_pids).await?)
    }

    async fn remove_pod_cgroup(&self, parent: &str) -> CriResult<()> {
        Ok(self.runtime().remove_node_pod_cgroup(parent).await?)
    }

    async fn pod_netns(&self, sandbox_id: &str) -> CriResult<Option<std::path::PathBuf>> {
        Ok(self.runtime().sandbox_netns(sandbox_id)?)
    }
}
