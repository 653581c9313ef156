//! The pod cgroups of a node agent's pods (the kubelet's pod container manager's work), under
//! the runtime's cgroup driver: named, made and limited before the sandbox, removed after it.
//! The runtime's own pod cgroups (sandboxes without a parent) are `sandbox.rs`'s business.
use super::cgroup_paths;
use super::cgroups::{self, Cgroup};
use super::state::CgroupSpec;
use super::{internal, RtResult, Runtime, RuntimeError};
use crate::cri::v1 as cri;

impl Runtime {
    /// The cgroup parent of a node pod as the kubelet names it for this runtime's driver.
    pub fn node_pod_parent(&self, root: &str, qos: &str, uid: &str) -> RtResult<String> {
        cgroup_paths::node_pod_parent(self.cfg.systemd_cgroup, root, qos, uid).map_err(|e| RuntimeError::Invalid(e.to_string()))
    }

    fn parent_spec(&self, parent: &str) -> RtResult<CgroupSpec> {
        if parent.is_empty() {
            return Err(RuntimeError::Invalid("a pod cgroup parent is required".into()));
        }
        cgroup_paths::pod_cgroup(self.cfg.systemd_cgroup, parent, None, "").map(|(spec, _)| spec).map_err(|e| RuntimeError::Invalid(e.to_string()))
    }

    /// Make the pod cgroup `parent` and apply the pod's limits (device rules stay the
    /// containers'). On a blocking thread: cgroup files, or systemd over D-Bus.
    pub async fn ensure_node_pod_cgroup(&self, parent: &str, resources: &cri::LinuxContainerResources, max_pids: Option<i64>) -> RtResult<()> {
        let spec = self.parent_spec(parent)?;
        let mut res = super::spec::linux_resources(resources, false)?;
        res.set_devices(None);
        if let Some(limit) = max_pids {
            let mut pids = oci_spec::runtime::LinuxPids::default();
            pids.set_limit(limit);
            res.set_pids(Some(pids));
        }
        let applied = tokio::task::spawn_blocking(move || {
            let cg = Cgroup::open(&spec)?;
            // A slice comes into being with its first scope; systemd keeps the limits set
            // before that and applies them then.
            if !spec.systemd {
                cg.create()?;
            }
            cg.apply(&res)
        })
        .await
        .map_err(|e| internal("the pod cgroup", e))?;
        applied.map_err(|e| RuntimeError::Invalid(e.to_string()))
    }

    /// Remove the pod cgroup `parent` and whatever still runs in it; one that does not exist
    /// is fine. On a blocking thread: removal waits for killed processes to leave.
    pub async fn remove_node_pod_cgroup(&self, parent: &str) -> RtResult<()> {
        let spec = self.parent_spec(parent)?;
        let removed = tokio::task::spawn_blocking(move || {
            if spec.systemd && !cgroups::fs_path(&spec, "").exists() {
                return Ok(());
            }
            match Cgroup::open(&spec) {
                Ok(c) => c.remove(),
                Err(_) => Ok(()),
            }
        })
        .await
        .map_err(|e| internal("removing the pod cgroup", e))?;
        removed.map_err(|e| internal("removing the pod cgroup", e))
    }

    /// The network namespace a sandbox pinned; None for a host-network one.
    pub fn sandbox_netns(&self, id: &str) -> RtResult<Option<std::path::PathBuf>> {
        Ok(self.sandbox(id)?.net_ns)
    }
}
