//! The CRI layer: the CRI services as Rust traits (`api`), their implementation over the
//! image store and runtime (`images`, `runtime`), and the gRPC server that adapts them to
//! the wire (`grpc`, `server`). The node agent calls the same traits in-process.
pub mod api;
pub mod grpc;
pub mod images;
pub mod runtime;
pub mod server;
pub mod transfer;
