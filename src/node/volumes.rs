//! Pod volumes on the node: emptyDir (on disk, or tmpfs with medium Memory and its
//! sizeLimit), hostPath (with its type checks), and the volumes the node writes itself:
//! configMap, secret, downwardAPI and projected (the last three on tmpfs), filled from the pod source's
//! objects (`Objects`: today ConfigMaps and Secrets in the manifest directory, later the
//! apiserver). Their content is written when a container of the pod starts and rewritten
//! (atomically, through `..data`) when the objects change. With a pod fsGroup, volumes
//! belong to that group, as on a kubelet.
use super::convert::{self, FieldValues};
use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret};
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Host paths of the pod's volumes by volume name.
pub type VolumePaths = BTreeMap<String, PathBuf>;

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// ConfigMaps and Secrets a pod source provides, by (namespace, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    pub secrets: BTreeMap<(String, String), Secret>,
    /// ServiceAccount tokens for serviceAccountToken projections (from the cluster's
    /// TokenRequest API), by what they were asked for.
    pub tokens: BTreeMap<TokenKey, String>,
    /// PersistentVolumeClaims bound to a volume this node mounts (hostPath or local), by
    /// (namespace, claim name).
    pub claims: BTreeMap<(String, String), ClaimVolume>,
    /// The cluster's Services with a cluster IP, for the containers' Service environment
    /// variables: None without a cluster (static pods of a standalone node get none).
    pub services: Option<std::sync::Arc<super::service_env::ServiceLinks>>,
}

/// The PersistentVolume a claim is bound to, as the node mounts it: a path on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimVolume {
    pub path: String,
    /// The hostPath type (`DirectoryOrCreate`, ...); `Directory` for a local volume.
    pub kind: String,
}

/// A projected token: the pod's uid, the audience ("" for the apiserver's own) and the
/// lifetime asked for in seconds.
pub type TokenKey = (String, String, i64);

/// The lifetime of a serviceAccountToken projection that names none (upstream's default).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// The token key of a projection in `pod`.
pub fn token_key(pod: &Pod, p: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection) -> TokenKey {
    (pod.metadata.uid.clone().unwrap_or_default(), p.audience.clone().unwrap_or_default(), p.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS))
}

/// Whether a volume's content comes from the node (and is mounted read-only).
pub fn is_node_written(pod: &Pod, volume: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .any(|v| v.name == volume && (v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()))
}

/// One file to write into a node-written volume.
type FileOut = super::atomic_writer::Payload;

fn check_rel(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(format!("invalid path {path:?}"));
    }
    Ok(())
}

/// Key/value data as files: every key, or the listed items.
fn project(what: &str, data: &BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>, mode: u32, optional: bool) -> Result<Vec<FileOut>, String> {
    match items {
        None => Ok(data.iter().map(|(k, v)| FileOut { path: k.clone(), data: v.clone(), mode }).collect()),
        Some(items) => {
            let mut out = Vec::new();
            for it in items {
                check_rel(&it.path)?;
                match data.get(&it.key) {
                    Some(v) => out.push(FileOut { path: it.path.clone(), data: v.clone(), mode: it.mode.map(|m| m as u32).unwrap_or(mode) }),
                    None if optional => {}
                    None => return Err(format!("{what} has no key {:?}", it.key)),
                }
            }
            Ok(out)
        }
    }
}

pub fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    for (k, v) in cm.binary_data.clone().unwrap_or_default() {
        d.insert(k, v.0);
    }
    d
}

pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    // stringData is merged over data, as the apiserver does on write.
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        d.insert(k, v.into_bytes());
    }
    d
}

fn downward_files(pod: &Pod, items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile], mode: u32, fields: &FieldValues) -> Result<Vec<FileOut>, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for it in items {
        check_rel(&it.path)?;
        let value = if let Some(f) = &it.field_ref {
            let md = &pod.metadata;
            let map_lines = |m: Option<&BTreeMap<String, String>>| m.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n");
            match f.field_path.as_str() {
                "metadata.labels" => map_lines(md.labels.as_ref()),
                "metadata.annotations" => map_lines(md.annotations.as_ref()),
                p => convert::field_ref(pod, p, fields)?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            let cname = r.container_name.clone().unwrap_or_default();
            let c = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == cname)
                .ok_or_else(|| format!("resourceFieldRef: no container {cname:?}"))?;
            convert::resource_field(c, &r.resource)?
        } else {
            return Err(format!("downwardAPI item {:?} has neither fieldRef nor resourceFieldRef", it.path));
        };
        out.push(FileOut { path: it.path.clone(), data: value.into_bytes(), mode: it.mode.map(|m| m as u32).unwrap_or(mode) });
    }
    Ok(out)
}

