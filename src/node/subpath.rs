//! volumeMounts with subPath, made safe against what containers write into volumes: the path
//! is resolved beneath the volume's directory (openat2 RESOLVE_BENEATH, so neither `..` nor a
//! symlink planted in the volume leads out of it), missing directories are made the same way,
//! and the runtime is handed a bind mount of the opened path under the pod's directory, so a
//! later change inside the volume cannot redirect it to somewhere on the host.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error("invalid subPath {0:?}: must be a relative path without '..'")]
    Invalid(String),
    #[error("subPath {path:?}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> SubPathError + '_ {
    move |source| SubPathError::Io { path: path.to_string(), source }
}

/// The components of a subPath, refusing absolute paths and `..`.
pub fn components(sub: &str) -> Result<Vec<&str>, SubPathError> {
    if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
        return Err(SubPathError::Invalid(sub.to_string()));
    }
    Ok(sub.split('/').filter(|p| !p.is_empty() && *p != ".").collect())
}

/// openat2(root, rel, O_PATH, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS).
fn open_beneath(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    crate::util::openat2::open(root, rel, libc::O_PATH, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS)
}

/// Open `sub` beneath `volume`, making missing directories (0755) on the way.
fn open_or_create(volume: &Path, sub: &str) -> Result<OwnedFd, SubPathError> {
    let comps = components(sub)?;
    let root = std::fs::File::open(volume).map_err(io_err(sub))?;
    let root = OwnedFd::from(root);
    for i in 0..comps.len() {
        let prefix = comps[..=i].join("/");
        match open_beneath(&root, &prefix) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = open_beneath(&root, &comps[..i].join("/")).map_err(io_err(sub))?;
                let name = CString::new(comps[i]).map_err(|_| SubPathError::Invalid(sub.to_string()))?;
                // SAFETY: mkdirat on a directory descriptor we hold and a NUL-terminated name.
                let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
                if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(io_err(sub)(io::Error::last_os_error()));
                }
            }
            Err(e) => return Err(io_err(sub)(e)),
        }
    }
    open_beneath(&root, &comps.join("/")).map_err(io_err(sub))
}

/// Bind `sub` of the volume at `volume` onto `target` (made as a file or directory to match)
/// and return `target`, the path to give the runtime. A mount left there by an earlier start
/// of the container is replaced.
pub fn prepare(volume: &Path, sub: &str, target: &Path) -> Result<PathBuf, SubPathError> {
    let fd = open_or_create(volume, sub)?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| io_err(sub)(e.into()))?;
    let is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(sub))?;
    }
    if is_dir {
        std::fs::create_dir_all(target).map_err(io_err(sub))?;
    } else if std::fs::symlink_metadata(target).is_err() {
        std::fs::File::create(target).map_err(io_err(sub))?;
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(Some(source.as_str()), target, None::<&str>, nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC, None::<&str>)
        .map_err(|e| io_err(sub)(e.into()))?;
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_out_of_the_volume_are_refused() {
        assert!(components("/etc").is_err());
        assert!(components("a/../../etc").is_err());
        assert_eq!(components("a/./b/").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn symlinks_cannot_lead_out_and_missing_dirs_are_made() {
        let vol = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), vol.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc", vol.path().join("abs")).unwrap();
        std::fs::create_dir(vol.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", vol.path().join("inside")).unwrap();
        let exdev = |r: Result<OwnedFd, SubPathError>| matches!(r, Err(SubPathError::Io { source, .. }) if source.raw_os_error() == Some(libc::EXDEV));
        assert!(exdev(open_or_create(vol.path(), "escape")));
        assert!(exdev(open_or_create(vol.path(), "abs/passwd")));
        assert!(exdev(open_or_create(vol.path(), "escape/new")));
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing made outside");
        // A symlink that stays inside the volume is fine; missing directories are made.
        open_or_create(vol.path(), "inside/x/y").unwrap();
        assert!(vol.path().join("real/x/y").is_dir());
    }
}
