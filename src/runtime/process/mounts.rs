//! Building a container's filesystem view inside its new mount namespace: the spec's mounts
//! placed safely under the rootfs, /dev, pivot_root, masked and read-only paths.
use super::sync::{Context, Reporter, SetupError, SetupResult};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const NONE: Option<&str> = None;

/// Resolve `unsafe_path` inside `root` the way the container will see it: symlinks are
/// followed but can never lead out of `root`.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> SetupResult<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = unsafe_path.components().rev().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            Some(Component::RootDir) | Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(SetupError::Invalid(format!("too many symlinks resolving {}", unsafe_path.display())));
                }
                let target = std::fs::read_link(&candidate).ctx(|| format!("readlink {}", candidate.display()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    pending.push(PathBuf::from(c.as_os_str()));
                }
            }
            _ => resolved.push(&part),
        }
    }
    Ok(root.join(resolved))
}

/// Mount options split into flags, propagation flags and filesystem data.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub clear: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
    pub bind: bool,
    /// "rro": the mount and every mount below it read-only.
    pub recursive_readonly: bool,
}

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o =
        MountOptions { flags: MsFlags::empty(), clear: MsFlags::empty(), propagation: MsFlags::empty(), data: vec![], bind: false, recursive_readonly: false };
    for opt in options {
        let (set, clear, prop) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty(), MsFlags::empty())
            }
            "rro" => {
                o.recursive_readonly = true;
                (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty())
            }
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
        o.propagation |= prop;
    }
    o
}

/// Everything from the first mount to pivot_root: called in the container's new mount namespace.
pub fn prepare_rootfs(spec: &Spec, rootfs: &Path, rep: &mut Reporter) -> SetupResult<()> {
    // Host mounts reach the container (rslave) unless the spec asks otherwise; with rshared
    // (a Bidirectional volume), the namespace stays a peer of the host's, so the volume's
    // bind joins its source's peer group and mounts made in it reach the host.
    let root_propagation = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .map(|p| parse_options(&[p]).propagation)
        .filter(|p| !p.is_empty())
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(NONE, "/", NONE, root_propagation | MsFlags::MS_REC, NONE).ctx(|| "root propagation".into())?;
    if root_propagation.contains(MsFlags::MS_SHARED) {
        // ... but the container's own mounts (proc, dev, the rootfs bind) stay out of the
        // host: the mount holding the rootfs is made private here, and pivot_root needs that.
        if let Some(holder) = super::super::mountinfo::current_mount_of(rootfs).ctx(|| "reading the mount table".into())? {
            mount(NONE, &holder.mount_point, NONE, MsFlags::MS_PRIVATE, NONE).ctx(|| format!("make {} private", holder.mount_point.display()))?;
        }
    }
    mount(Some(rootfs), rootfs, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE).ctx(|| format!("bind rootfs {}", rootfs.display()))?;
    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
        mount_one(rootfs, m, rep)?;
    }
    if dev_is_tmpfs {
        let devices = spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default();
        populate_dev(rootfs, &devices)?;
    }
    pivot_root(rootfs)?;
    // The container's root gets the spec's propagation once it is the root (pivot_root
    // refuses a shared new root).
    if spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone()).is_some() {
        mount(NONE, "/", NONE, root_propagation, NONE).ctx(|| "rootfs propagation".into())?;
    }
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            mask_path(Path::new(p))?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly_path(Path::new(p))?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        mount(NONE, "/", NONE, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, NONE).ctx(|| "remount rootfs read-only".into())?;
    }
    Ok(())
}

