//! Image volumes (CRI `Mount.image`, Kubernetes' `image:` volumes): an image's content mounted
//! read-only into a container, whole or from `image_sub_path`. Each is an overlay of the
//! image's layers (read-only, no upper) under the container's run dir; the container's mount
//! then binds it (or the sub path, resolved inside it) like any host path.
use super::overlay;
use super::{RtResult, Runtime, RuntimeError};
use crate::cri::v1 as cri;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where each image mount of a container comes from, by mount index.
#[derive(Debug, Default)]
pub struct ImageVolumes {
    pub sources: HashMap<usize, PathBuf>,
    /// The IDs of the images mounted (kept from removal while the container exists).
    pub image_ids: Vec<String>,
}

const DIR: &str = "image-volumes";

impl Runtime {
    /// Mount the images of `config`'s image mounts under the container's run dir.
    pub(super) fn prepare_image_volumes(&self, container_run_dir: &Path, config: &cri::ContainerConfig) -> RtResult<ImageVolumes> {
        let mut out = ImageVolumes::default();
        for (i, m) in config.mounts.iter().enumerate() {
            let Some(spec) = m.image.as_ref().filter(|s| !s.image.is_empty()) else { continue };
            let field = format!("mounts[{i}].image");
            let image = self
                .images
                .resolve(&spec.image)
                .map_err(|e| RuntimeError::Invalid(format!("{field}: {e}")))?
                .ok_or_else(|| RuntimeError::NotFound(format!("{field}: image {:?} not found: pull it first", spec.image)))?;
            let dir = container_run_dir.join(DIR).join(i.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| super::internal(&format!("creating {}", dir.display()), e))?;
            overlay::mount_layers(&dir, &self.images.layer_dirs(&image), None).map_err(|e| RuntimeError::Internal(format!("{field}: {e}")))?;
            out.image_ids.push(image.id.to_string());
            let source = if m.image_sub_path.is_empty() { dir } else { sub_path(&dir, &m.image_sub_path, i)? };
            out.sources.insert(i, source);
        }
        Ok(out)
    }
}

/// `sub` resolved inside the mounted image `root` (symlinks in the image cannot lead out).
fn sub_path(root: &Path, sub: &str, i: usize) -> RtResult<PathBuf> {
    let field = format!("mounts[{i}].image_sub_path");
    if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
        return Err(RuntimeError::Invalid(format!("{field}: {sub:?} must be a relative path without \"..\"")));
    }
    let dir = std::fs::File::open(root).map_err(|e| super::internal("opening an image volume", e))?;
    let fd = crate::util::openat2::open(&dir, sub, libc::O_PATH, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
        .map_err(|e| RuntimeError::Invalid(format!("{field}: {sub:?} in the image: {e}")))?;
    use std::os::fd::AsRawFd;
    // The image is read-only: the path found now stays the same.
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| super::internal("resolving an image sub path", e))
}

/// Unmount a container's image volumes (deepest first, missing ones fine).
pub fn teardown(container_run_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(container_run_dir.join(DIR)) else { return };
    for e in rd.flatten() {
        super::unmount(&e.path());
    }
}
