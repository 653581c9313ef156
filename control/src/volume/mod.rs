//! Persistent volumes, as kube-controller-manager's persistentvolume-binder and k3s's
//! local-path provisioner handle them: [`matching`] decides which volume fits which claim (pure,
//! shared with the scheduler's VolumeBinding plugin), [`binder`] binds claims to volumes and
//! reclaims released volumes, [`local_path`] provisions and deletes hostPath volumes under a
//! storage root for the `rancher.io/local-path` StorageClass, [`helper_pod`] builds the pod that
//! removes such a volume's directory on another node.

pub mod binder;
pub mod helper_pod;
pub mod local_path;
pub mod matching;

/// The node the scheduler chose for a claim of a WaitForFirstConsumer class.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a claim: the binding is complete (the controller takes over its management).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the controller (not the user) set volumeName / claimRef.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: the provisioner that made it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim: the provisioner expected to provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The class annotation that came before `storageClassName`.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner of classes whose volumes are made by hand (static local volumes).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
