//! Unpacking one image layer (a tar stream, maybe gzip or zstd compressed) into a fresh
//! directory that later serves as an overlayfs lower dir.
//!
//! The input is hostile. Every path is resolved inside the destination with
//! `openat2(RESOLVE_IN_ROOT)`, so neither `..` nor absolute paths nor symlinks planted by the
//! layer itself can reach outside it; the last component is always created with `*at()`
//! calls that do not follow symlinks. Whiteouts become what overlayfs understands: a 0:0
//! character device for a deleted file, the `trusted.overlay.opaque` xattr for an opaque dir.
use crate::util::digest::HashingReader;
use std::ffi::{CString, OsStr};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares; None for media types that are no layer.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// What unpacking found out about the layer.
#[derive(Debug, Clone)]
pub struct UnpackedLayer {
    /// `sha256:<hex>` of the whole uncompressed stream.
    pub diff_id: String,
    pub uncompressed_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("decompressing: {0}")]
    Decompress(String),
    #[error("malformed tar: {0}")]
    Tar(String),
    #[error("unsafe entry {path:?}: {reason}")]
    Unsafe { path: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("entry {path:?}: {what} is not supported")]
    Unsupported { path: String, what: String },
}

/// Marks I/O errors that came from the decompressor, so they are reported as such.
#[derive(Debug)]
struct DecompressFailure(io::Error);
impl std::fmt::Display for DecompressFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for DecompressFailure {}

struct TagErrors<R>(R);
impl<R: Read> Read for TagErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| io::Error::other(DecompressFailure(e)))
    }
}

fn stream_error(e: io::Error) -> UnpackError {
    match e.get_ref().and_then(|r| r.downcast_ref::<DecompressFailure>()) {
        Some(d) => UnpackError::Decompress(d.to_string()),
        None => UnpackError::Tar(e.to_string()),
    }
}

/// Unpack the layer read from `reader` into the existing, empty directory `dest`.
pub fn unpack_layer<R: Read>(reader: R, compression: Compression, dest: &Path) -> Result<UnpackedLayer, UnpackError> {
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let compression = sniff(&mut input, compression)?;
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(TagErrors(flate2::bufread::MultiGzDecoder::new(input))),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(input).map_err(|e| UnpackError::Decompress(e.to_string()))?;
            Box::new(TagErrors(d))
        }
    };
    let mut hashing = HashingReader::new(decoded);
    let root = open_dir(dest)?;
    let mut dir_times = vec![];
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_ignore_zeros(false);
        for entry in archive.entries().map_err(stream_error)? {
            let mut entry = entry.map_err(stream_error)?;
            apply_entry(&root, &mut entry, &mut dir_times)?;
        }
    }
    for (rel, mtime) in dir_times.iter().rev() {
        set_dir_mtime(&root, rel, *mtime)?;
    }
    let (digest, size) = hashing.finish().map_err(stream_error)?;
    Ok(UnpackedLayer { diff_id: digest.to_string(), uncompressed_size: size })
}

/// Trust the stream's magic bytes over a "plain tar" label (docker archives mislabel).
fn sniff<R: Read>(input: &mut BufReader<R>, declared: Compression) -> Result<Compression, UnpackError> {
    if declared != Compression::None {
        return Ok(declared);
    }
    let head = input.fill_buf().map_err(|e| UnpackError::Tar(e.to_string()))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

fn io_at(path: &str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: PathBuf::from(path), source }
}

fn cstr(s: &OsStr) -> Result<CString, UnpackError> {
    CString::new(s.as_bytes()).map_err(|_| UnpackError::Unsafe { path: s.to_string_lossy().into(), reason: "NUL in name".into() })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_dir(p: &Path) -> Result<OwnedFd, UnpackError> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| UnpackError::Io { path: p.to_path_buf(), source: io::Error::other("NUL in path") })?;
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(UnpackError::Io { path: p.to_path_buf(), source: io::Error::last_os_error() });
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2(root, path, O_PATH|O_DIRECTORY, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS).
fn open_in_root(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    crate::util::openat2::open(root, rel, libc::O_PATH | libc::O_DIRECTORY, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
}

/// Open directory `rel` (components inside the layer), creating missing ones (0755, root).
fn ensure_dir(root: &OwnedFd, comps: &[String], entry: &str) -> Result<OwnedFd, UnpackError> {
    let full = comps.join("/");
    match open_in_root(root, &full) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(UnpackError::Io { path: PathBuf::from(entry), source: e }),
    }
    let mut cur = open_in_root(root, "").map_err(io_at(entry))?;
    for i in 0..comps.len() {
        let sub = comps[..=i].join("/");
        match open_in_root(root, &sub) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let name = cstr(OsStr::new(&comps[i]))?;
                let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
                if r < 0 {
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() == Some(libc::EEXIST) {
                        // exists yet does not resolve: a dangling symlink
                        return Err(UnpackError::Unsafe { path: entry.into(), reason: format!("parent {sub:?} is a dangling symlink") });
                    }
                    return Err(UnpackError::Io { path: PathBuf::from(entry), source: err });
                }
                cur = open_in_root(root, &sub).map_err(io_at(entry))?;
            }
            Err(e) => return Err(UnpackError::Io { path: PathBuf::from(entry), source: e }),
        }
    }
    Ok(cur)
}

