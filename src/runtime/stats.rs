//! CRI stats from cgroups: CPU time and rate, memory working set, RSS and page faults,
//! process count, and pod network counters read inside the pod's network namespace.
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

    /// From the cgroup's own files (v1 or v2, in the same units either way) through the
    /// readers the metrics use, so CRI stats and /metrics/cadvisor agree.
    pub fn cgroup_usage(&self, spec: &CgroupSpec) -> Option<CgroupUsage> {
        let sample = super::metrics::cgroup_sample(spec)?;
        let now = state::now_ns();
        let usage = sample.cpu.usage_ns;
        let nano_cores = {
            let mut samples = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
            let prev = samples.insert(spec.path.clone(), (now, usage));
            match prev {
                Some((t, u)) if now > t && usage >= u => Some(((usage - u) as u128 * 1_000_000_000 / (now - t) as u128) as u64),
                _ => None,
            }
        };
        let m = &sample.memory;
        let limit = sample.limits.memory_limit;
        let available = (limit > 0).then(|| limit.saturating_sub(m.working_set));
        Some(CgroupUsage {
            cpu: cri::CpuUsage { timestamp: now, usage_core_nano_seconds: v(usage), usage_nano_cores: nano_cores.and_then(v), psi: None },
            memory: cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: v(m.working_set),
                available_bytes: available.and_then(v),
                usage_bytes: v(m.usage),
                rss_bytes: v(m.rss),
                page_faults: v(m.hierarchy_pgfault),
                major_page_faults: v(m.hierarchy_pgmajfault),
                psi: None,
            },
            processes: process_count(spec),
        })
    }
}

/// pids.current when the pids controller counts for the cgroup, else its processes listed.
fn process_count(spec: &CgroupSpec) -> u64 {
    let file = super::cgroups::fs_path(spec, "pids").join("pids.current");
    match std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse::<u64>().ok()) {
        Some(n) => n,
        None => super::cgroups::pids_in(spec).len() as u64,
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
