//! What the node measures of the machine itself: memory, CPU, filesystems, process IDs and
//! the host's network — the eviction signals and the node part of /stats/summary.
use std::path::Path;
use std::sync::Mutex;

/// Node memory as the kubelet counts it: the working set is usage minus inactive file
/// pages, and memory.available is capacity minus the working set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    pub capacity: u64,
    pub usage: u64,
    pub working_set: u64,
    pub available: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse::<u64>().ok()
    })
}

/// Parse /proc/meminfo and /proc/vmstat text into the node's memory figures.
pub fn parse_memory(meminfo: &str, vmstat: &str) -> Option<Memory> {
    let kib = |k| meminfo_kib(meminfo, k).map(|v| v * 1024);
    let capacity = kib("MemTotal")?;
    let free = kib("MemFree")?;
    let inactive_file = kib("Inactive(file)").unwrap_or(0);
    let anon = kib("AnonPages").unwrap_or(0);
    let usage = capacity.saturating_sub(free);
    let working_set = usage.saturating_sub(inactive_file);
    let vm = |k: &str| vmstat.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.trim().parse::<u64>().ok()).unwrap_or(0);
    Some(Memory {
        capacity,
        usage,
        working_set,
        available: capacity.saturating_sub(working_set),
        rss: anon,
        page_faults: vm("pgfault"),
        major_page_faults: vm("pgmajfault"),
    })
}

pub fn memory() -> Option<Memory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    parse_memory(&meminfo, &vmstat)
}

/// Capacity and use of the filesystem holding a path (statvfs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fs {
    pub capacity: u64,
    pub available: u64,
    pub used: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs(path: &Path) -> Option<Fs> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    Some(Fs {
        capacity: blocks * frsize,
        available: s.blocks_available() as u64 * frsize,
        used: blocks.saturating_sub(s.blocks_free() as u64) * frsize,
        inodes: s.files() as u64,
        inodes_free: s.files_free() as u64,
    })
}

/// Process IDs: the most the kernel hands out and how many tasks exist now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pids {
    pub max: u64,
    pub current: u64,
}

pub fn pids() -> Option<Pids> {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let pid_max = read("/proc/sys/kernel/pid_max")?;
    let max = read("/proc/sys/kernel/threads-max").map(|t| t.min(pid_max)).unwrap_or(pid_max);
    // The fourth field of /proc/loadavg is "runnable/total scheduling entities".
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let current = loadavg.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()?;
    Some(Pids { max, current })
}

/// CPU time of the whole machine in nanoseconds (busy time of all CPUs from /proc/stat).
pub fn parse_cpu_ns(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if f.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Some(busy * (1_000_000_000 / clock_ticks()))
}

/// USER_HZ, the unit of /proc/stat.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// A counter sampled now and then, to turn cumulative CPU time into a rate.
#[derive(Default)]
pub struct CpuSampler {
    last: Mutex<Option<(i64, u64)>>,
}

impl CpuSampler {
    /// (cumulative ns, nano-cores since the previous sample).
    pub fn sample(&self) -> Option<(u64, Option<u64>)> {
        let total = parse_cpu_ns(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let now = crate::util::time::now_ns();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let rate = match *last {
            Some((t, u)) if now > t && total >= u => Some(((total - u) as u128 * 1_000_000_000 / (now - t) as u128) as u64),
            _ => None,
        };
        *last = Some((now, total));
        Some((total, rate))
    }
}

use crate::util::net_dev::parse as parse_net_dev;
pub use crate::util::net_dev::InterfaceCounters as Interface;

/// The host's interfaces, the one carrying the default route first.
pub fn host_interfaces() -> Vec<Interface> {
    let mut all = parse_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    });
    if let Some(pos) = default.and_then(|d| all.iter().position(|i| i.name == d)) {
        let i = all.remove(pos);
        all.insert(0, i);
    }
    all.retain(|i| i.name != "lo");
    all
}

/// Bytes and inodes under a directory (not following symlinks or crossing into other
/// filesystems), like `du`.
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else { return (0, 0) };
    let dev = top.dev();
    let mut bytes = top.blocks() * 512;
    let mut inodes = 1;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_available_is_capacity_minus_working_set() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\nAnonPages:       250 kB\n";
        let m = parse_memory(meminfo, "pgfault 42\npgmajfault 7\n").unwrap();
        assert_eq!(m.capacity, 1000 * 1024);
        assert_eq!(m.usage, 800 * 1024);
        assert_eq!(m.working_set, 500 * 1024);
        assert_eq!(m.available, 500 * 1024);
        assert_eq!((m.rss, m.page_faults, m.major_page_faults), (250 * 1024, 42, 7));
        assert!(parse_memory("garbage", "").is_none());
    }

    #[test]
    fn cpu_busy_time_leaves_out_idle_and_iowait() {
        let hz = clock_ticks();
        let ns = parse_cpu_ns("cpu  10 0 5 1000 50 1 1 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(ns, 17 * (1_000_000_000 / hz));
    }

    #[test]
    fn net_dev_lines_parse() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  eth0: 100 2 3 0 0 0 0 0 200 4 5 0 0 0 0 0\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        let i = parse_net_dev(text);
        assert_eq!(
            i[0],
            Interface { name: "eth0".into(), rx_bytes: 100, rx_packets: 2, rx_errors: 3, tx_bytes: 200, tx_packets: 4, tx_errors: 5, ..Default::default() }
        );
        assert_eq!(i.len(), 2);
    }
}
