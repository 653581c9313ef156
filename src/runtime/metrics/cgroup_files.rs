//! cgroup files as the metrics read them: v1 (a directory per controller) and v2 (one
//! directory), both into the same samples.
use super::*;
use std::collections::HashMap;

/// "key value" lines (cpu.stat, memory.stat, memory.events, cpuacct.stat, oom_control).
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let key = f.next()?;
            let value = f.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// A file holding one number; None for "max", "-1" or nothing (no limit, or unreadable).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Limits the kernel reports as a huge page-aligned number (v1's unlimited memory) are no limit.
pub(super) fn limit_or_zero(v: Option<u64>) -> u64 {
    match v {
        Some(x) if x < (1 << 62) => x,
        _ => 0,
    }
}

pub(super) fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

pub(super) fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The working set as the kubelet defines it: usage minus inactive file pages.
pub(super) fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// cgroup v1: one directory per controller.
pub mod v1 {
    use super::*;

    /// blkio "MAJ:MIN Operation value" lines (io_service_bytes, io_serviced), by device.
    pub fn parse_blkio(text: &str) -> Vec<((u64, u64), String, u64)> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let dev = parse_dev(f.next()?)?;
                let op = f.next()?.to_string();
                let value = f.next()?.parse().ok()?;
                Some((dev, op, value))
            })
            .collect()
    }

    /// Bytes and operations per device from the two blkio files.
    pub fn device_io(bytes: &str, ops: &str) -> Vec<DeviceIo> {
        let mut by_dev: Vec<DeviceIo> = Vec::new();
        let mut entry = |(major, minor): (u64, u64)| -> usize {
            match by_dev.iter().position(|d| d.major == major && d.minor == minor) {
                Some(i) => i,
                None => {
                    by_dev.push(DeviceIo { major, minor, ..Default::default() });
                    by_dev.len() - 1
                }
            }
        };
        let mut rows = Vec::new();
        for (dev, op, v) in parse_blkio(bytes) {
            rows.push((entry(dev), true, op, v));
        }
        for (dev, op, v) in parse_blkio(ops) {
            rows.push((entry(dev), false, op, v));
        }
        for (i, is_bytes, op, v) in rows {
            let d = &mut by_dev[i];
            match (is_bytes, op.as_str()) {
                (true, "Read") => d.read_bytes = v,
                (true, "Write") => d.write_bytes = v,
                (false, "Read") => d.reads = v,
                (false, "Write") => d.writes = v,
                _ => {}
            }
        }
        by_dev
    }

    /// CPU from cpuacct (usage and user/system split) and cpu (CFS throttling).
    pub fn cpu(usage: &str, usage_user: &str, usage_sys: &str, cpuacct_stat: &str, cpu_stat: &str, clock_ticks: u64) -> CpuStats {
        let throttling = flat_keyed(cpu_stat);
        let get = |k: &str| throttling.get(k).copied().unwrap_or(0);
        // cpuacct.usage_{user,sys} (ns) are newer; cpuacct.stat counts USER_HZ ticks.
        let ticks = flat_keyed(cpuacct_stat);
        let from_ticks = |k: &str| ticks.get(k).copied().unwrap_or(0) * (NS_PER_SEC / clock_ticks.max(1));
        CpuStats {
            usage_ns: single_value(usage).unwrap_or(0),
            user_ns: single_value(usage_user).unwrap_or_else(|| from_ticks("user")),
            system_ns: single_value(usage_sys).unwrap_or_else(|| from_ticks("system")),
            periods: get("nr_periods"),
            throttled_periods: get("nr_throttled"),
            throttled_ns: get("throttled_time"),
        }
    }

    /// The memory controller's files, by name.
    pub struct MemoryFiles<'a> {
        pub stat: &'a str,
        pub usage: &'a str,
        pub max_usage: &'a str,
        pub failcnt: &'a str,
        pub memsw_usage: &'a str,
        pub kmem_usage: &'a str,
        pub oom_control: &'a str,
    }

    pub fn memory(f: &MemoryFiles) -> MemoryStats {
        let stat = flat_keyed(f.stat);
        // total_* cover the cgroup and its descendants; plain keys the cgroup alone.
        let get = |k: &str| stat.get(format!("total_{k}").as_str()).or_else(|| stat.get(k)).copied().unwrap_or(0);
        let local = |k: &str| stat.get(k).copied().unwrap_or(0);
        let usage = single_value(f.usage).unwrap_or(0);
        // memsw counts memory plus swap; without swap accounting memory.stat may still say.
        let swap = match single_value(f.memsw_usage) {
            Some(memsw) => memsw.saturating_sub(usage),
            None => get("swap"),
        };
        MemoryStats {
            usage,
            max_usage: single_value(f.max_usage).unwrap_or(0),
            working_set: working_set(usage, get("inactive_file")),
            rss: get("rss"),
            cache: get("cache"),
            mapped_file: get("mapped_file"),
            swap,
            kernel: single_value(f.kmem_usage).unwrap_or(0),
            failcnt: single_value(f.failcnt).unwrap_or(0),
            oom_kills: flat_keyed(f.oom_control).get("oom_kill").copied().unwrap_or(0),
            pgfault: local("pgfault"),
            pgmajfault: local("pgmajfault"),
            hierarchy_pgfault: get("pgfault"),
            hierarchy_pgmajfault: get("pgmajfault"),
        }
    }

    /// cpu.cfs_quota_us is -1 when unlimited; memory limits are huge numbers when unset.
    pub fn limits(period: &str, quota: &str, shares: &str, mem_limit: &str, soft_limit: &str, memsw_limit: &str, pids_max: &str) -> CgroupLimits {
        CgroupLimits {
            cpu_period_us: single_value(period).unwrap_or(0),
            cpu_quota_us: single_value(quota).unwrap_or(0),
            cpu_shares: single_value(shares).unwrap_or(0),
            memory_limit: limit_or_zero(single_value(mem_limit)),
            memory_reservation: limit_or_zero(single_value(soft_limit)),
            swap_limit: limit_or_zero(single_value(memsw_limit)),
            pids_max: single_value(pids_max).unwrap_or(0),
        }
    }

    /// The blkio files with per-device lines, preferring the throttle layer (it sees every
    /// device whatever the I/O scheduler) over the BFQ/CFQ scheduler's own counters.
    fn blkio_files(dir: &Path) -> (String, String) {
        for prefix in ["blkio.throttle.", "blkio.bfq.", "blkio."] {
            let bytes = read(dir, &format!("{prefix}io_service_bytes_recursive"));
            if !parse_blkio(&bytes).is_empty() {
                return (bytes, read(dir, &format!("{prefix}io_serviced_recursive")));
            }
        }
        (String::new(), String::new())
    }

    /// Read a v1 cgroup; None when it is gone (its cpuacct directory no longer exists).
    pub fn read_cgroup(spec: &CgroupSpec) -> Option<CgroupSample> {
        let dir = |c: &str| cgroups::fs_path(spec, c);
        let (cpuacct, cpu_dir, mem, pids, blkio) = (dir("cpuacct"), dir("cpu"), dir("memory"), dir("pids"), dir("blkio"));
        let usage = std::fs::read_to_string(cpuacct.join("cpuacct.usage")).ok()?;
        let cpu = cpu(
            &usage,
            &read(&cpuacct, "cpuacct.usage_user"),
            &read(&cpuacct, "cpuacct.usage_sys"),
            &read(&cpuacct, "cpuacct.stat"),
            &read(&cpu_dir, "cpu.stat"),
            clock_ticks(),
        );
        let memory = memory(&MemoryFiles {
            stat: &read(&mem, "memory.stat"),
            usage: &read(&mem, "memory.usage_in_bytes"),
            max_usage: &read(&mem, "memory.max_usage_in_bytes"),
            failcnt: &read(&mem, "memory.failcnt"),
            memsw_usage: &read(&mem, "memory.memsw.usage_in_bytes"),
            kmem_usage: &read(&mem, "memory.kmem.usage_in_bytes"),
            oom_control: &read(&mem, "memory.oom_control"),
        });
        let limits = limits(
            &read(&cpu_dir, "cpu.cfs_period_us"),
            &read(&cpu_dir, "cpu.cfs_quota_us"),
            &read(&cpu_dir, "cpu.shares"),
            &read(&mem, "memory.limit_in_bytes"),
            &read(&mem, "memory.soft_limit_in_bytes"),
            &read(&mem, "memory.memsw.limit_in_bytes"),
            &read(&pids, "pids.max"),
        );
        let (bytes, ops) = blkio_files(&blkio);
        Some(CgroupSample { cpu, memory, limits, io: device_io(&bytes, &ops) })
    }

    fn clock_ticks() -> u64 {
        // SAFETY: sysconf only reads a system constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as u64
        } else {
            100
        }
    }
}

