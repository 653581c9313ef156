//! CRI stats from cgroups: CPU time and rate, memory working set, RSS and page faults,
//! process count, and pod network counters read inside the pod's network namespace.
use super::cgroups::Cgroup;
use super::state::{self, CgroupSpec};
use super::Runtime;
use crate::cri::v1 as cri;

fn v(x: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: x })
}

/// CPU, memory and process usage of one cgroup; None when it cannot be read (gone).
pub struct CgroupUsage {
    pub cpu: cri::CpuUsage,
    pub memory: cri::MemoryUsage,
    pub processes: u64,
}

impl Runtime {
    /// Drop the last CPU sample of a cgroup that goes away.
    pub(super) fn forget_cpu_sample(&self, spec: &CgroupSpec) {
        self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner()).remove(&spec.path);
    }

    /// How many cgroups have a CPU sample kept (reported in verbose Status).
    pub fn cpu_samples_kept(&self) -> usize {
        self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn cgroup_usage(&self, spec: &CgroupSpec) -> Option<CgroupUsage> {
        let cg = Cgroup::open(spec).ok()?;
        let stats = cg.stats().ok()?;
        let now = state::now_ns();
        let usage = stats.cpu.usage.usage_total;
        let nano_cores = {
            let mut samples = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
            let prev = samples.insert(spec.path.clone(), (now, usage));
            match prev {
                Some((t, u)) if now > t && usage >= u => Some(((usage - u) as u128 * 1_000_000_000 / (now - t) as u128) as u64),
                _ => None,
            }
        };
        let m = &stats.memory;
        let get = |k: &str| m.stats.get(k).copied().unwrap_or(0);
        let inactive_file = if m.stats.contains_key("total_inactive_file") { get("total_inactive_file") } else { get("inactive_file") };
        let rss = if m.stats.contains_key("total_rss") { get("total_rss") } else { get("anon") };
        let (pgfault, pgmajfault) =
            if m.stats.contains_key("total_pgfault") { (get("total_pgfault"), get("total_pgmajfault")) } else { (get("pgfault"), get("pgmajfault")) };
        let usage_bytes = m.memory.usage;
        let limit = m.memory.limit;
        let working_set = usage_bytes.saturating_sub(inactive_file);
        let available = if limit > 0 && limit < (1u64 << 62) { Some(limit.saturating_sub(working_set)) } else { None };
        Some(CgroupUsage {
            cpu: cri::CpuUsage { timestamp: now, usage_core_nano_seconds: v(usage), usage_nano_cores: nano_cores.and_then(v), psi: None },
            memory: cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: v(working_set),
                available_bytes: available.and_then(v),
                usage_bytes: v(usage_bytes),
                rss_bytes: v(rss),
                page_faults: v(pgfault),
                major_page_faults: v(pgmajfault),
                psi: None,
            },
            processes: if stats.pids.current > 0 { stats.pids.current } else { cg.pids().len() as u64 },
        })
    }
}

/// Interface counters of the network namespace pinned at `netns`, the default interface (eth0,
/// else the first that is not loopback) apart.
pub fn network_usage(netns: &std::path::Path) -> Option<cri::NetworkUsage> {
    let text = crate::util::net_dev::read_in_netns(netns)?;
    let now = state::now_ns();
    let interfaces: Vec<cri::NetworkInterfaceUsage> = crate::util::net_dev::parse(&text)
        .into_iter()
        .map(|i| cri::NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: v(i.rx_bytes),
            rx_errors: v(i.rx_errors),
            tx_bytes: v(i.tx_bytes),
            tx_errors: v(i.tx_errors),
        })
        .collect();
    let default = interfaces.iter().find(|i| i.name == "eth0").or_else(|| interfaces.iter().find(|i| i.name != "lo")).cloned();
    let others = interfaces.into_iter().filter(|i| Some(&i.name) != default.as_ref().map(|d| &d.name)).collect();
    Some(cri::NetworkUsage { timestamp: now, default_interface: default, interfaces: others })
}
