//! A container's OOM kills, counted while it runs: the monitor watches the cgroup's
//! memory.events (cgroup v2) with inotify and reads its oom_kill counter whenever the kernel
//! changes the file. Reading only once the container has exited is not enough: under the
//! systemd driver a scope's cgroup is removed as soon as its last process is gone, often
//! before the monitor has reaped the container. Under cgroup v1 the counter is read from
//! memory.oom_control (the cgroup stays until Berth removes it). It never kills or decides.
//!
//! The kernel rate-limits change notifications of a cgroup file (one per 10 ms), so the
//! notice of the kill itself may come after systemd has already removed the scope. For that
//! case the watch also keeps the parent's (the pod's) counter from the start: v2 counts
//! events hierarchically, so a parent counter that grew while the container's cgroup vanished
//! is this container's kill.
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
    /// The parent cgroup's memory.events and its oom_kill count when the watch began (v2).
    parent: Option<(PathBuf, u64)>,
}

impl OomWatch {
    /// Watch the cgroup of `spec` (it must exist: call once the container is in it).
    pub fn new(spec: &CgroupSpec) -> OomWatch {
        let (file, inotify, parent) = match cgroups::host_mode() {
            CgroupMode::V2 => {
                let dir = cgroups::fs_path(spec, "");
                let file = dir.join("memory.events");
                let fd = watch_modifications(&file);
                let parent = dir.parent().map(|p| p.join("memory.events")).and_then(|p| read_kills(&p).map(|n| (p, n)));
                (file, fd, parent)
            }
            CgroupMode::V1 => (cgroups::fs_path(spec, "memory").join("memory.oom_control"), None, None),
        };
        let mut w = OomWatch { file, inotify, kills: 0, parent };
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

    /// Read the counter once more. A cgroup that is gone leaves what was seen before, plus
    /// what the parent counted since the start.
    pub fn read(&mut self) {
        match read_kills(&self.file) {
            Some(n) => self.kills = self.kills.max(n),
            None => {
                if let Some(grown) = self.parent.as_ref().and_then(|(p, base)| read_kills(p).map(|n| n.saturating_sub(*base))) {
                    self.kills = self.kills.max(grown);
                }
            }
        }
    }

    /// OOM kills in the cgroup since the container started.
    pub fn kills(&self) -> u64 {
        self.kills
    }
}

/// The oom_kill counter of a memory.events or memory.oom_control file (None when unreadable).
fn read_kills(file: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(file).ok().map(|t| cgroups::parse_oom_kills(&t))
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
