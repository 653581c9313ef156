//! Berth: a Kubernetes node (kubelet + container runtime) in one binary.
pub mod config;
pub mod cri;
pub mod dns;
pub mod image;
pub mod logs;
pub mod network;
pub mod node;
pub mod proxy;
pub mod runtime;
pub mod streaming;
pub mod util;
