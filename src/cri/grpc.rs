//! Thin gRPC adapters: each RPC opens a tracing span, calls the CRI trait, and maps the
//! error to a gRPC status. No logic lives here.
use super::api::{ImageApi, RuntimeApi};
use crate::cri::v1 as cri;
use crate::cri::v1::image_service_server::ImageService;
use crate::cri::v1::runtime_service_server::RuntimeService;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Serves an `ImageApi` as the CRI ImageService.
pub struct ImageGrpc<T>(pub Arc<T>);

/// Serves a `RuntimeApi` as the CRI RuntimeService.
pub struct RuntimeGrpc<T>(pub Arc<T>);

/// What an RPC method returns once async_trait has expanded it. The macros below spell the
/// methods out in that form because attribute macros do not see into macro calls.
type RpcFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<T>, Status>> + Send + 'a>>;

/// One RPC delegated to the trait, inside a span named after it.
macro_rules! delegate {
    ($name:ident, $req:ty, $resp:ty) => {
        fn $name<'a, 'async_trait>(&'a self, request: Request<$req>) -> RpcFuture<'async_trait, $resp>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            let span = tracing::info_span!("cri", rpc = stringify!($name));
            Box::pin(async move {
                let req = request.into_inner();
                tracing::debug!(?req, "request");
                match self.0.$name(req).await {
                    Ok(resp) => Ok(Response::new(resp)),
                    Err(e) => {
                        tracing::warn!(code = ?e.code, error = %e.message, "failed");
                        Err(e.into())
                    }
                }
            }
            .instrument(span))
        }
    };
}

/// The messages of a server-streaming RPC, each sent as it is.
type Chunks<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// One server-streaming RPC delegated to the trait, which returns every message of the stream.
macro_rules! chunked {
    ($name:ident, $stream:ident, $req:ty, $resp:ty) => {
        type $stream = Chunks<$resp>;

        fn $name<'a, 'async_trait>(&'a self, request: Request<$req>) -> RpcFuture<'async_trait, Self::$stream>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            let span = tracing::info_span!("cri", rpc = stringify!($name));
            Box::pin(async move {
                let req = request.into_inner();
                tracing::debug!(?req, "request");
                match self.0.$name(req).await {
                    Ok(messages) => {
                        tracing::debug!(messages = messages.len(), "streaming");
                        let stream: Chunks<$resp> = Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)));
                        Ok(Response::new(stream))
                    }
                    Err(e) => {
                        tracing::warn!(code = ?e.code, error = %e.message, "failed");
                        Err(e.into())
                    }
                }
            }
            .instrument(span))
        }
    };
}

/// An RPC Berth does not support: Unimplemented, with the reason.
macro_rules! unsupported {
    ($name:ident, $req:ty, $resp:ty, $why:literal) => {
        fn $name<'a, 'async_trait>(&'a self, _request: Request<$req>) -> RpcFuture<'async_trait, $resp>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            let _span = tracing::info_span!("cri", rpc = stringify!($name)).entered();
            tracing::debug!($why);
            Box::pin(std::future::ready(Err(Status::unimplemented($why))))
        }
    };
}

#[tonic::async_trait]
impl<T: ImageApi> ImageService for ImageGrpc<T> {
    delegate!(list_images, cri::ListImagesRequest, cri::ListImagesResponse);
    delegate!(image_status, cri::ImageStatusRequest, cri::ImageStatusResponse);
    delegate!(pull_image, cri::PullImageRequest, cri::PullImageResponse);
    delegate!(remove_image, cri::RemoveImageRequest, cri::RemoveImageResponse);
    delegate!(image_fs_info, cri::ImageFsInfoRequest, cri::ImageFsInfoResponse);
    chunked!(stream_images, StreamImagesStream, cri::StreamImagesRequest, cri::StreamImagesResponse);
}