/// Split an archive path into components inside the layer; `..` may not climb out.
fn components(raw: &Path) -> Result<Vec<String>, UnpackError> {
    let mut out: Vec<String> = vec![];
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(UnpackError::Unsafe { path: raw.display().to_string(), reason: "path climbs out of the layer with ..".into() });
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

fn stat_at(dir: &OwnedFd, name: &CString) -> io::Result<Option<libc::stat>> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(e) };
    }
    Ok(Some(st))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Remove whatever is at `name` in `dir` (recursively for directories), never following links.
fn remove_at(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else { return Ok(()) };
    if is_dir(&st) {
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sub = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut children = vec![];
        {
            let dup = unsafe { libc::dup(sub.as_raw_fd()) };
            if dup < 0 {
                return Err(io::Error::last_os_error());
            }
            let dirp = unsafe { libc::fdopendir(dup) };
            if dirp.is_null() {
                unsafe { libc::close(dup) };
                return Err(io::Error::last_os_error());
            }
            loop {
                let ent = unsafe { libc::readdir(dirp) };
                if ent.is_null() {
                    break;
                }
                let n = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
                if n.to_bytes() != b"." && n.to_bytes() != b".." {
                    children.push(n.to_owned());
                }
            }
            unsafe { libc::closedir(dirp) };
        }
        for c in children {
            remove_at(&sub, &c)?;
        }
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
    } else {
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
    }
}

fn set_xattr(dir: &OwnedFd, name: &CString, key: &str, value: &[u8], entry: &str) -> Result<(), UnpackError> {
    // /proc/self/fd/N names our own directory fd; lsetxattr does not follow `name` if it is a symlink.
    let path = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), name.to_string_lossy());
    let p = CString::new(path).map_err(|_| UnpackError::Unsafe { path: entry.into(), reason: "NUL in name".into() })?;
    let k = CString::new(key).map_err(|_| UnpackError::Unsafe { path: entry.into(), reason: "NUL in xattr".into() })?;
    let r = unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) {
            tracing::warn!(entry, key, error = %e, "xattr not kept");
            return Ok(());
        }
        return Err(UnpackError::Io { path: PathBuf::from(entry), source: e });
    }
    Ok(())
}

/// An opaque directory hides the lower layers' content of the same directory. Unlike other
/// xattrs this one is the layer's meaning: without it deleted files reappear, so a filesystem
/// that cannot keep it fails the unpack.
fn mark_opaque(dir: &OwnedFd, entry: &str) -> Result<(), UnpackError> {
    let path = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(|_| UnpackError::Tar("cstring".into()))?;
    let key = c"trusted.overlay.opaque";
    if unsafe { libc::setxattr(path.as_ptr(), key.as_ptr(), b"y".as_ptr().cast(), 1, 0) } < 0 {
        let e = io::Error::last_os_error();
        return Err(UnpackError::Unsupported {
            path: entry.into(),
            what: format!("an opaque directory on this filesystem (setting trusted.overlay.opaque: {e}; the image store needs a filesystem with trusted xattrs, such as ext4, xfs, btrfs or tmpfs)"),
        });
    }
    Ok(())
}

