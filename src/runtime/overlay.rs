//! Overlay mounts of image layers: a container's rootfs (layers under a writable upper) and
//! read-only image volumes (layers alone). Layers are named to the kernel as /proc/self/fd/N
//! of directories opened for the mount, so the option string stays short whatever the
//! layers' paths: an image of many layers fits in the one page mount options get.
use nix::mount::{mount, MsFlags};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Lower layers one overlay mount can stack (OVL_MAX_STACK).
pub const MAX_LAYERS: usize = 500;
/// Mount options must fit in one page (about 200 layers as /proc/self/fd/N names).
const PAGE_LIMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("the image has no layers")]
    NoLayers,
    #[error("the image has {0} layers, more than one overlay mount can stack")]
    TooManyLayers(usize),
    #[error("opening layer {path}: {source}")]
    Layer { path: PathBuf, source: nix::Error },
    #[error("mounting {target}: {source}")]
    Mount { target: PathBuf, source: nix::Error },
}

/// Mount `lowers` (topmost first) at `target`, with `upper` = (upperdir, workdir) writable on
/// top, or read-only without one. A single read-only layer is bind-mounted read-only (an
/// overlay without upperdir needs two lower layers).
pub fn mount_layers(target: &Path, lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> Result<(), OverlayError> {
    if lowers.is_empty() {
        return Err(OverlayError::NoLayers);
    }
    if lowers.len() > MAX_LAYERS {
        return Err(OverlayError::TooManyLayers(lowers.len()));
    }
    let mount_err = |source| OverlayError::Mount { target: target.to_path_buf(), source };
    if upper.is_none() && lowers.len() == 1 {
        mount(Some(&lowers[0]), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(mount_err)?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        return mount(None::<&str>, target, None::<&str>, ro, None::<&str>).map_err(|e| {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            mount_err(e)
        });
    }
    let mut fds = Vec::with_capacity(lowers.len());
    for l in lowers {
        let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(l, flags, nix::sys::stat::Mode::empty()).map_err(|source| OverlayError::Layer { path: l.clone(), source })?;
        fds.push(fd);
    }
    let lower = fds.iter().map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd())).collect::<Vec<_>>().join(":");
    let (opts, flags) = match upper {
        Some((up, work)) => (format!("lowerdir={lower},upperdir={},workdir={}", up.display(), work.display()), MsFlags::empty()),
        None => (format!("lowerdir={lower}"), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
    };
    if opts.len() >= PAGE_LIMIT {
        return Err(OverlayError::TooManyLayers(lowers.len()));
    }
    let mounted = mount(Some("overlay"), target, Some("overlay"), flags, Some(opts.as_str()));
    drop(fds);
    mounted.map_err(mount_err)
}
