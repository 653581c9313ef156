//! Certificates for nodes: what `berth agent` needs to join with nothing but a join token.
//!
//! - `signer`: the cluster CA as upstream's csrsigning controller uses it: it signs approved
//!   CertificateSigningRequests of the built-in signers (`kubernetes.io/kube-apiserver-client`,
//!   `kube-apiserver-client-kubelet`, `kubelet-serving`) after checking what each signer allows,
//!   and marks the others it refuses `Failed` (reason SignerValidationFailure).
//! - `approver`: upstream's csrapproving controller for kubelet client certificates (a bootstrap
//!   token's `nodeclient` request, a node renewing its own `selfnodeclient` one), and, as k3s does
//!   for its agents, a node's serving certificate for names and addresses its Node object lists.
//! - `controller`: runs both over the CSR watch cache (level-triggered: each change of the
//!   cache looks at every CSR that still needs a step).
//! - `cluster_info`: the bootstrap signer: ConfigMap kube-public/cluster-info holds a kubeconfig
//!   with the server and the CA and, for every bootstrap token allowed to sign, a detached JWS
//!   (HS256 keyed with the whole token) over it, so a joining node that knows only the token can
//!   trust the CA it reads there anonymously.

pub mod approver;
pub mod cluster_info;
pub mod controller;
pub mod signer;

/// The built-in signers.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