fn mount_one(rootfs: &Path, m: &Mount, rep: &mut Reporter) -> SetupResult<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().clone().unwrap_or_default();
    let bind = opts.bind || typ == "bind";
    let dest = secure_join(rootfs, m.destination())?;
    let source = m.source().clone().unwrap_or_default();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(&dest, &typ, &opts, rep);
    }
    if bind {
        let src_is_dir = std::fs::metadata(&source).map(|md| md.is_dir()).ctx(|| format!("mount source {}", source.display()))?;
        create_target(&dest, src_is_dir)?;
        let base = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(Some(&source), &dest, NONE, base, NONE).ctx(|| format!("bind {} on {}", source.display(), m.destination().display()))?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(NONE, &dest, NONE, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra, NONE)
                .ctx(|| format!("remount {} with {:?}", m.destination().display(), extra))?;
        }
    } else {
        create_target(&dest, true)?;
        let data = opts.data.join(",");
        let data = if data.is_empty() { None } else { Some(data.as_str()) };
        let src = if source.as_os_str().is_empty() { PathBuf::from(&typ) } else { source.clone() };
        mount(Some(&src), &dest, Some(typ.as_str()), opts.flags, data).ctx(|| format!("mount {typ} on {}", m.destination().display()))?;
    }
    if !opts.propagation.is_empty() {
        mount(NONE, &dest, NONE, opts.propagation, NONE).ctx(|| format!("propagation of {}", m.destination().display()))?;
    }
    if opts.recursive_readonly {
        recursive_readonly(&dest)?;
    }
    Ok(())
}

/// cgroup v1 needs one mount per hierarchy; give the container a read-only view of the
/// host's cgroup mounts under its destination (it sees its own cgroup through /proc/self/cgroup).
fn mount_cgroup(dest: &Path, typ: &str, opts: &MountOptions, rep: &mut Reporter) -> SetupResult<()> {
    create_target(dest, true)?;
    let ro = opts.flags & MsFlags::MS_RDONLY;
    if typ == "cgroup2" || crate::runtime::cgroups::host_mode() == crate::runtime::cgroups::CgroupMode::V2 {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | ro;
        if let Err(e) = mount(Some("cgroup2"), dest, Some("cgroup2"), flags, NONE) {
            rep.warn(&format!("mount cgroup2 on {}: {e}", dest.display()));
        }
        return Ok(());
    }
    mount(Some("/sys/fs/cgroup"), dest, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE).ctx(|| "bind the cgroup hierarchies".into())?;
    if !ro.is_empty() {
        recursive_readonly(dest)?;
    }
    Ok(())
}

/// Whether this kernel has mount_setattr (Linux 5.12+), which recursive read-only mounts need.
pub fn recursive_readonly_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: a call with a bad descriptor and no attributes changes nothing; only the
        // error tells whether the system call exists.
        let rc = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0, std::ptr::null::<u8>(), 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
    })
}