/// cgroup v2: one directory, the unified hierarchy's interface files.
pub mod v2 {
    use super::*;

    /// cpu.stat: usage, user and system time and throttling, all in microseconds.
    pub fn cpu(cpu_stat: &str) -> CpuStats {
        let s = flat_keyed(cpu_stat);
        let get = |k: &str| s.get(k).copied().unwrap_or(0);
        CpuStats {
            usage_ns: get("usage_usec") * 1000,
            user_ns: get("user_usec") * 1000,
            system_ns: get("system_usec") * 1000,
            periods: get("nr_periods"),
            throttled_periods: get("nr_throttled"),
            throttled_ns: get("throttled_usec") * 1000,
        }
    }

    /// cpu.max: "$MAX $PERIOD", $MAX "max" when unlimited → (quota, period) in µs.
    pub fn cpu_max(text: &str) -> (u64, u64) {
        let mut f = text.split_whitespace();
        let quota = f.next().and_then(|q| q.parse().ok()).unwrap_or(0);
        let period = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (quota, period)
    }

    /// cpu.weight (1..10000) back to v1 shares (2..262144): the inverse of the mapping the
    /// weight was written with (libcgroups, runc ≥ 1.3.2, crun ≥ 1.23):
    /// weight = ⌈10^((L² + 125·L)/612 − 7/34)⌉ with L = log2(shares), so that the default
    /// shares 1024 is the default weight 100. Solving for L: L² + 125·L − 612·(log10(w) + 7/34) = 0.
    pub fn weight_to_shares(weight: u64) -> u64 {
        if weight == 0 {
            return 0;
        }
        let w = weight.clamp(1, 10000);
        if w == 1 {
            return 2;
        }
        if w == 10000 {
            return 262_144;
        }
        let c = 612.0 * ((w as f64).log10() + 7.0 / 34.0);
        let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * c).sqrt()) / 2.0;
        (2f64.powf(l).round() as u64).clamp(2, 262_144)
    }

    /// The memory controller's files, by name.
    pub struct MemoryFiles<'a> {
        pub stat: &'a str,
        pub current: &'a str,
        pub peak: &'a str,
        pub events: &'a str,
        pub swap_current: &'a str,
    }

    pub fn memory(f: &MemoryFiles) -> MemoryStats {
        let stat = flat_keyed(f.stat);
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        let events = flat_keyed(f.events);
        let usage = single_value(f.current).unwrap_or(0);
        // "kernel" exists since Linux 5.18; before, its main parts are listed one by one.
        let kernel = stat.get("kernel").copied().unwrap_or_else(|| get("kernel_stack") + get("pagetables") + get("percpu") + get("slab"));
        // v2's memory.stat is hierarchical: the cgroup and its subtree are one scope.
        MemoryStats {
            usage,
            max_usage: single_value(f.peak).unwrap_or(0),
            working_set: working_set(usage, get("inactive_file")),
            rss: get("anon"),
            cache: get("file"),
            mapped_file: get("file_mapped"),
            swap: single_value(f.swap_current).unwrap_or(0),
            kernel,
            // v2 has no failcnt: memory.events' "max" counts the times usage hit memory.max.
            failcnt: events.get("max").copied().unwrap_or(0),
            oom_kills: events.get("oom_kill").copied().unwrap_or(0),
            pgfault: get("pgfault"),
            pgmajfault: get("pgmajfault"),
            hierarchy_pgfault: get("pgfault"),
            hierarchy_pgmajfault: get("pgmajfault"),
        }
    }

    /// io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N" per device.
    pub fn io_stat(text: &str) -> Vec<DeviceIo> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (major, minor) = parse_dev(f.next()?)?;
                let mut d = DeviceIo { major, minor, ..Default::default() };
                for kv in f {
                    let Some((k, v)) = kv.split_once('=') else { continue };
                    let v = v.parse().unwrap_or(0);
                    match k {
                        "rbytes" => d.read_bytes = v,
                        "wbytes" => d.write_bytes = v,
                        "rios" => d.reads = v,
                        "wios" => d.writes = v,
                        _ => {}
                    }
                }
                Some(d)
            })
            .collect()
    }

    pub fn limits(cpu_max_text: &str, cpu_weight: &str, memory_max: &str, memory_low: &str, swap_max: &str, pids_max: &str) -> CgroupLimits {
        let (quota, period) = cpu_max(cpu_max_text);
        CgroupLimits {
            cpu_period_us: period,
            cpu_quota_us: quota,
            cpu_shares: single_value(cpu_weight).map(weight_to_shares).unwrap_or(0),
            memory_limit: single_value(memory_max).unwrap_or(0),
            memory_reservation: single_value(memory_low).unwrap_or(0),
            swap_limit: single_value(swap_max).unwrap_or(0),
            pids_max: single_value(pids_max).unwrap_or(0),
        }
    }

    /// Read a v2 cgroup; None when it is gone.
    pub fn read_cgroup(spec: &CgroupSpec) -> Option<CgroupSample> {
        let dir = cgroups::fs_path(spec, "");
        let cpu_stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let memory = memory(&MemoryFiles {
            stat: &read(&dir, "memory.stat"),
            current: &read(&dir, "memory.current"),
            peak: &read(&dir, "memory.peak"),
            events: &read(&dir, "memory.events"),
            swap_current: &read(&dir, "memory.swap.current"),
        });
        let limits = limits(
            &read(&dir, "cpu.max"),
            &read(&dir, "cpu.weight"),
            &read(&dir, "memory.max"),
            &read(&dir, "memory.low"),
            &read(&dir, "memory.swap.max"),
            &read(&dir, "pids.max"),
        );
        Some(CgroupSample { cpu: cpu(&cpu_stat), memory, limits, io: io_stat(&read(&dir, "io.stat")) })
    }
}

