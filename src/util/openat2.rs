//! openat2(2): open a path relative to a directory descriptor with the kernel enforcing how it
//! may be resolved (RESOLVE_IN_ROOT, RESOLVE_BENEATH, ...), the one safe way to follow paths
//! inside trees that untrusted parties write (image layers, volumes, container roots).
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// openat2(dir, path, flags | O_CLOEXEC, resolve); an empty path means `dir` itself.
pub fn open(dir: &impl AsRawFd, path: &str, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let c = CString::new(if path.is_empty() { "." } else { path }).map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: open_how is plain data; zeroed is a valid start.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and an open_how of the given size.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat2 and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
