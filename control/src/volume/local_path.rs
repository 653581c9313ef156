//! The local-path provisioner, as k3s ships it (rancher.io/local-path): the default StorageClass
//! `local-path` (WaitForFirstConsumer, reclaim Delete), and for each claim of it scheduled to a
//! node, a hostPath volume `<root>/pvc-<uid>_<namespace>_<name>` (DirectoryOrCreate) pinned to
//! that node by node affinity. When such a volume is reclaimed, its directory is removed: here
//! when it lives on this server's own node, else by a helper pod on its node ([`helper_pod`],
//! which the binder runs) — and then the volume is deleted.
//!
//! This module builds objects and touches the directory; it does not decide when (the binder
//! does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_names::quantity::Quantity;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use serde_json::json;

use super::helper_pod::{self, Teardown};
use super::ANN_PROVISIONED_BY;

/// The provisioner's name (k3s's, so manifests written for k3s behave the same).
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The StorageClass made at server start.
pub const CLASS_NAME: &str = "local-path";
/// Where volumes live by default (k3s: /var/lib/rancher/k3s/storage).
pub const DEFAULT_STORAGE_ROOT: &str = "/var/lib/berth/storage";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("configuration error, no node was specified")]
    NoNode,
    #[error("claim.Spec.Selector is not supported")]
    Selector,
    #[error("NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) access modes")]
    AccessMode,
    #[error("building the volume: {0}")]
    Build(#[from] serde_json::Error),
    #[error("creating {path}: {source}")]
    Create { path: String, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("volume {volume}: path {path} is not a directory this provisioner made under {root}")]
    Foreign { volume: String, path: String, root: String },
    #[error("volume {volume} has no node affinity: the node its directory is on is unknown")]
    NoNode { volume: String },
    #[error("volume {volume}: {source}")]
    HelperPod { volume: String, source: helper_pod::BuildError },
    #[error("removing {path}: {source}")]
    Remove { path: String, source: std::io::Error },
}

/// What became of a volume's directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Removed(PathBuf),
    /// It lives on another node, which this server cannot reach into: a helper pod there
    /// removes it ([`LocalPath::helper_pod`]).
    OnNode {
        node: String,
        path: PathBuf,
    },
}

