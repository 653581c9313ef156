//! Pod volumes on the node: emptyDir (on disk, or tmpfs with medium Memory and its
//! sizeLimit) and hostPath (with its type checks), as host paths the containers bind.
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Host paths of the pod's volumes by volume name.
pub type VolumePaths = BTreeMap<String, PathBuf>;

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// Make the pod's volumes; an error names the volume and why.
pub fn setup(root: &Path, pod: &Pod) -> Result<VolumePaths, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut out = VolumePaths::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let path = if let Some(e) = &v.empty_dir {
            let dir = pod_dir(root, &uid).join("volumes/kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            if e.medium.as_deref() == Some("Memory") && !is_mount_point(&dir) {
                let size = e.size_limit.as_ref().and_then(|q| super::quantity::bytes(&q.0));
                let data = size.map(|s| format!("size={s}")).unwrap_or_default();
                nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV, Some(data.as_str()))
                    .map_err(|e| format!("volume {:?}: mounting tmpfs: {e}", v.name))?;
            }
            dir
        } else if let Some(h) = &v.host_path {
            host_path(&v.name, &h.path, h.type_.as_deref().unwrap_or(""))?
        } else {
            return Err(format!("volume {:?}: only emptyDir and hostPath volumes are supported on this node yet", v.name));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn host_path(name: &str, path: &str, kind: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(format!("volume {name:?}: hostPath {path:?} is not absolute"));
    }
    let md = std::fs::metadata(&p);
    let bad = |what: &str| Err(format!("volume {name:?}: hostPath {path:?} is not {what}"));
    match kind {
        "" => {}
        "DirectoryOrCreate" => {
            if md.is_err() {
                std::fs::create_dir_all(&p).map_err(|e| format!("volume {name:?}: {e}"))?;
            } else if !md.as_ref().map(|m| m.is_dir()).unwrap_or(false) {
                return bad("a directory");
            }
        }
        "Directory" => {
            if !md.map(|m| m.is_dir()).unwrap_or(false) {
                return bad("an existing directory");
            }
        }
        "FileOrCreate" => {
            if md.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| format!("volume {name:?}: {e}"))?;
                }
                std::fs::File::create(&p).map_err(|e| format!("volume {name:?}: {e}"))?;
            } else if !md.as_ref().map(|m| m.is_file()).unwrap_or(false) {
                return bad("a file");
            }
        }
        "File" => {
            if !md.map(|m| m.is_file()).unwrap_or(false) {
                return bad("an existing file");
            }
        }
        "Socket" => {
            if !md.map(|m| m.file_type().is_socket()).unwrap_or(false) {
                return bad("a socket");
            }
        }
        "CharDevice" => {
            if !md.map(|m| m.file_type().is_char_device()).unwrap_or(false) {
                return bad("a character device");
            }
        }
        "BlockDevice" => {
            if !md.map(|m| m.file_type().is_block_device()).unwrap_or(false) {
                return bad("a block device");
            }
        }
        other => return Err(format!("volume {name:?}: unknown hostPath type {other:?}")),
    }
    Ok(p)
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Remove the pod's volume directories (hostPath content is never touched).
pub fn teardown(root: &Path, uid: &str) {
    let dir = pod_dir(root, uid).join("volumes/kubernetes.io~empty-dir");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(pod_dir(root, uid));
}
