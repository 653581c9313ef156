//! Berth: a Kubernetes node (kubelet + container runtime) in one binary.
pub mod config;
pub mod cri;
pub mod image;
pub mod util;
pub mod runtime;
pub mod network;
pub mod logs;
pub mod node;
pub mod streaming;