/// The `local-path` StorageClass: default, WaitForFirstConsumer, reclaim Delete.
pub fn storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS_NAME.into()),
            annotations: Some(BTreeMap::from([("storageclass.kubernetes.io/is-default-class".to_string(), "true".to_string())])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// Creates the `local-path` StorageClass unless a class of that name exists (a class the
/// administrator changed or replaced is left as it is).
pub async fn ensure_class(client: kube::Client) -> Result<(), kube::Error> {
    let classes: kube::Api<StorageClass> = kube::Api::all(client);
    match classes.create(&PostParams::default(), &storage_class()).await {
        Ok(_) => {
            tracing::info!(class = CLASS_NAME, "created the default StorageClass");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The provisioner: where volumes live, which node is this server's own, and the image of the
/// helper pods that remove directories on other nodes.
#[derive(Debug, Clone)]
pub struct LocalPath {
    root: PathBuf,
    local_node: Option<String>,
    helper_image: String,
}

fn claim_ids(claim: &PersistentVolumeClaim) -> (&str, &str, &str) {
    let m = &claim.metadata;
    (m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""), m.uid.as_deref().unwrap_or(""))
}

/// The node a volume is pinned to (its `kubernetes.io/hostname In [node]` affinity).
pub fn pinned_node(v: &PersistentVolume) -> Option<&str> {
    let required = v.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref()?;
    let exprs = required.node_selector_terms.first()?.match_expressions.as_ref()?;
    let e = exprs.iter().find(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")?;
    e.values.as_ref()?.first().map(String::as_str)
}

impl LocalPath {
    /// `root`: the storage root; `local_node`: the node this server runs (None: none).
    pub fn new(root: impl Into<PathBuf>, local_node: Option<String>) -> Self {
        LocalPath { root: root.into(), local_node, helper_image: helper_pod::DEFAULT_IMAGE.into() }
    }

    /// The helper pods' image (k3s: its busybox, [`helper_pod::DEFAULT_IMAGE`]).
    pub fn with_helper_image(mut self, image: impl Into<String>) -> Self {
        self.helper_image = image.into();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name of the volume for a claim (the external provisioners' `pvc-<claim uid>`).
    pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
        format!("pvc-{}", claim_ids(claim).2)
    }

    /// The directory of a claim's volume.
    pub fn dir_for(&self, claim: &PersistentVolumeClaim) -> PathBuf {
        let (ns, name, _) = claim_ids(claim);
        self.root.join(format!("{}_{ns}_{name}", Self::volume_name(claim)))
    }

    /// The volume for `claim` of `class` on `node`.
    pub fn volume_for(&self, claim: &PersistentVolumeClaim, class: &StorageClass, node: Option<&str>) -> Result<PersistentVolume, ProvisionError> {
        let node = node.filter(|n| !n.is_empty()).ok_or(ProvisionError::NoNode)?;
        let spec = claim.spec.clone().unwrap_or_default();
        if spec.selector.is_some() {
            return Err(ProvisionError::Selector);
        }
        let modes = spec.access_modes.clone().unwrap_or_default();
        if modes.iter().any(|m| m != "ReadWriteOnce" && m != "ReadWriteOncePod") {
            return Err(ProvisionError::AccessMode);
        }
        let (ns, name, uid) = claim_ids(claim);
        let request = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned();
        let v = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": Self::volume_name(claim), "annotations": {ANN_PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": request},
                "accessModes": modes,
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class.metadata.name.clone().unwrap_or_default(),
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid,
                             "resourceVersion": claim.metadata.resource_version.clone().unwrap_or_default()},
                "hostPath": {"path": self.dir_for(claim).to_string_lossy(), "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            },
        });
        Ok(serde_json::from_value(v)?)
    }

    /// Makes the directory (mode 0777, as k3s's helper does, so any container user can write)
    /// when the volume lives on this server's node; another node makes it when it mounts the
    /// volume (DirectoryOrCreate).
    pub async fn prepare(&self, v: &PersistentVolume) -> Result<(), ProvisionError> {
        let (Some(node), Some(path)) = (pinned_node(v), host_path(v)) else { return Ok(()) };
        if self.local_node.as_deref() != Some(node) {
            return Ok(());
        }
        let path = PathBuf::from(path);
        let shown = path.display().to_string();
        let made = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        made.map_err(|source| ProvisionError::Create { path: shown, source })
    }

    /// The directory of a reclaimed volume, if it is one this provisioner made: a
    /// `pvc-<uid>_...` directory of that volume directly under the root (nothing else is ever
    /// removed).
    fn own_dir(&self, v: &PersistentVolume) -> Result<(String, PathBuf), DeleteError> {
        let name = v.metadata.name.clone().unwrap_or_default();
        let path = PathBuf::from(host_path(v).unwrap_or_default());
        let ours = name.starts_with("pvc-")
            && path.parent() == Some(self.root.as_path())
            && path.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&format!("{name}_")));
        if !ours || path.to_str().is_none() {
            return Err(DeleteError::Foreign { volume: name, path: path.display().to_string(), root: self.root.display().to_string() });
        }
        Ok((name, path))
    }

    /// Removes a reclaimed volume's directory if it lives on this server's node; says which
    /// node it is on otherwise. Only directories this provisioner names under its root.
    pub async fn remove(&self, v: &PersistentVolume) -> Result<Removal, DeleteError> {
        let (name, path) = self.own_dir(v)?;
        let node = pinned_node(v).filter(|n| !n.is_empty()).ok_or(DeleteError::NoNode { volume: name })?.to_string();
        if self.local_node.as_deref() != Some(node.as_str()) {
            return Ok(Removal::OnNode { node, path });
        }
        let p = path.clone();
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        removed.map_err(|source| DeleteError::Remove { path: path.display().to_string(), source })?;
        Ok(Removal::Removed(path))
    }

    /// The helper pod that removes a reclaimed volume's directory on its node (the same checks
    /// as [`LocalPath::remove`]).
    pub fn helper_pod(&self, v: &PersistentVolume) -> Result<Pod, DeleteError> {
        let (name, path) = self.own_dir(v)?;
        let node = pinned_node(v).filter(|n| !n.is_empty()).ok_or_else(|| DeleteError::NoNode { volume: name.clone() })?;
        let spec = v.spec.as_ref();
        let size_bytes =
            spec.and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).and_then(|q| Quantity::parse(&q.0).ok()).map(|q| q.value()).unwrap_or(0);
        let mode = spec.and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem");
        let t = Teardown { volume: &name, node, dir: &path, mode, size_bytes };
        helper_pod::delete_pod(&t, &self.helper_image).map_err(|source| DeleteError::HelperPod { volume: name.clone(), source })
    }
}

