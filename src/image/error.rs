//! Errors of the image layer, each mapped to the gRPC code a CRI client expects.
use super::content::ContentError;
use super::oci::DocumentError;
use super::reference::ReferenceError;
use super::registry::RegistryError;
use super::unpack::UnpackError;
use std::path::PathBuf;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference: {0}")]
    InvalidReference(#[from] ReferenceError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image {image} is in use by container(s) {containers}")]
    InUse { image: String, containers: String },
    #[error("pulling {image}: {source}")]
    Registry { image: String, source: RegistryError },
    #[error("{0}")]
    Document(#[from] DocumentError),
    #[error("no manifest for platform {0} in the image index")]
    NoMatchingPlatform(String),
    #[error("layer {digest}: {source}")]
    Unpack { digest: String, source: UnpackError },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("{0}")]
    Content(#[from] ContentError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Internal(String),
}

impl ImageError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    /// The gRPC status code for this error.
    pub fn code(&self) -> Code {
        match self {
            ImageError::InvalidReference(_) | ImageError::InvalidArgument(_) | ImageError::Document(_) => Code::InvalidArgument,
            ImageError::NotFound(_) | ImageError::NoMatchingPlatform(_) => Code::NotFound,
            ImageError::InUse { .. } => Code::FailedPrecondition,
            ImageError::Registry { source, .. } => match source {
                RegistryError::NotFound(_) => Code::NotFound,
                RegistryError::Unauthorized(_) => Code::Unauthenticated,
                RegistryError::Unavailable(_) => Code::Unavailable,
                RegistryError::InvalidConfig(_) => Code::InvalidArgument,
                RegistryError::DigestMismatch { .. } => Code::DataLoss,
                _ => Code::Unknown,
            },
            ImageError::Unpack { .. } | ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. } => Code::DataLoss,
            ImageError::Content(ContentError::DigestMismatch { .. }) => Code::DataLoss,
            ImageError::Content(_) | ImageError::Io { .. } | ImageError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ImageError> for tonic::Status {
    fn from(e: ImageError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