#[tonic::async_trait]
impl<T: RuntimeApi> RuntimeService for RuntimeGrpc<T> {
    delegate!(version, cri::VersionRequest, cri::VersionResponse);
    delegate!(status, cri::StatusRequest, cri::StatusResponse);
    delegate!(runtime_config, cri::RuntimeConfigRequest, cri::RuntimeConfigResponse);
    delegate!(run_pod_sandbox, cri::RunPodSandboxRequest, cri::RunPodSandboxResponse);
    delegate!(stop_pod_sandbox, cri::StopPodSandboxRequest, cri::StopPodSandboxResponse);
    delegate!(remove_pod_sandbox, cri::RemovePodSandboxRequest, cri::RemovePodSandboxResponse);
    delegate!(pod_sandbox_status, cri::PodSandboxStatusRequest, cri::PodSandboxStatusResponse);
    delegate!(list_pod_sandbox, cri::ListPodSandboxRequest, cri::ListPodSandboxResponse);
    delegate!(create_container, cri::CreateContainerRequest, cri::CreateContainerResponse);
    delegate!(start_container, cri::StartContainerRequest, cri::StartContainerResponse);
    delegate!(stop_container, cri::StopContainerRequest, cri::StopContainerResponse);
    delegate!(remove_container, cri::RemoveContainerRequest, cri::RemoveContainerResponse);
    delegate!(list_containers, cri::ListContainersRequest, cri::ListContainersResponse);
    delegate!(container_status, cri::ContainerStatusRequest, cri::ContainerStatusResponse);
    delegate!(update_container_resources, cri::UpdateContainerResourcesRequest, cri::UpdateContainerResourcesResponse);
    delegate!(reopen_container_log, cri::ReopenContainerLogRequest, cri::ReopenContainerLogResponse);
    delegate!(exec_sync, cri::ExecSyncRequest, cri::ExecSyncResponse);
    delegate!(exec, cri::ExecRequest, cri::ExecResponse);
    delegate!(attach, cri::AttachRequest, cri::AttachResponse);
    delegate!(port_forward, cri::PortForwardRequest, cri::PortForwardResponse);
    delegate!(container_stats, cri::ContainerStatsRequest, cri::ContainerStatsResponse);
    delegate!(list_container_stats, cri::ListContainerStatsRequest, cri::ListContainerStatsResponse);
    delegate!(pod_sandbox_stats, cri::PodSandboxStatsRequest, cri::PodSandboxStatsResponse);
    delegate!(list_pod_sandbox_stats, cri::ListPodSandboxStatsRequest, cri::ListPodSandboxStatsResponse);
    delegate!(update_runtime_config, cri::UpdateRuntimeConfigRequest, cri::UpdateRuntimeConfigResponse);
    delegate!(list_metric_descriptors, cri::ListMetricDescriptorsRequest, cri::ListMetricDescriptorsResponse);
    delegate!(list_pod_sandbox_metrics, cri::ListPodSandboxMetricsRequest, cri::ListPodSandboxMetricsResponse);
    delegate!(update_pod_sandbox_resources, cri::UpdatePodSandboxResourcesRequest, cri::UpdatePodSandboxResourcesResponse);
    chunked!(stream_pod_sandboxes, StreamPodSandboxesStream, cri::StreamPodSandboxesRequest, cri::StreamPodSandboxesResponse);
    chunked!(stream_containers, StreamContainersStream, cri::StreamContainersRequest, cri::StreamContainersResponse);
    chunked!(stream_container_stats, StreamContainerStatsStream, cri::StreamContainerStatsRequest, cri::StreamContainerStatsResponse);
    chunked!(stream_pod_sandbox_stats, StreamPodSandboxStatsStream, cri::StreamPodSandboxStatsRequest, cri::StreamPodSandboxStatsResponse);
    chunked!(stream_pod_sandbox_metrics, StreamPodSandboxMetricsStream, cri::StreamPodSandboxMetricsRequest, cri::StreamPodSandboxMetricsResponse);
    unsupported!(checkpoint_container, cri::CheckpointContainerRequest, cri::CheckpointContainerResponse, "checkpointing is not supported by berth");
    unsupported!(checkpoint_pod, cri::CheckpointPodRequest, cri::CheckpointPodResponse, "checkpointing is not supported by berth");
    unsupported!(restore_pod, cri::RestorePodRequest, cri::RestorePodResponse, "checkpointing is not supported by berth");

    type GetContainerEventsStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(&self, _request: Request<cri::GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(Status::unimplemented("get_container_events: container events are not served by this build yet"))
    }
}