fn host_path(v: &PersistentVolume) -> Option<&str> {
    v.spec.as_ref()?.host_path.as_ref().map(|h| h.path.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::matching::tests::claim;

    fn data_claim() -> PersistentVolumeClaim {
        claim(json!({"metadata": {"name": "data", "namespace": "web", "uid": "1234", "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}, "storageClassName": "local-path"}}))
    }

    #[test]
    fn a_volume_is_pinned_to_the_selected_node_under_the_storage_root() {
        let lp = LocalPath::new("/var/lib/berth/storage", Some("n1".into()));
        let v = lp.volume_for(&data_claim(), &storage_class(), Some("n1")).expect("volume");
        assert_eq!(v.metadata.name.as_deref(), Some("pvc-1234"));
        let spec = v.spec.clone().expect("spec");
        let hp = spec.host_path.expect("hostPath");
        assert_eq!((hp.path.as_str(), hp.type_.as_deref()), ("/var/lib/berth/storage/pvc-1234_web_data", Some("DirectoryOrCreate")));
        assert_eq!(pinned_node(&v), Some("n1"));
        assert_eq!(spec.capacity.and_then(|c| c.get("storage").cloned()).map(|q| q.0), Some("2Gi".into()));
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
        let r = spec.claim_ref.expect("claimRef");
        assert_eq!((r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()), (Some("web"), Some("data"), Some("1234")));
        assert_eq!(v.metadata.annotations.and_then(|a| a.get(ANN_PROVISIONED_BY).cloned()).as_deref(), Some(PROVISIONER));
        assert!(matches!(lp.volume_for(&data_claim(), &storage_class(), None), Err(ProvisionError::NoNode)));
    }

    #[tokio::test]
    async fn only_our_own_directories_on_our_own_node_are_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let lp = LocalPath::new(dir.path(), Some("n1".into()));
        let v = lp.volume_for(&data_claim(), &storage_class(), Some("n1")).expect("volume");
        lp.prepare(&v).await.expect("prepare");
        let path = lp.dir_for(&data_claim());
        assert!(path.is_dir());
        std::fs::write(path.join("f"), "x").expect("write");
        assert_eq!(lp.remove(&v).await.expect("remove"), Removal::Removed(path.clone()));
        assert!(!path.exists());
        let elsewhere = lp.volume_for(&data_claim(), &storage_class(), Some("n2")).expect("volume");
        assert!(matches!(lp.remove(&elsewhere).await, Ok(Removal::OnNode { node, .. }) if node == "n2"));
        let mut foreign = v.clone();
        if let Some(h) = foreign.spec.as_mut().and_then(|s| s.host_path.as_mut()) {
            h.path = "/etc".into();
        }
        assert!(matches!(lp.remove(&foreign).await, Err(DeleteError::Foreign { .. })));
    }

    /// A copy of `v` with its hostPath set to `path` (and its name to `name`, when given).
    fn moved(v: &PersistentVolume, path: &str, name: Option<&str>) -> PersistentVolume {
        let mut v = v.clone();
        if let Some(h) = v.spec.as_mut().and_then(|s| s.host_path.as_mut()) {
            h.path = path.into();
        }
        if let Some(n) = name {
            v.metadata.name = Some(n.into());
        }
        v
    }

    #[test]
    fn only_a_volumes_own_directory_directly_under_the_root_gets_a_helper_pod() {
        let lp = LocalPath::new("/srv/storage", Some("n1".into())).with_helper_image("registry.test/busybox:1");
        let v = lp.volume_for(&data_claim(), &storage_class(), Some("n2")).expect("volume");
        let p = lp.helper_pod(&v).expect("helper pod");
        assert_eq!(p.metadata.name.as_deref(), Some("helper-pod-delete-pvc-1234"));
        let spec = p.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("n2"));
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.test/busybox:1"));
        let env: Vec<(String, String)> = c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
        assert_eq!(
            env,
            [("VOL_DIR", "/srv/storage/pvc-1234_web_data"), ("VOL_MODE", "Filesystem"), ("VOL_SIZE_BYTES", "2147483648")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let foreign = |v: &PersistentVolume| matches!(lp.helper_pod(v), Err(DeleteError::Foreign { .. }));
        for bad in [
            "/etc",
            "/srv/storage",
            "/srv/storage/",
            "/srv/storage/other_web_data",
            "/srv/storage/pvc-9999_web_data",
            "/srv/storage/sub/pvc-1234_web_data",
            "/srv/storage/../pvc-1234_web_data",
            "/srv/pvc-1234_web_data",
            "srv/storage/pvc-1234_web_data",
            "/srv/storage/pvc-1234",
        ] {
            assert!(foreign(&moved(&v, bad, None)), "{bad} refused");
        }
        // a volume not named pvc-...: refused even with a directory of its name
        assert!(foreign(&moved(&v, "/srv/storage/data_web_data", Some("data"))));
        let mut unpinned = v.clone();
        if let Some(s) = unpinned.spec.as_mut() {
            s.node_affinity = None;
        }
        assert!(matches!(lp.helper_pod(&unpinned), Err(DeleteError::NoNode { .. })));
    }
}
