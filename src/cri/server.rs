//! The CRI socket: a gRPC server on a unix socket (mode 0660) serving the CRI ImageService
//! and RuntimeService and Berth's Transfer service, until told to stop.
use super::api::{ImageApi, RuntimeApi};
use super::grpc::{ImageGrpc, RuntimeGrpc};
use super::transfer::{proto::transfer_server::TransferServer, TransferService};
use crate::cri::v1::image_service_server::ImageServiceServer;
use crate::cri::v1::runtime_service_server::RuntimeServiceServer;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("CRI socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("another berth is already serving {0}")]
    InUse(PathBuf),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Largest gRPC message accepted or sent (the kubelet uses 16 MiB too).
const MAX_MESSAGE: usize = 16 << 20;

/// Bind the socket, refusing to steal it from a live server; a stale file is replaced.
pub async fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let err = |source| ServeError::Socket { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Serve until `shutdown` resolves, then remove the socket file.
pub async fn serve<I: ImageApi, R: RuntimeApi>(
    listener: tokio::net::UnixListener,
    path: &Path,
    images: Arc<I>,
    runtime: Arc<R>,
    transfer: TransferService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(ImageServiceServer::new(ImageGrpc(images)).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
        .add_service(RuntimeServiceServer::new(RuntimeGrpc(runtime)).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
        .add_service(TransferServer::new(transfer))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(path);
    Ok(result?)
}
