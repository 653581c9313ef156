//! The node's one door: the CRI services as Rust traits over the CRI message types.
//! The gRPC server adapts these to the wire; in-process callers use them directly.
use k8s_cri::v1 as cri;

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

impl From<crate::image::error::ImageError> for CriError {
    fn from(e: crate::image::error::ImageError) -> Self {
        CriError::new(e.code(), e.to_string())
    }
}

pub type CriResult<T> = Result<T, CriError>;

/// The CRI ImageService.
#[tonic::async_trait]
pub trait ImageApi: Send + Sync + 'static {
    async fn list_images(&self, req: cri::ListImagesRequest) -> CriResult<cri::ListImagesResponse>;
    async fn image_status(&self, req: cri::ImageStatusRequest) -> CriResult<cri::ImageStatusResponse>;
    async fn pull_image(&self, req: cri::PullImageRequest) -> CriResult<cri::PullImageResponse>;
    async fn remove_image(&self, req: cri::RemoveImageRequest) -> CriResult<cri::RemoveImageResponse>;
    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> CriResult<cri::ImageFsInfoResponse>;
}

/// The parts of the CRI RuntimeService this build serves.
#[tonic::async_trait]
pub trait RuntimeApi: Send + Sync + 'static {
    async fn version(&self, req: cri::VersionRequest) -> CriResult<cri::VersionResponse>;
    async fn status(&self, req: cri::StatusRequest) -> CriResult<cri::StatusResponse>;
    async fn runtime_config(&self, req: cri::RuntimeConfigRequest) -> CriResult<cri::RuntimeConfigResponse>;
}
