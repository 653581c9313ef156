//! The node as a member of a cluster: what a kubelet does against the apiserver, through a
//! kube-rs client (the in-process door inside `berth server`, HTTPS for a joined agent).
//!
//! - [`registration`]: the Node object (addresses, capacity, allocatable, nodeInfo, labels)
//!   registered at start, its status conditions kept current, and the heartbeat: the node's
//!   Lease in kube-node-lease renewed every 10 s.
//! - [`pods`]: the pods bound to this node (`spec.nodeName`) and the ConfigMaps and Secrets
//!   their volumes use, followed with watches, published as one [`ClusterPods`] that the pod
//!   workers take as their second source next to the manifest directory.
//! - [`tokens`]: ServiceAccount tokens for the pods' token projections, from the TokenRequest
//!   API, renewed before they expire; published with the pods.
//! - [`events`]: the pods' events as core/v1 Events, repeats counted, as the kubelet records them.
//! - [`join`]: TLS bootstrap of a joining agent: the CA from kube-public/cluster-info checked
//!   with the join token, then a client certificate from the kubelet client signer.
//! - [`mirror`]: a mirror pod in the API for each static pod of the manifest directory, with
//!   its status; made again when deleted, removed with its manifest.
//! - [`status_sync`]: what the workers publish goes back as pods/status patches, only when it
//!   changed; a pod whose deletion was asked for is deleted for good (grace 0) once its
//!   containers are stopped, as the kubelet finishes a graceful deletion.

pub mod events;
pub mod flags;
pub mod join;
pub mod mirror;
pub mod pods;
pub mod registration;
pub mod rotation;
pub mod status_sync;
pub mod tokens;

pub use pods::ClusterPods;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::NodeShared;

/// How the node reaches the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    pub client: kube::Client,
    pub node_name: String,
    pub node_ip: String,
    /// The port of the kubelet API (status.daemonEndpoints: where the apiserver reaches it).
    pub kubelet_port: u16,
    /// Extra labels and taints of the Node at registration (`--node-labels`, `--register-with-taints`).
    pub labels: std::collections::BTreeMap<String, String>,
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// The pod CIDR this node was given locally (`--pod-cidr`): registered as its
    /// spec.podCIDR. Without one the node takes the CIDR the cluster allocates it.
    pub pod_cidr: Option<String>,
    /// Set to true once the node has reported itself Ready (and false if it stops being so):
    /// what the systemd unit's READY=1 waits for.
    pub ready: watch::Sender<bool>,
}

/// Starts following the cluster: the pod watch (its snapshots on the returned channel), the
/// registration and heartbeat, and the status sync. Each task ends when `stop` fires.
pub fn start(cfg: ClusterConfig, shared: Arc<NodeShared>, stop: watch::Receiver<bool>) -> watch::Receiver<ClusterPods> {
    let (raw_tx, raw_rx) = watch::channel(ClusterPods::default());
    let (tx, rx) = watch::channel(ClusterPods::default());
    let span = tracing::info_span!("cluster", node = %cfg.node_name);
    tokio::spawn(pods::follow(cfg.client.clone(), cfg.node_name.clone(), raw_tx, stop.clone()).instrument(span.clone()));
    tokio::spawn(tokens::run(cfg.client.clone(), raw_rx, tx, stop.clone()).instrument(span.clone()));
    tokio::spawn(registration::run(cfg.clone(), shared.clone(), stop.clone()).instrument(span.clone()));
    tokio::spawn(events::run(cfg.client.clone(), shared.clone(), rx.clone(), stop.clone()).instrument(span.clone()));
    tokio::spawn(mirror::run(cfg.client.clone(), cfg.node_name.clone(), shared.clone(), rx.clone(), stop.clone()).instrument(span.clone()));
    tokio::spawn(status_sync::run(cfg.client.clone(), shared, rx.clone(), stop).instrument(span));
    rx
}

#[cfg(test)]
mod tests;
