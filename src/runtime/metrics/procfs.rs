//! /proc and the writable layer's filesystem as the metrics read them: processes,
//! descriptors, limits, pod network counters, usage and inodes.
use super::*;

/// "Threads:" of /proc/<pid>/status.
pub fn status_threads(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The soft limits of /proc/<pid>/limits, by snake_case name ("Max open files" →
/// "max_open_files"); "unlimited" is RLIM_INFINITY.
pub fn parse_limits(text: &str) -> Vec<(String, u64)> {
    // The kernel prints the name left-aligned in 25 columns and a space ("%-25s ").
    const NAME_WIDTH: usize = 26;
    text.lines()
        .skip(1)
        .filter(|l| l.len() > NAME_WIDTH && l.is_char_boundary(NAME_WIDTH))
        .filter_map(|l| {
            let (name, rest) = l.split_at(NAME_WIDTH);
            let soft = rest.split_whitespace().next()?;
            let value = if soft == "unlimited" { u64::MAX } else { soft.parse().ok()? };
            let key = name.trim().to_ascii_lowercase().replace(' ', "_");
            (!key.is_empty()).then_some((key, value))
        })
        .collect()
}

/// Open descriptors of a process, and how many of them are sockets.
pub(super) fn fd_counts(pid: i32) -> (u64, u64) {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return (0, 0) };
    let mut fds = 0;
    let mut sockets = 0;
    for e in rd.flatten() {
        fds += 1;
        if std::fs::read_link(e.path()).map(|t| t.to_string_lossy().starts_with("socket:")).unwrap_or(false) {
            sockets += 1;
        }
    }
    (fds, sockets)
}

/// Process, thread and descriptor counts of `pids`, limits of `main_pid`. A process that
/// exits while it is read counts for nothing.
pub(super) fn process_stats(pids: &[i32], main_pid: i32) -> ProcessStats {
    let mut stats = ProcessStats { processes: pids.len() as u64, ..Default::default() };
    for &pid in pids {
        stats.threads += status_threads(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default());
        let (fds, sockets) = fd_counts(pid);
        stats.fds += fds;
        stats.sockets += sockets;
    }
    let root = if main_pid > 0 { main_pid } else { pids.first().copied().unwrap_or(0) };
    if root > 0 {
        stats.ulimits = parse_limits(&std::fs::read_to_string(format!("/proc/{root}/limits")).unwrap_or_default());
    }
    stats
}

/// The pod's interfaces as cAdvisor counts them: without loopback, unless loopback is all
/// the pod has (no CNI network), so that such a pod still has its network series.
pub(super) fn pod_interfaces(netns: &Path) -> Vec<InterfaceStats> {
    let all = crate::util::net_dev::read_in_netns(netns).map(|t| crate::util::net_dev::parse(&t)).unwrap_or_default();
    let (lo, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|i| i.name == "lo");
    if others.is_empty() {
        lo
    } else {
        others
    }
}

// ---------------------------------------------------------------------------------------
// The filesystem of the writable layer.

/// The mount source (e.g. /dev/vda1) of the filesystem with device `major:minor`; the number
/// itself when no mount lists it.
pub fn mount_source(mounts: &[crate::runtime::mountinfo::MountEntry], major: u64, minor: u64) -> String {
    mounts.iter().find(|m| m.device == (major, minor)).map(|m| m.source.clone()).unwrap_or_else(|| format!("{major}:{minor}"))
}

pub(super) fn fs_stats(upper: &Path, usage: (u64, u64)) -> FsStats {
    use std::os::unix::fs::MetadataExt;
    let mut fs = FsStats { usage_bytes: usage.0, ..Default::default() };
    if let Ok(md) = std::fs::metadata(upper) {
        let dev = md.dev();
        fs.major = nix::sys::stat::major(dev);
        fs.minor = nix::sys::stat::minor(dev);
        let table = crate::runtime::mountinfo::parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        fs.device = mount_source(&table, fs.major, fs.minor);
    }
    if let Ok(s) = nix::sys::statvfs::statvfs(upper) {
        fs.limit_bytes = s.blocks() * s.fragment_size();
        fs.inodes_total = s.files();
        fs.inodes_free = s.files_free();
    }
    fs
}

/// The kernel's name of a block device (/sys/dev/block/MAJ:MIN/uevent DEVNAME) as a /dev path.
pub(super) fn block_device_name(major: u64, minor: u64) -> String {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).unwrap_or_default();
    uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(|n| format!("/dev/{n}")).unwrap_or_else(|| format!("{major}:{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files() {
        assert_eq!(status_threads("Name:\tsh\nState:\tS (sleeping)\nThreads:\t3\nSigQ:\t0/1\n"), 3);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 1048576              files     \n\
Max realtime timeout      unlimited            unlimited            us        \n";
        assert_eq!(
            parse_limits(limits),
            vec![("max_cpu_time".to_string(), u64::MAX), ("max_open_files".to_string(), 1024), ("max_realtime_timeout".to_string(), u64::MAX)]
        );
        let mountinfo = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n30 22 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n";
        let table = crate::runtime::mountinfo::parse(mountinfo);
        assert_eq!(mount_source(&table, 8, 1), "/dev/sda1");
        assert_eq!(mount_source(&table, 0, 25), "tmpfs");
        assert_eq!(mount_source(&table, 9, 9), "9:9");
    }
}
