//! The node's one door: the CRI services as Rust traits over the CRI message types.
//! The gRPC server adapts these to the wire; in-process callers use them directly. The Stream*
//! calls are provided: the List result, cut into chunks (`chunks`). Next to them, the little
//! the node agent needs of the runtime that CRI does not carry (`NodeRuntimeApi`): the pod
//! cgroups the kubelet's pod container manager owns, and the pod's network namespace.
use super::chunks::chunks;
use crate::cri::v1 as cri;

/// An error with the gRPC code a CRI client expects.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CriError {
    pub code: tonic::Code,
    pub message: String,
}

impl CriError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        CriError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::NotFound, message)
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> Self {
        tonic::Status::new(e.code, e.message)
    }
}

impl From<crate::runtime::RuntimeError> for CriError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        CriError::new(e.code(), e.to_string())
    }
}

impl From<crate::image::error::ImageError> for CriError {
    fn from(e: crate::image::error::ImageError) -> Self {
        CriError::new(e.code(), e.to_string())
    }
}

pub type CriResult<T> = Result<T, CriError>;

/// The QoS classes as the kubelet names them (and their pod cgroups).
pub use crate::runtime::cgroup_paths::{QOS_BESTEFFORT, QOS_BURSTABLE, QOS_GUARANTEED};

/// The limits of a pod cgroup: the sum of its containers' resources (device rules are the
/// containers' business and are ignored), and the pod's pids.max.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodCgroupLimits {
    pub resources: cri::LinuxContainerResources,
    /// pids.max; None: unlimited.
    pub max_pids: Option<i64>,
}

/// The CRI ImageService.
#[tonic::async_trait]
pub trait ImageApi: Send + Sync + 'static {
    async fn list_images(&self, req: cri::ListImagesRequest) -> CriResult<cri::ListImagesResponse>;
    async fn image_status(&self, req: cri::ImageStatusRequest) -> CriResult<cri::ImageStatusResponse>;
    async fn pull_image(&self, req: cri::PullImageRequest) -> CriResult<cri::PullImageResponse>;
    async fn remove_image(&self, req: cri::RemoveImageRequest) -> CriResult<cri::RemoveImageResponse>;
    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> CriResult<cri::ImageFsInfoResponse>;

    /// StreamImages: ListImages in chunks, one message each.
    async fn stream_images(&self, req: cri::StreamImagesRequest) -> CriResult<Vec<cri::StreamImagesResponse>> {
        let images = self.list_images(cri::ListImagesRequest { filter: req.filter }).await?.images;
        Ok(chunks(images).into_iter().map(|images| cri::StreamImagesResponse { images }).collect())
    }
}

