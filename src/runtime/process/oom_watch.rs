//! A container's OOM kills, counted while it runs: the monitor watches the cgroup's
//! memory.events (cgroup v2) with inotify and reads its oom_kill counter whenever the kernel
//! changes the file. Reading only once the container has exited is not enough: under the
//! systemd driver a scope's cgroup is removed as soon as its last process is gone, often
//! before the monitor has reaped the container. Under cgroup v1 the counter is read from
//! memory.oom_control (the cgroup stays until Berth removes it). It never kills or decides.
use crate::runtime::cgroups::{self, CgroupMode};
use crate::runtime::state::CgroupSpec;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub struct OomWatch {
    file: PathBuf,
    inotify: Option<OwnedFd>,
    /// The highest oom_kill count seen.
    kills: u64,
}

impl OomWatch {
    /// Watch the cgroup of `spec` (it must exist: call once the container is in it).
    pub fn new(spec: &CgroupSpec) -> OomWatch {
        let (file, inotify) = match cgroups::host_mode() {
            CgroupMode::V2 => {
                let file = cgroups::fs_path(spec, "").join("memory.events");
                let fd = watch_modifications(&file);
                (file, fd)
            }
            CgroupMode::V1 => (cgroups::fs_path(spec, "memory").join("memory.oom_control"), None),
        };
        let mut w = OomWatch { file, inotify, kills: 0 };
        w.read();
        w
    }

    /// The descriptor to poll for readability (None without inotify).
    pub fn fd(&self) -> Option<RawFd> {
        self.inotify.as_ref().map(|f| f.as_raw_fd())
    }

    /// After `fd` polled readable: take the events and read the counter again.
    pub fn changed(&mut self) {
        if let Some(fd) = &self.inotify {
            let mut buf = [0u8; 1024];
            // SAFETY: reading into a buffer of its length from an inotify descriptor we own.
            while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        self.read();
    }

    /// Read the counter once more (a cgroup that is gone leaves what was seen before).
    pub fn read(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.file) {
            self.kills = self.kills.max(cgroups::parse_oom_kills(&text));
        }
    }

    /// OOM kills in the cgroup since the container started.
    pub fn kills(&self) -> u64 {
        self.kills
    }
}

/// An inotify descriptor (non-blocking) told of modifications of `file`; None when that fails.
fn watch_modifications(file: &std::path::Path) -> Option<OwnedFd> {
    let path = CString::new(file.as_os_str().as_bytes()).ok()?;
    // SAFETY: plain syscalls; the descriptor is owned below as soon as it is valid.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: path is a valid NUL-terminated string.
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) };
    (wd >= 0).then_some(owned)
}