/// The files of a ConfigMap or Secret source: its keys (or items), nothing when it is
/// missing but optional, an error when it is missing and required.
fn object_files(
    what: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: bool,
) -> Result<Vec<FileOut>, String> {
    match data {
        Some(d) => project(what, &d, items, mode, optional),
        None if optional => Ok(vec![]),
        None => Err(format!("{what} not found")),
    }
}

/// Files of a node-written volume, or None when the volume is of another kind.
fn node_written_files(pod: &Pod, v: &k8s_openapi::api::core::v1::Volume, objects: &Objects, fields: &FieldValues) -> Option<Result<Vec<FileOut>, String>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let cm_files = |name: &str, items, mode, optional: Option<bool>| {
        let data = objects.config_maps.get(&(ns.clone(), name.to_string())).map(config_map_data);
        object_files(&format!("configmap {name:?}"), data, items, mode, optional.unwrap_or(false))
    };
    let secret_files = |name: &str, items, mode, optional: Option<bool>| {
        let data = objects.secrets.get(&(ns.clone(), name.to_string())).map(secret_data);
        object_files(&format!("secret {name:?}"), data, items, mode, optional.unwrap_or(false))
    };
    let mode_of = |m: Option<i32>| m.map(|m| m as u32).unwrap_or(0o644);
    if let Some(c) = &v.config_map {
        return Some(cm_files(&c.name, c.items.as_ref(), mode_of(c.default_mode), c.optional));
    }
    if let Some(sv) = &v.secret {
        return Some(secret_files(sv.secret_name.as_deref().unwrap_or_default(), sv.items.as_ref(), mode_of(sv.default_mode), sv.optional));
    }
    if let Some(d) = &v.downward_api {
        return Some(downward_files(pod, d.items.as_deref().unwrap_or(&[]), mode_of(d.default_mode), fields));
    }
    if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode);
        let mut all = Vec::new();
        for src in p.sources.iter().flatten() {
            let part = if let Some(c) = &src.config_map {
                cm_files(&c.name, c.items.as_ref(), mode, c.optional)
            } else if let Some(sp) = &src.secret {
                secret_files(&sp.name, sp.items.as_ref(), mode, sp.optional)
            } else if let Some(d) = &src.downward_api {
                downward_files(pod, d.items.as_deref().unwrap_or(&[]), mode, fields)
            } else if let Some(t) = &src.service_account_token {
                match check_rel(&t.path) {
                    Err(e) => Err(e),
                    Ok(()) => match objects.tokens.get(&token_key(pod, t)) {
                        Some(token) => Ok(vec![FileOut { path: t.path.clone(), data: token.clone().into_bytes(), mode }]),
                        None => Err("the service account token is not issued yet".into()),
                    },
                }
            } else {
                Err("projected source of an unsupported kind".into())
            };
            match part {
                Ok(mut f) => all.append(&mut f),
                Err(e) => return Some(Err(e)),
            }
        }
        return Some(Ok(all));
    }
    None
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec.as_ref()?.security_context.as_ref()?.fs_group.map(|g| g as u32)
}

fn node_written_dir(root: &Path, uid: &str, v: &k8s_openapi::api::core::v1::Volume) -> PathBuf {
    let kind = if v.secret.is_some() {
        "secret"
    } else if v.config_map.is_some() {
        "configmap"
    } else if v.downward_api.is_some() {
        "downward-api"
    } else {
        "projected"
    };
    pod_dir(root, uid).join(format!("volumes/kubernetes.io~{kind}")).join(&v.name)
}

/// An emptyDir is open to all (0777); with an fsGroup it belongs to that group and new
/// files inherit it (setgid).
fn empty_dir_ownership(dir: &Path, gid: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut mode = 0o777;
    if let Some(g) = gid {
        nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(g))).map_err(|e| format!("{}: {e}", dir.display()))?;
        mode |= 0o2000;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Rewrite the node-written volumes that exist already from the current objects (a
/// ConfigMap or Secret changed). Returns the names of the volumes that changed.
pub fn refresh(root: &Path, pod: &Pod, objects: &Objects, fields: &FieldValues) -> Vec<String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut changed = Vec::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = node_written_dir(root, &uid, &v);
        if !dir.is_dir() {
            continue;
        }
        let Some(Ok(files)) = node_written_files(pod, &v, objects, fields) else { continue };
        match super::atomic_writer::write(&dir, &files, fs_group(pod)) {
            Ok(true) => changed.push(v.name.clone()),
            Ok(false) => {}
            Err(e) => tracing::warn!(volume = %v.name, "updating the volume: {e}"),
        }
    }
    changed
}