pub fn read_cgroup(mode: CgroupMode, spec: &CgroupSpec) -> Option<CgroupSample> {
    match mode {
        CgroupMode::V1 => v1::read_cgroup(spec),
        CgroupMode::V2 => v2::read_cgroup(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MEMORY_STAT: &str = "cache 4096\nrss 8192\nmapped_file 1024\nswap 0\npgfault 10\npgmajfault 1\ninactive_file 512\n\
total_cache 20971520\ntotal_rss 1048576\ntotal_mapped_file 4096\ntotal_swap 0\ntotal_pgfault 300\ntotal_pgmajfault 3\n\
total_inactive_file 1048576\ntotal_active_file 0\n";

    #[test]
    fn v1_memory_uses_hierarchical_totals() {
        let m = v1::memory(&v1::MemoryFiles {
            stat: V1_MEMORY_STAT,
            usage: "23068672\n",
            max_usage: "30000000\n",
            failcnt: "2\n",
            memsw_usage: "23072768\n",
            kmem_usage: "65536\n",
            oom_control: "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        });
        assert_eq!(m.usage, 23068672);
        assert_eq!(m.working_set, 23068672 - 1048576);
        assert_eq!((m.cache, m.rss, m.mapped_file), (20971520, 1048576, 4096));
        assert_eq!(m.swap, 4096, "memsw minus memory");
        assert_eq!((m.max_usage, m.failcnt, m.kernel, m.oom_kills), (30000000, 2, 65536, 1));
        assert_eq!((m.pgfault, m.pgmajfault, m.hierarchy_pgfault, m.hierarchy_pgmajfault), (10, 1, 300, 3));
        // Without swap accounting there is no memsw file and swap comes from memory.stat.
        let no_memsw =
            v1::memory(&v1::MemoryFiles { stat: V1_MEMORY_STAT, usage: "10", max_usage: "", failcnt: "", memsw_usage: "", kmem_usage: "", oom_control: "" });
        assert_eq!((no_memsw.swap, no_memsw.working_set, no_memsw.oom_kills), (0, 0, 0));
    }

    #[test]
    fn v1_cpu_prefers_nanoseconds_and_falls_back_to_ticks() {
        let stat = "nr_periods 40\nnr_throttled 4\nthrottled_time 2500000000\nnr_bursts 0\n";
        let c = v1::cpu("3500000000\n", "3000000000\n", "500000000\n", "user 1\nsystem 1\n", stat, 100);
        assert_eq!(
            c,
            CpuStats {
                usage_ns: 3_500_000_000,
                user_ns: 3_000_000_000,
                system_ns: 500_000_000,
                periods: 40,
                throttled_periods: 4,
                throttled_ns: 2_500_000_000
            }
        );
        let old_kernel = v1::cpu("3500000000\n", "", "", "user 250\nsystem 50\n", "", 100);
        assert_eq!((old_kernel.user_ns, old_kernel.system_ns), (2_500_000_000, 500_000_000));
    }

    #[test]
    fn v1_limits_treat_unset_as_zero() {
        let l = v1::limits("100000\n", "-1\n", "1024\n", "9223372036854771712\n", "9223372036854771712\n", "", "max\n");
        assert_eq!(
            l,
            CgroupLimits { cpu_period_us: 100000, cpu_quota_us: 0, cpu_shares: 1024, memory_limit: 0, memory_reservation: 0, swap_limit: 0, pids_max: 0 }
        );
        let set = v1::limits("100000", "50000", "512", "268435456", "134217728", "536870912", "100");
        assert_eq!((set.cpu_quota_us, set.memory_limit, set.memory_reservation, set.swap_limit, set.pids_max), (50000, 268435456, 134217728, 536870912, 100));
    }

    #[test]
    fn v1_blkio_by_device() {
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n253:1 Read 1\n253:1 Write 2\nTotal 12291\n";
        let ops = "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\n253:1 Read 5\nTotal 3\n";
        let io = v1::device_io(bytes, ops);
        assert_eq!(io.len(), 2);
        assert_eq!(io[0], DeviceIo { major: 8, minor: 0, read_bytes: 4096, write_bytes: 8192, reads: 1, writes: 2 });
        assert_eq!(io[1], DeviceIo { major: 253, minor: 1, read_bytes: 1, write_bytes: 2, reads: 5, writes: 0 });
        assert!(v1::device_io("Total 0\n", "Total 0\n").is_empty());
    }

    #[test]
    fn v2_cpu_stat_is_in_microseconds() {
        let c = v2::cpu(
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 1500000\nnr_bursts 0\nburst_usec 0\n",
        );
        assert_eq!(
            c,
            CpuStats {
                usage_ns: 2_500_000_000,
                user_ns: 2_000_000_000,
                system_ns: 500_000_000,
                periods: 10,
                throttled_periods: 3,
                throttled_ns: 1_500_000_000
            }
        );
    }

    #[test]
    fn v2_memory_from_stat_current_and_events() {
        let stat =
            "anon 1048576\nfile 20971520\nkernel 262144\nkernel_stack 16384\nfile_mapped 8192\nshmem 20971520\ninactive_file 4096\npgfault 100\npgmajfault 2\n";
        let m = v2::memory(&v2::MemoryFiles {
            stat,
            current: "22282240\n",
            peak: "30000000\n",
            events: "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
            swap_current: "0\n",
        });
        assert_eq!(m.working_set, 22282240 - 4096);
        assert_eq!((m.rss, m.cache, m.mapped_file, m.kernel), (1048576, 20971520, 8192, 262144));
        assert_eq!((m.failcnt, m.oom_kills, m.max_usage), (7, 1, 30000000));
        assert_eq!((m.pgfault, m.hierarchy_pgfault, m.pgmajfault, m.hierarchy_pgmajfault), (100, 100, 2, 2));
        // Before Linux 5.18 there is no "kernel" key.
        let old = v2::memory(&v2::MemoryFiles {
            stat: "kernel_stack 16384\npagetables 4096\npercpu 80\nslab 1000\n",
            current: "",
            peak: "",
            events: "",
            swap_current: "",
        });
        assert_eq!(old.kernel, 16384 + 4096 + 80 + 1000);
    }

    #[test]
    fn v2_limits_cpu_max_weight_and_max() {
        assert_eq!(v2::cpu_max("max 100000\n"), (0, 100000));
        assert_eq!(v2::cpu_max("50000 100000\n"), (50000, 100000));
        assert_eq!(v2::weight_to_shares(1), 2);
        assert_eq!(v2::weight_to_shares(10000), 262144);
        assert_eq!(v2::weight_to_shares(100), 1024, "the default weight is the default shares");
        // What libcgroups writes for a few shares reads back within the rounding of the weight.
        for shares in [2u64, 102, 512, 1024, 2048, 100_000] {
            let l = (shares as f64).log2();
            let weight = 10f64.powf((l * l + 125.0 * l) / 612.0 - 7.0 / 34.0).ceil() as u64;
            let back = v2::weight_to_shares(weight);
            assert!(back.abs_diff(shares) * 100 <= shares * 6 + 100, "{shares} → weight {weight} → {back}");
        }
        let l = v2::limits("max 100000\n", "100\n", "max\n", "0\n", "max\n", "max\n");
        assert_eq!(
            l,
            CgroupLimits { cpu_period_us: 100000, cpu_quota_us: 0, cpu_shares: 1024, memory_limit: 0, memory_reservation: 0, swap_limit: 0, pids_max: 0 }
        );
        let set = v2::limits("25000 100000", "50", "268435456", "1048576", "0", "64");
        assert_eq!((set.cpu_quota_us, set.memory_limit, set.memory_reservation, set.pids_max), (25000, 268435456, 1048576, 64));
    }

    #[test]
    fn v2_io_stat_by_device() {
        let io = v2::io_stat("8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n254:0 rbytes=0 wbytes=0 rios=0 wios=0\n");
        assert_eq!(io[0], DeviceIo { major: 8, minor: 16, read_bytes: 1459200, write_bytes: 314773504, reads: 192, writes: 353 });
        assert_eq!(io.len(), 2);
        assert!(v2::io_stat("").is_empty());
    }
}