/// The CRI RuntimeService.
#[tonic::async_trait]
pub trait RuntimeApi: Send + Sync + 'static {
    async fn version(&self, req: cri::VersionRequest) -> CriResult<cri::VersionResponse>;
    async fn status(&self, req: cri::StatusRequest) -> CriResult<cri::StatusResponse>;
    async fn runtime_config(&self, req: cri::RuntimeConfigRequest) -> CriResult<cri::RuntimeConfigResponse>;
    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> CriResult<cri::RunPodSandboxResponse>;
    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> CriResult<cri::StopPodSandboxResponse>;
    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> CriResult<cri::RemovePodSandboxResponse>;
    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> CriResult<cri::PodSandboxStatusResponse>;
    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> CriResult<cri::ListPodSandboxResponse>;
    async fn create_container(&self, req: cri::CreateContainerRequest) -> CriResult<cri::CreateContainerResponse>;
    async fn start_container(&self, req: cri::StartContainerRequest) -> CriResult<cri::StartContainerResponse>;
    async fn stop_container(&self, req: cri::StopContainerRequest) -> CriResult<cri::StopContainerResponse>;
    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> CriResult<cri::RemoveContainerResponse>;
    async fn list_containers(&self, req: cri::ListContainersRequest) -> CriResult<cri::ListContainersResponse>;
    async fn container_status(&self, req: cri::ContainerStatusRequest) -> CriResult<cri::ContainerStatusResponse>;
    async fn update_container_resources(&self, req: cri::UpdateContainerResourcesRequest) -> CriResult<cri::UpdateContainerResourcesResponse>;
    async fn reopen_container_log(&self, req: cri::ReopenContainerLogRequest) -> CriResult<cri::ReopenContainerLogResponse>;
    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> CriResult<cri::ExecSyncResponse>;
    async fn exec(&self, req: cri::ExecRequest) -> CriResult<cri::ExecResponse>;
    async fn attach(&self, req: cri::AttachRequest) -> CriResult<cri::AttachResponse>;
    async fn port_forward(&self, req: cri::PortForwardRequest) -> CriResult<cri::PortForwardResponse>;
    async fn container_stats(&self, req: cri::ContainerStatsRequest) -> CriResult<cri::ContainerStatsResponse>;
    async fn list_container_stats(&self, req: cri::ListContainerStatsRequest) -> CriResult<cri::ListContainerStatsResponse>;
    async fn pod_sandbox_stats(&self, req: cri::PodSandboxStatsRequest) -> CriResult<cri::PodSandboxStatsResponse>;
    async fn list_pod_sandbox_stats(&self, req: cri::ListPodSandboxStatsRequest) -> CriResult<cri::ListPodSandboxStatsResponse>;
    async fn update_runtime_config(&self, req: cri::UpdateRuntimeConfigRequest) -> CriResult<cri::UpdateRuntimeConfigResponse>;
    async fn list_metric_descriptors(&self, req: cri::ListMetricDescriptorsRequest) -> CriResult<cri::ListMetricDescriptorsResponse>;
    async fn list_pod_sandbox_metrics(&self, req: cri::ListPodSandboxMetricsRequest) -> CriResult<cri::ListPodSandboxMetricsResponse>;
    async fn update_pod_sandbox_resources(&self, req: cri::UpdatePodSandboxResourcesRequest) -> CriResult<cri::UpdatePodSandboxResourcesResponse>;

    /// StreamPodSandboxes: ListPodSandbox in chunks, one message each.
    async fn stream_pod_sandboxes(&self, req: cri::StreamPodSandboxesRequest) -> CriResult<Vec<cri::StreamPodSandboxesResponse>> {
        let items = self.list_pod_sandbox(cri::ListPodSandboxRequest { filter: req.filter }).await?.items;
        Ok(chunks(items).into_iter().map(|pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes }).collect())
    }

    /// StreamContainers: ListContainers in chunks.
    async fn stream_containers(&self, req: cri::StreamContainersRequest) -> CriResult<Vec<cri::StreamContainersResponse>> {
        let containers = self.list_containers(cri::ListContainersRequest { filter: req.filter }).await?.containers;
        Ok(chunks(containers).into_iter().map(|containers| cri::StreamContainersResponse { containers }).collect())
    }

    /// StreamContainerStats: ListContainerStats in chunks.
    async fn stream_container_stats(&self, req: cri::StreamContainerStatsRequest) -> CriResult<Vec<cri::StreamContainerStatsResponse>> {
        let stats = self.list_container_stats(cri::ListContainerStatsRequest { filter: req.filter }).await?.stats;
        Ok(chunks(stats).into_iter().map(|container_stats| cri::StreamContainerStatsResponse { container_stats }).collect())
    }

    /// StreamPodSandboxStats: ListPodSandboxStats in chunks.
    async fn stream_pod_sandbox_stats(&self, req: cri::StreamPodSandboxStatsRequest) -> CriResult<Vec<cri::StreamPodSandboxStatsResponse>> {
        let stats = self.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: req.filter }).await?.stats;
        Ok(chunks(stats).into_iter().map(|pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }).collect())
    }

    /// StreamPodSandboxMetrics: ListPodSandboxMetrics in chunks.
    async fn stream_pod_sandbox_metrics(&self, _req: cri::StreamPodSandboxMetricsRequest) -> CriResult<Vec<cri::StreamPodSandboxMetricsResponse>> {
        let metrics = self.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await?.pod_metrics;
        Ok(chunks(metrics).into_iter().map(|pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse { pod_sandbox_metrics }).collect())
    }
}

/// What a node agent needs of the runtime beyond the CRI services. Upstream's kubelet does
/// the first three itself (its pod container manager); here the runtime's cgroup layer does
/// them, under the runtime's cgroup driver (cgroupfs or systemd), so the node names no path.
#[tonic::async_trait]
pub trait NodeRuntimeApi: Send + Sync + 'static {
    /// The cgroup parent a pod's sandbox gets (`linux.cgroup_parent`), named as the kubelet
    /// names it for the runtime's driver: under the node's cgroup `root`, per QoS class.
    fn pod_cgroup_parent(&self, root: &str, qos: &str, uid: &str) -> CriResult<String>;
    /// Make the pod cgroup `parent` (a systemd slice comes into being with its first scope
    /// and keeps the limits set before) and apply `limits` to it.
    async fn ensure_pod_cgroup(&self, parent: &str, limits: PodCgroupLimits) -> CriResult<()>;
    /// Remove the pod cgroup `parent` and whatever still runs in it; one that does not exist is fine.
    async fn remove_pod_cgroup(&self, parent: &str) -> CriResult<()>;
    /// The sandbox's network namespace (for probes and hooks); None for a host-network pod.
    async fn pod_netns(&self, sandbox_id: &str) -> CriResult<Option<std::path::PathBuf>>;
    /// The runtime's streaming server, for the kubelet API to hand exec, attach and
    /// port-forward requests to in-process (None: the runtime streams nothing).
    fn streaming(&self) -> Option<std::sync::Arc<crate::streaming::StreamingServer>> {
        None
    }
}