fn apply_entry<R: Read>(root: &OwnedFd, entry: &mut tar::Entry<R>, dir_times: &mut Vec<(Vec<String>, i64)>) -> Result<(), UnpackError> {
    let raw = entry.path().map_err(|e| UnpackError::Tar(e.to_string()))?.into_owned();
    let shown = raw.display().to_string();
    let mut comps = components(&raw)?;
    let Some(name) = comps.pop() else { return Ok(()) }; // the root itself
    let header = entry.header().clone();
    let kind = header.entry_type();

    if let Some(deleted) = name.strip_prefix(".wh.") {
        let parent = ensure_dir(root, &comps, &shown)?;
        if deleted == ".wh..opq" {
            return mark_opaque(&parent, &shown);
        }
        if deleted.starts_with(".wh.") {
            return Ok(()); // aufs metadata (.wh..wh.plnk etc.)
        }
        if deleted.is_empty() || deleted == "." || deleted == ".." || deleted.contains('/') {
            return Err(UnpackError::Unsafe { path: shown, reason: "malformed whiteout".into() });
        }
        let c = cstr(OsStr::new(deleted))?;
        remove_at(&parent, &c).map_err(io_at(&shown))?;
        return check(unsafe { libc::mknodat(parent.as_raw_fd(), c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) }).map_err(io_at(&shown));
    }

    let parent = ensure_dir(root, &comps, &shown)?;
    let cname = cstr(OsStr::new(&name))?;
    let existing = stat_at(&parent, &cname).map_err(io_at(&shown))?;
    let mode = header.mode().map_err(|e| UnpackError::Tar(e.to_string()))? & 0o7777;
    let uid = header.uid().map_err(|e| UnpackError::Tar(e.to_string()))? as libc::uid_t;
    let gid = header.gid().map_err(|e| UnpackError::Tar(e.to_string()))? as libc::gid_t;
    let mtime = header.mtime().unwrap_or(0) as i64;
    let p = parent.as_raw_fd();

    match kind {
        tar::EntryType::Directory => {
            if !existing.as_ref().is_some_and(is_dir) {
                remove_at(&parent, &cname).map_err(io_at(&shown))?;
                check(unsafe { libc::mkdirat(p, cname.as_ptr(), 0o700) }).map_err(io_at(&shown))?;
            }
            let mut full = comps.clone();
            full.push(name.clone());
            dir_times.push((full, mtime));
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_at(&parent, &cname).map_err(io_at(&shown))?;
            let fd = unsafe { libc::openat(p, cname.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600) };
            if fd < 0 {
                return Err(UnpackError::Io { path: raw.clone(), source: io::Error::last_os_error() });
            }
            let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            io::copy(entry, &mut file).map_err(stream_error)?;
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name_bytes().ok_or_else(|| UnpackError::Tar(format!("{shown}: symlink without target")))?;
            let t = CString::new(target.into_owned()).map_err(|_| UnpackError::Unsafe { path: shown.clone(), reason: "NUL in link".into() })?;
            remove_at(&parent, &cname).map_err(io_at(&shown))?;
            check(unsafe { libc::symlinkat(t.as_ptr(), p, cname.as_ptr()) }).map_err(io_at(&shown))?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(|e| UnpackError::Tar(e.to_string()))?
                .ok_or_else(|| UnpackError::Tar(format!("{shown}: hard link without target")))?
                .into_owned();
            let mut tcomps = components(&target)?;
            let tname = tcomps.pop().ok_or_else(|| UnpackError::Unsafe { path: shown.clone(), reason: "hard link to the root".into() })?;
            let tparent = open_in_root(root, &tcomps.join("/"))
                .map_err(|_| UnpackError::Unsafe { path: shown.clone(), reason: format!("hard link target {} is not in this layer", target.display()) })?;
            let tc = cstr(OsStr::new(&tname))?;
            match stat_at(&tparent, &tc).map_err(io_at(&shown))? {
                Some(st) if !is_dir(&st) => {}
                _ => return Err(UnpackError::Unsafe { path: shown, reason: format!("hard link target {} is not a file of this layer", target.display()) }),
            }
            remove_at(&parent, &cname).map_err(io_at(&shown))?;
            check(unsafe { libc::linkat(tparent.as_raw_fd(), tc.as_ptr(), p, cname.as_ptr(), 0) }).map_err(io_at(&shown))?;
            return Ok(()); // a hard link shares the target's metadata
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let ftype = match kind {
                tar::EntryType::Char => libc::S_IFCHR,
                tar::EntryType::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            remove_at(&parent, &cname).map_err(io_at(&shown))?;
            check(unsafe { libc::mknodat(p, cname.as_ptr(), ftype | 0o600, libc::makedev(major, minor)) }).map_err(io_at(&shown))?;
        }
        tar::EntryType::GNUSparse => return Err(UnpackError::Unsupported { path: shown, what: "GNU sparse file".into() }),
        _ => return Ok(()), // pax/GNU meta headers are consumed by the tar reader; others carry no file
    }

    // ownership first (chown clears setuid), then mode, xattrs, times; never through a link
    check(unsafe { libc::fchownat(p, cname.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map_err(io_at(&shown))?;
    if kind != tar::EntryType::Symlink {
        check(unsafe { libc::fchmodat(p, cname.as_ptr(), mode as libc::mode_t, 0) }).map_err(io_at(&shown))?;
    }
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(attr) = key.strip_prefix("SCHILY.xattr.").or_else(|| key.strip_prefix("LIBARCHIVE.xattr.")) {
                set_xattr(&parent, &cname, attr, ext.value_bytes(), &shown)?;
            }
        }
    }
    if kind != tar::EntryType::Directory {
        set_times(&parent, &cname, mtime).map_err(io_at(&shown))?;
    }
    Ok(())
}

fn set_times(dir: &OwnedFd, name: &CString, mtime: i64) -> io::Result<()> {
    let t = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

fn set_dir_mtime(root: &OwnedFd, rel: &[String], mtime: i64) -> Result<(), UnpackError> {
    let (name, parent) = match rel.split_last() {
        Some(x) => x,
        None => return Ok(()),
    };
    let shown = rel.join("/");
    let Ok(pfd) = open_in_root(root, &parent.join("/")) else { return Ok(()) };
    let c = cstr(OsStr::new(name))?;
    match set_times(&pfd, &c, mtime) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map_err(io_at(&shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: &str, mode: u32, uid: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            u.name = [0; 100];
            u.name[..name.len()].copy_from_slice(name.as_bytes());
            u.linkname = [0; 100];
            u.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_000_000);
        h.set_cksum();
        h
    }

    struct T(Vec<u8>);
    impl T {
        fn new() -> T {
            T(vec![])
        }
        fn add(mut self, name: &str, kind: tar::EntryType, data: &[u8], link: &str, mode: u32, uid: u64) -> T {
            self.0.extend_from_slice(raw_header(name, kind, data.len() as u64, link, mode, uid).as_bytes());
            self.0.extend_from_slice(data);
            self.0.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
            self
        }
        fn file(self, name: &str, data: &[u8]) -> T {
            self.add(name, tar::EntryType::Regular, data, "", 0o644, 0)
        }
        fn done(mut self) -> Vec<u8> {
            self.0.extend(std::iter::repeat_n(0u8, 1024));
            self.0
        }
    }

    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("a/b/c/dest");
        std::fs::create_dir_all(&dest).unwrap();
        (t, dest)
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn files_dirs_links_devices_and_metadata() {
        let tar = T::new()
            .add("d/", tar::EntryType::Directory, b"", "", 0o750, 7)
            .add("d/f", tar::EntryType::Regular, b"hello", "", 0o4755, 0)
            .add("d/owned", tar::EntryType::Regular, b"x", "", 0o640, 1000)
            .add("d/link", tar::EntryType::Symlink, b"", "f", 0o777, 0)
            .add("d/hard", tar::EntryType::Link, b"", "d/f", 0o644, 0)
            .add("dev/null", tar::EntryType::Char, b"", "", 0o666, 0)
            .add("fifo", tar::EntryType::Fifo, b"", "", 0o600, 0)
            .done();
        let (_t, dest) = sandbox();
        let out = unpack_layer(&tar[..], Compression::None, &dest).unwrap();
        assert_eq!(out.diff_id, crate::util::digest::Digest::of(&tar).to_string());
        let f = std::fs::metadata(dest.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(f.mtime(), 1_000_000);
        assert_eq!(std::fs::read(dest.join("d/f")).unwrap(), b"hello");
        let d = std::fs::metadata(dest.join("d")).unwrap();
        assert_eq!((d.mode() & 0o7777, d.uid(), d.mtime()), (0o750, 7, 1_000_000));
        let o = std::fs::metadata(dest.join("d/owned")).unwrap();
        assert_eq!((o.uid(), o.gid(), o.mode() & 0o777), (1000, 1000, 0o640));
        assert_eq!(std::fs::read_link(dest.join("d/link")).unwrap(), Path::new("f"));
        assert_eq!(std::fs::metadata(dest.join("d/hard")).unwrap().ino(), f.ino());
        assert!(std::fs::metadata(dest.join("dev/null")).unwrap().file_type().is_char_device());
        assert!(std::fs::metadata(dest.join("fifo")).unwrap().file_type().is_fifo());
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let tar = T::new().file("data/.wh.gone", b"").file("opq/.wh..wh..opq", b"").file("opq/new", b"n").done();
        let (_t, dest) = sandbox();
        unpack_layer(&tar[..], Compression::None, &dest).unwrap();
        let w = std::fs::symlink_metadata(dest.join("data/gone")).unwrap();
        assert!(w.file_type().is_char_device() && w.rdev() == 0);
        assert!(!dest.join("data/.wh.gone").exists());
        assert!(!dest.join("opq/.wh..wh..opq").exists());
        let mut v = [0u8; 4];
        let p = CString::new(dest.join("opq").as_os_str().as_bytes()).unwrap();
        let k = CString::new("trusted.overlay.opaque").unwrap();
        let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert_eq!(&v[..n as usize], b"y");
    }

    #[test]
    fn compressions_agree_and_truncation_fails() {
        let tar = T::new().file("big", &vec![5u8; 100_000]).done();
        let (_t, dest) = sandbox();
        let plain = unpack_layer(&tar[..], Compression::None, &dest).unwrap();
        let gzipped = gz(&tar);
        let (_t2, d2) = sandbox();
        assert_eq!(unpack_layer(&gzipped[..], Compression::Gzip, &d2).unwrap().diff_id, plain.diff_id);
        let (_t3, d3) = sandbox();
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(unpack_layer(&z[..], Compression::Zstd, &d3).unwrap().diff_id, plain.diff_id);
        let (_t4, d4) = sandbox();
        assert_eq!(unpack_layer(&gzipped[..], Compression::None, &d4).unwrap().diff_id, plain.diff_id, "sniffed gzip");
        for cut in [gzipped.len() / 2, gzipped.len() - 8, gzipped.len() - 1] {
            let (_t5, d5) = sandbox();
            let e = unpack_layer(&gzipped[..cut], Compression::Gzip, &d5).unwrap_err();
            assert!(matches!(e, UnpackError::Decompress(_)), "cut at {cut}: {e:?}");
        }
        let (_t6, d6) = sandbox();
        assert!(unpack_layer(&z[..z.len() / 2], Compression::Zstd, &d6).is_err());
        let (_t7, d7) = sandbox();
        assert!(unpack_layer(&b"garbage that is no tar at all"[..], Compression::Gzip, &d7).is_err());
    }

    #[test]
    fn escapes_stay_inside() {
        let (t, dest) = sandbox();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // .. that climbs out is refused
        let tar = T::new().file("../../../../outside/x", b"x").done();
        let e = unpack_layer(&tar[..], Compression::None, &dest).unwrap_err();
        assert!(matches!(e, UnpackError::Unsafe { .. }), "{e:?}");
        // absolute path, and symlinks to / and to .., land inside
        let tar = T::new()
            .file("/abs_berth_test", b"x")
            .add("evil", tar::EntryType::Symlink, b"", "/", 0o777, 0)
            .file("evil/through_root", b"x")
            .add("up", tar::EntryType::Symlink, b"", "../../../../..", 0o777, 0)
            .file("up/outside/through_dots", b"x")
            .done();
        let (_t2, dest2) = sandbox();
        unpack_layer(&tar[..], Compression::None, &dest2).unwrap();
        assert!(dest2.join("abs_berth_test").is_file());
        assert!(dest2.join("through_root").is_file());
        assert!(dest2.join("outside/through_dots").is_file());
        assert!(!Path::new("/abs_berth_test").exists() && !Path::new("/through_root").exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // hard link to a host file is refused
        let tar = T::new().add("pw", tar::EntryType::Link, b"", "../../../../../../etc/passwd", 0o644, 0).done();
        let (_t3, dest3) = sandbox();
        assert!(unpack_layer(&tar[..], Compression::None, &dest3).is_err());
        assert_eq!(std::fs::metadata("/etc/passwd").unwrap().nlink(), 1);
    }

    #[test]
    fn later_entries_replace_earlier_ones_and_long_names_work() {
        let long = format!("{}/file", "d".repeat(120));
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h.clone(), &long, &b"ok"[..]).unwrap();
        b.append_data(&mut h.clone(), "x", &b"ab"[..]).unwrap();
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_mode(0o755);
        d.set_size(0);
        d.set_uid(0);
        d.set_gid(0);
        d.set_mtime(0);
        d.set_cksum();
        b.append_data(&mut d, "x", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let (_t, dest) = sandbox();
        unpack_layer(&tar[..], Compression::None, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join(&long)).unwrap(), b"ok");
        assert!(dest.join("x").is_dir());
    }
}