/// Make the pod's volumes; an error names the volume and why.
pub fn setup(root: &Path, pod: &Pod, objects: &Objects, fields: &FieldValues) -> Result<VolumePaths, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut out = VolumePaths::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let path = if let Some(e) = &v.empty_dir {
            let dir = pod_dir(root, &uid).join("volumes/kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            if e.medium.as_deref() == Some("Memory") && !is_mount_point(&dir) {
                let size = e.size_limit.as_ref().and_then(|q| crate::util::quantity::Quantity::parse(&q.0).ok()).map(|q| q.value());
                let data = size.map(|s| format!("size={s}")).unwrap_or_default();
                nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV, Some(data.as_str()))
                    .map_err(|e| format!("volume {:?}: mounting tmpfs: {e}", v.name))?;
            }
            empty_dir_ownership(&dir, fs_group(pod)).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            dir
        } else if let Some(h) = &v.host_path {
            host_path(&v.name, &h.path, h.type_.as_deref().unwrap_or(""))?
        } else if let Some(c) = &v.persistent_volume_claim {
            let key = (pod.metadata.namespace.clone().unwrap_or_default(), c.claim_name.clone());
            match objects.claims.get(&key) {
                Some(cv) => host_path(&v.name, &cv.path, &cv.kind)?,
                None => {
                    return Err(format!(
                        "volume {:?}: persistentvolumeclaim {:?} is not bound to a volume this node can mount (hostPath or local)",
                        v.name, c.claim_name
                    ))
                }
            }
        } else if let Some(files) = node_written_files(pod, &v, objects, fields) {
            let files = files.map_err(|e| format!("volume {:?}: {e}", v.name))?;
            let dir = node_written_dir(root, &uid, &v);
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            // Secret, projected and downwardAPI volumes never touch the disk: a tmpfs per
            // volume, as the kubelet backs them (configMap volumes stay on disk, as there).
            if in_memory(&v) && !is_mount_point(&dir) {
                let size = format!("size={},mode=0755", tmpfs_size(&files));
                nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV, Some(size.as_str()))
                    .map_err(|e| format!("volume {:?}: mounting tmpfs: {e}", v.name))?;
            }
            super::atomic_writer::write(&dir, &files, fs_group(pod)).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            dir
        } else {
            return Err(format!("volume {:?}: this volume type is not supported on this node yet", v.name));
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

/// Whether the kubelet backs this node-written volume with memory: secrets, projected
/// volumes (the service account token of every pod) and downwardAPI volumes.
fn in_memory(v: &k8s_openapi::api::core::v1::Volume) -> bool {
    v.secret.is_some() || v.projected.is_some() || v.downward_api.is_some()
}

/// The size of a node-written volume's tmpfs: 16 MiB, or room for the content three times
/// over when it is larger (a refresh writes the new files before the old ones go).
fn tmpfs_size(files: &[FileOut]) -> u64 {
    const MIN: u64 = 16 << 20;
    let content: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    MIN.max(content.saturating_mul(3).next_multiple_of(1 << 20))
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Remove the pod's volume directories (hostPath content is never touched). Every mount
/// below the pod's directory (tmpfs volumes, subPath binds, which may show hostPath content)
/// goes first, deepest first; if one cannot be unmounted, nothing is removed.
pub fn teardown(root: &Path, uid: &str) {
    let dir = pod_dir(root, uid);
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut below: Vec<PathBuf> = crate::util::mountinfo::parse(&table).into_iter().map(|m| m.mount_point).filter(|m| m.starts_with(&dir)).collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    below.dedup();
    for m in &below {
        // Mounts stacked on one point come off one at a time.
        for _ in 0..16 {
            if !is_listed(m) {
                break;
            }
            if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(mount = %m.display(), "keeping the pod directory: unmount failed: {e}");
                return;
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `path` is still a mount point in this mount namespace.
fn is_listed(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    crate::util::mountinfo::parse(&table).iter().any(|m| m.mount_point == path)
}