/// Make a mount and every mount below it read-only (mount_setattr, Linux 5.12+).
fn recursive_readonly(path: &Path) -> SetupResult<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| SetupError::Invalid("NUL in path".into()))?;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: mount_setattr reads a valid path and a MountAttr of the size we pass.
    let rc = unsafe {
        libc::syscall(libc::SYS_mount_setattr, libc::AT_FDCWD, c.as_ptr(), AT_RECURSIVE, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    if rc != 0 {
        return Err(SetupError::Io { what: format!("make {} read-only", path.display()), source: std::io::Error::last_os_error() });
    }
    Ok(())
}

fn create_target(dest: &Path, dir: bool) -> SetupResult<()> {
    if dir {
        std::fs::create_dir_all(dest).ctx(|| format!("mkdir {}", dest.display()))
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        if std::fs::symlink_metadata(dest).is_err() {
            std::fs::File::create(dest).ctx(|| format!("create {}", dest.display()))?;
        }
        Ok(())
    }
}

/// The device nodes every container gets on its /dev tmpfs: (path, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn populate_dev(rootfs: &Path, extra: &[LinuxDevice]) -> SetupResult<()> {
    let dev = secure_join(rootfs, Path::new("/dev"))?;
    for (name, major, minor) in DEFAULT_DEVICES {
        make_device(&dev.join(name), LinuxDeviceType::C, *major, *minor, 0o666, 0, 0)?;
    }
    for d in extra {
        let path = secure_join(rootfs, d.path())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        let mode = d.file_mode().unwrap_or(0o666);
        make_device(&path, d.typ(), d.major() as u64, d.minor() as u64, mode, d.uid().unwrap_or(0), d.gid().unwrap_or(0))?;
    }
    for (link, target) in
        [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")]
    {
        let _ = symlink(target, dev.join(link));
    }
    if dev.join("pts/ptmx").exists() {
        let ptmx = dev.join("ptmx");
        let _ = std::fs::remove_file(&ptmx);
        symlink("pts/ptmx", &ptmx).ctx(|| "symlink /dev/ptmx".into())?;
    }
    Ok(())
}

fn make_device(path: &Path, typ: LinuxDeviceType, major: u64, minor: u64, mode: u32, uid: u32, gid: u32) -> SetupResult<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let kind = match typ {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let _ = std::fs::remove_file(path);
    match mknod(path, kind, Mode::from_bits_truncate(mode & 0o7777), makedev(major, minor)) {
        Ok(()) => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).ctx(|| format!("chmod {}", path.display()))?;
            nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).ctx(|| format!("chown {}", path.display()))
        }
        // Without the right to make nodes (user namespaces), bind the host's node instead.
        Err(nix::Error::EPERM) => {
            let host = PathBuf::from(format!("/dev/{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("null")));
            std::fs::File::create(path).ctx(|| format!("create {}", path.display()))?;
            mount(Some(&host), path, NONE, MsFlags::MS_BIND, NONE).ctx(|| format!("bind {}", host.display()))
        }
        Err(e) => Err(SetupError::Sys { what: format!("mknod {}", path.display()), source: e }),
    }
}

/// Where the old root goes during pivot_root: a directory of its own, so that it can be made
/// a slave without touching the container's mounts (a Bidirectional volume must stay a peer
/// of the host's).
/// Make `rootfs` the root. The old root is stacked on the new one by `pivot_root(".", ".")`
/// and detached from there, so no directory for it is made (and removed again) in the
/// container's writable layer.
fn pivot_root(rootfs: &Path) -> SetupResult<()> {
    let open_dir = |p: &Path| std::fs::File::open(p).ctx(|| format!("open {}", p.display()));
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    nix::unistd::fchdir(&new_root).ctx(|| format!("chdir {}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    // "." is the old root again (it lies on top of the new one)
    nix::unistd::fchdir(&old_root).ctx(|| "chdir to the old root".into())?;
    // Keep the old root's unmount from reaching the host.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE).ctx(|| "make old root rslave".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach old root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

fn mask_path(p: &Path) -> SetupResult<()> {
    let md = match std::fs::metadata(p) {
        Ok(md) => md,
        Err(_) => return Ok(()),
    };
    let res =
        if md.is_dir() { mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, NONE) } else { mount(Some("/dev/null"), p, NONE, MsFlags::MS_BIND, NONE) };
    res.ctx(|| format!("mask {}", p.display()))
}

fn readonly_path(p: &Path) -> SetupResult<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(Some(p), p, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE).ctx(|| format!("bind {}", p.display()))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(NONE, p, NONE, flags, NONE).ctx(|| format!("make {} read-only", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_in_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        symlink("/etc", r.join("a/abs")).unwrap();
        symlink("../../../../..", r.join("a/up")).unwrap();
        assert_eq!(secure_join(r, Path::new("/a/b/c")).unwrap(), r.join("a/b/c"));
        assert_eq!(secure_join(r, Path::new("/a/abs/passwd")).unwrap(), r.join("etc/passwd"));
        assert_eq!(secure_join(r, Path::new("/a/up/x")).unwrap(), r.join("x"));
        assert_eq!(secure_join(r, Path::new("../../x")).unwrap(), r.join("x"));
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&["rbind".into(), "ro".into(), "rslave".into(), "mode=755".into()]);
        assert!(o.bind);
        assert!(o.flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
    }
}
