//! CRI metrics (ListMetricDescriptors / ListPodSandboxMetrics) under cAdvisor's names and
//! labels, as a kubelet with PodAndContainerStatsFromCRI serves them on /metrics/cadvisor.
//!
//! Per running container: its cgroup (v1 controller directories or the one v2 directory),
//! /proc/<pid>/{status,fd,limits} of the processes in it, statvfs and a walk of its
//! writable upper directory. Per pod: /proc/net/dev read inside the pod's network namespace.
//!
//! CRI carries every value as an unsigned integer, so `*_seconds*` metrics are whole seconds
//! (truncated, as CRI-O does) and an unlimited ulimit is RLIM_INFINITY (u64::MAX).
use super::cgroups::{self, CgroupMode};
use super::container::{ContainerState, Observed};
use super::records::{self, ContainerRecord, SandboxRecord};
use super::state::{self, CgroupSpec};
use super::Runtime;
use crate::cri::v1 as cri;
use std::path::{Path, PathBuf};

mod cgroup_files;
mod procfs;
use cgroup_files::*;
use procfs::*;

const NS_PER_SEC: u64 = 1_000_000_000;

/// The labels every series carries, in the order of their values (cAdvisor's names).
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric family: its name, help, CRI type and the labels it adds to `BASE_LABELS`.
struct Def {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    extra: &'static [&'static str],
}

const fn counter(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Def {
    Def { name, help, kind: cri::MetricType::Counter, extra }
}

const fn gauge(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Def {
    Def { name, help, kind: cri::MetricType::Gauge, extra }
}

const NONE: &[&str] = &[];
const DEVICE: &[&str] = &["device"];
const INTERFACE: &[&str] = &["interface"];

/// Every metric served; names, help texts and labels follow cAdvisor's Prometheus docs.
const DEFS: &[Def] = &[
    counter("container_blkio_device_usage_total", "Blkio device bytes usage", &["device", "major", "minor", "operation"]),
    counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", NONE),
    counter("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", NONE),
    counter("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled (whole seconds).", NONE),
    counter("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds (whole seconds).", NONE),
    counter("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds (whole seconds).", &["cpu"]),
    counter("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds (whole seconds).", NONE),
    gauge("container_file_descriptors", "Number of open file descriptors for the container.", NONE),
    gauge("container_fs_inodes_free", "Number of available Inodes", DEVICE),
    gauge("container_fs_inodes_total", "Number of Inodes", DEVICE),
    gauge("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", DEVICE),
    counter("container_fs_reads_bytes_total", "Cumulative count of bytes read", DEVICE),
    counter("container_fs_reads_total", "Cumulative count of reads completed", DEVICE),
    gauge("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", DEVICE),
    counter("container_fs_writes_bytes_total", "Cumulative count of bytes written", DEVICE),
    counter("container_fs_writes_total", "Cumulative count of writes completed", DEVICE),
    gauge("container_last_seen", "Last time a container was seen by the exporter (Unix seconds)", NONE),
    gauge("container_memory_cache", "Number of bytes of page cache memory.", NONE),
    counter("container_memory_failcnt", "Number of memory usage hits limits", NONE),
    counter("container_memory_failures_total", "Cumulative count of memory allocation failures.", &["failure_type", "scope"]),
    gauge("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", NONE),
    gauge("container_memory_mapped_file", "Size of memory mapped files in bytes.", NONE),
    gauge("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", NONE),
    gauge("container_memory_rss", "Size of RSS in bytes.", NONE),
    gauge("container_memory_swap", "Container swap usage in bytes.", NONE),
    gauge("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", NONE),
    gauge("container_memory_working_set_bytes", "Current working set in bytes.", NONE),
    counter("container_network_receive_bytes_total", "Cumulative count of bytes received", INTERFACE),
    counter("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", INTERFACE),
    counter("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", INTERFACE),
    counter("container_network_receive_packets_total", "Cumulative count of packets received", INTERFACE),
    counter("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", INTERFACE),
    counter("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", INTERFACE),
    counter("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", INTERFACE),
    counter("container_network_transmit_packets_total", "Cumulative count of packets transmitted", INTERFACE),
    counter("container_oom_events_total", "Count of out of memory events observed for the container", NONE),
    gauge("container_processes", "Number of processes running inside the container.", NONE),
    gauge("container_sockets", "Number of open sockets for the container.", NONE),
    gauge("container_spec_cpu_period", "CPU period of the container (microseconds).", NONE),
    gauge("container_spec_cpu_quota", "CPU quota of the container (microseconds per period, 0 if unlimited).", NONE),
    gauge("container_spec_cpu_shares", "CPU share of the container.", NONE),
    gauge("container_spec_memory_limit_bytes", "Memory limit for the container (0 if unlimited).", NONE),
    gauge("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container (0 if unlimited).", NONE),
    gauge("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container (0 if unlimited).", NONE),
    gauge("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", NONE),
    gauge("container_threads", "Number of threads running inside the container", NONE),
    gauge("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", NONE),
    gauge("container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited is RLIM_INFINITY (18446744073709551615)", &["ulimit"]),
];

/// ListMetricDescriptors: one descriptor per metric family.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DEFS.iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: BASE_LABELS.iter().chain(d.extra).map(|k| k.to_string()).collect(),
        })
        .collect()
}

fn definition(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

// ---------------------------------------------------------------------------------------
// What is measured, whichever hierarchy or file it comes from.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CpuStats {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage: u64,
    pub max_usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub swap: u64,
    pub kernel: u64,
    pub failcnt: u64,
    pub oom_kills: u64,
    /// Page faults of this cgroup alone and of its whole subtree.
    pub pgfault: u64,
    pub pgmajfault: u64,
    pub hierarchy_pgfault: u64,
    pub hierarchy_pgmajfault: u64,
}

/// Limits set on the cgroup; 0 where there is none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_period_us: u64,
    pub cpu_quota_us: u64,
    pub cpu_shares: u64,
    pub memory_limit: u64,
    pub memory_reservation: u64,
    pub swap_limit: u64,
    pub pids_max: u64,
}

/// Block I/O of the cgroup on one device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupSample {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub limits: CgroupLimits,
    pub io: Vec<DeviceIo>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessStats {
    pub processes: u64,
    pub threads: u64,
    pub fds: u64,
    pub sockets: u64,
    /// Soft limits of the container's main process: (snake_case name, value).
    pub ulimits: Vec<(String, u64)>,
}

/// The filesystem holding the container's writable layer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsStats {
    pub device: String,
    pub major: u64,
    pub minor: u64,
    pub usage_bytes: u64,
    pub limit_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

pub use crate::util::net_dev::InterfaceCounters as InterfaceStats;

/// Everything one container reports at one moment.
#[derive(Debug, Default, Clone)]
pub struct ContainerSample {
    pub cgroup: CgroupSample,
    pub processes: ProcessStats,
    pub fs: FsStats,
    /// Unix nanoseconds.
    pub started_at: i64,
}

// ---------------------------------------------------------------------------------------
// Series.

/// The series of one container or pod: its label values, timestamp and metrics so far.
pub struct Series {
    base: Vec<String>,
    timestamp: i64,
    pub metrics: Vec<cri::Metric>,
}

impl Series {
    pub fn new(base: [String; 6], timestamp: i64) -> Series {
        Series { base: base.into(), timestamp, metrics: Vec::new() }
    }

    /// Add one series; `extra` are the values of the metric's own labels, in order.
    fn put(&mut self, name: &str, extra: &[&str], value: u64) {
        let Some(def) = definition(name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        if extra.len() != def.extra.len() {
            debug_assert!(false, "metric {name}: {} label values for {} keys", extra.len(), def.extra.len());
            return;
        }
        let mut label_values = self.base.clone();
        label_values.extend(extra.iter().map(|v| v.to_string()));
        self.metrics.push(cri::Metric {
            name: def.name.to_string(),
            timestamp: self.timestamp,
            metric_type: def.kind as i32,
            label_values,
            value: Some(cri::UInt64Value { value }),
        });
    }
}

fn cpu_series(s: &mut Series, cpu: &CpuStats) {
    s.put("container_cpu_usage_seconds_total", &["total"], cpu.usage_ns / NS_PER_SEC);
    s.put("container_cpu_user_seconds_total", &[], cpu.user_ns / NS_PER_SEC);
    s.put("container_cpu_system_seconds_total", &[], cpu.system_ns / NS_PER_SEC);
    s.put("container_cpu_cfs_periods_total", &[], cpu.periods);
    s.put("container_cpu_cfs_throttled_periods_total", &[], cpu.throttled_periods);
    s.put("container_cpu_cfs_throttled_seconds_total", &[], cpu.throttled_ns / NS_PER_SEC);
}

fn memory_series(s: &mut Series, m: &MemoryStats) {
    s.put("container_memory_usage_bytes", &[], m.usage);
    s.put("container_memory_max_usage_bytes", &[], m.max_usage);
    s.put("container_memory_working_set_bytes", &[], m.working_set);
    s.put("container_memory_rss", &[], m.rss);
    s.put("container_memory_cache", &[], m.cache);
    s.put("container_memory_mapped_file", &[], m.mapped_file);
    s.put("container_memory_swap", &[], m.swap);
    s.put("container_memory_kernel_usage", &[], m.kernel);
    s.put("container_memory_failcnt", &[], m.failcnt);
    s.put("container_oom_events_total", &[], m.oom_kills);
    s.put("container_memory_failures_total", &["pgfault", "container"], m.pgfault);
    s.put("container_memory_failures_total", &["pgmajfault", "container"], m.pgmajfault);
    s.put("container_memory_failures_total", &["pgfault", "hierarchy"], m.hierarchy_pgfault);
    s.put("container_memory_failures_total", &["pgmajfault", "hierarchy"], m.hierarchy_pgmajfault);
}

fn spec_series(s: &mut Series, l: &CgroupLimits) {
    s.put("container_spec_cpu_period", &[], l.cpu_period_us);
    s.put("container_spec_cpu_quota", &[], l.cpu_quota_us);
    s.put("container_spec_cpu_shares", &[], l.cpu_shares);
    s.put("container_spec_memory_limit_bytes", &[], l.memory_limit);
    s.put("container_spec_memory_reservation_limit_bytes", &[], l.memory_reservation);
    s.put("container_spec_memory_swap_limit_bytes", &[], l.swap_limit);
    s.put("container_threads_max", &[], l.pids_max);
}

fn process_series(s: &mut Series, p: &ProcessStats) {
    s.put("container_processes", &[], p.processes);
    s.put("container_threads", &[], p.threads);
    s.put("container_file_descriptors", &[], p.fds);
    s.put("container_sockets", &[], p.sockets);
    for (name, value) in &p.ulimits {
        s.put("container_ulimits_soft", &[name.as_str()], *value);
    }
}

/// Filesystem and block I/O series. Without per-device I/O accounting (no blkio data for
/// the cgroup) the writable layer's device is reported with zeros.
fn fs_series(s: &mut Series, fs: &FsStats, io: &[DeviceIo], device_name: impl Fn(u64, u64) -> String) {
    let device = fs.device.as_str();
    s.put("container_fs_usage_bytes", &[device], fs.usage_bytes);
    s.put("container_fs_limit_bytes", &[device], fs.limit_bytes);
    s.put("container_fs_inodes_total", &[device], fs.inodes_total);
    s.put("container_fs_inodes_free", &[device], fs.inodes_free);
    let fallback = [DeviceIo { major: fs.major, minor: fs.minor, ..Default::default() }];
    let (io, named_by_fs) = if io.is_empty() { (&fallback[..], true) } else { (io, false) };
    for d in io {
        let name = if named_by_fs { fs.device.clone() } else { device_name(d.major, d.minor) };
        let (major, minor) = (d.major.to_string(), d.minor.to_string());
        let (name, major, minor) = (name.as_str(), major.as_str(), minor.as_str());
        s.put("container_fs_reads_bytes_total", &[name], d.read_bytes);
        s.put("container_fs_reads_total", &[name], d.reads);
        s.put("container_fs_writes_bytes_total", &[name], d.write_bytes);
        s.put("container_fs_writes_total", &[name], d.writes);
        s.put("container_blkio_device_usage_total", &[name, major, minor, "Read"], d.read_bytes);
        s.put("container_blkio_device_usage_total", &[name, major, minor, "Write"], d.write_bytes);
    }
}

/// Every container series of one sample.
pub fn container_series(s: &mut Series, c: &ContainerSample, device_name: impl Fn(u64, u64) -> String) {
    cpu_series(s, &c.cgroup.cpu);
    memory_series(s, &c.cgroup.memory);
    spec_series(s, &c.cgroup.limits);
    process_series(s, &c.processes);
    fs_series(s, &c.fs, &c.cgroup.io, device_name);
    s.put("container_start_time_seconds", &[], (c.started_at.max(0) as u64) / NS_PER_SEC);
    s.put("container_last_seen", &[], (s.timestamp.max(0) as u64) / NS_PER_SEC);
}

pub fn network_series(s: &mut Series, interfaces: &[InterfaceStats]) {
    for i in interfaces {
        let n = [i.name.as_str()];
        s.put("container_network_receive_bytes_total", &n, i.rx_bytes);
        s.put("container_network_receive_packets_total", &n, i.rx_packets);
        s.put("container_network_receive_errors_total", &n, i.rx_errors);
        s.put("container_network_receive_packets_dropped_total", &n, i.rx_dropped);
        s.put("container_network_transmit_bytes_total", &n, i.tx_bytes);
        s.put("container_network_transmit_packets_total", &n, i.tx_packets);
        s.put("container_network_transmit_errors_total", &n, i.tx_errors);
        s.put("container_network_transmit_packets_dropped_total", &n, i.tx_dropped);
    }
}

/// cAdvisor's `id`: the cgroup's path in the hierarchy.
fn cgroup_id(spec: &CgroupSpec) -> String {
    if spec.systemd {
        format!("/{}", cgroups::systemd_path(&spec.path))
    } else {
        format!("/{}", spec.path.trim_start_matches('/'))
    }
}

/// The pod's name and namespace, from its CRI config.
fn pod_names(sb: &SandboxRecord) -> (String, String) {
    let config: cri::PodSandboxConfig = records::decode(&sb.config);
    let md = config.metadata.unwrap_or_default();
    (md.name, md.namespace)
}

fn container_labels(rec: &ContainerRecord, pod: &(String, String)) -> [String; 6] {
    let config: cri::ContainerConfig = records::decode(&rec.config);
    let name = config.metadata.map(|m| m.name).unwrap_or_default();
    let image = if rec.image_name.is_empty() { rec.image_ref.clone() } else { rec.image_name.clone() };
    [name, cgroup_id(&rec.cgroup), image, rec.id.clone(), pod.1.clone(), pod.0.clone()]
}

/// One cgroup's counters and limits from its v1 or v2 files (what CRI stats report too);
/// None when it is gone.
pub fn cgroup_sample(spec: &CgroupSpec) -> Option<CgroupSample> {
    read_cgroup(cgroups::host_mode(), spec)
}

impl Runtime {
    /// ListPodSandboxMetrics: every ready pod with its network series, and its running
    /// containers with theirs. Blocking (walks /proc, cgroups and writable layers).
    pub fn pod_sandbox_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        let mode = cgroups::host_mode();
        let containers = self.containers();
        self.sandboxes()
            .into_iter()
            .filter(|sb| !sb.stopped)
            .map(|sb| {
                let pod = pod_names(&sb);
                let container_metrics = containers
                    .iter()
                    .filter(|c| c.sandbox_id == sb.id)
                    .map(|c| self.observe(c))
                    .filter(|o| o.state == ContainerState::Running)
                    .filter_map(|o| self.container_metrics(mode, &o, &pod))
                    .collect();
                cri::PodSandboxMetrics { pod_sandbox_id: sb.id.clone(), metrics: self.pod_network_metrics(&sb, &pod), container_metrics }
            })
            .collect()
    }

    /// A running container's series; None when it went away while being read.
    fn container_metrics(&self, mode: CgroupMode, obs: &Observed, pod: &(String, String)) -> Option<cri::ContainerMetrics> {
        let rec = &obs.rec;
        let cgroup = read_cgroup(mode, &rec.cgroup)?;
        let pids = cgroups::pids_in(&rec.cgroup);
        let upper: PathBuf = self.container_data_dir(&rec.id).join("upper");
        let sample = ContainerSample {
            cgroup,
            processes: process_stats(&pids, obs.pid()),
            fs: fs_stats(&upper, self.writable_layer_usage(&rec.id)),
            started_at: obs.run.as_ref().map(|r| r.started_at).unwrap_or(0),
        };
        let mut series = Series::new(container_labels(rec, pod), state::now_ns());
        container_series(&mut series, &sample, block_device_name);
        Some(cri::ContainerMetrics { container_id: rec.id.clone(), metrics: series.metrics })
    }

    /// Pod-level series: the interfaces of the pod's network namespace (none on the host's).
    fn pod_network_metrics(&self, sb: &SandboxRecord, pod: &(String, String)) -> Vec<cri::Metric> {
        let Some(netns) = &sb.net_ns else { return vec![] };
        let interfaces = pod_interfaces(netns);
        let labels = [String::new(), cgroup_id(&sb.cgroup), String::new(), sb.id.clone(), pod.1.clone(), pod.0.clone()];
        let mut series = Series::new(labels, state::now_ns());
        network_series(&mut series, &interfaces);
        series.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_have_help_and_sorted_unique_names() {
        let d = descriptors();
        assert_eq!(d.len(), 48);
        assert!(d.iter().all(|m| !m.help.is_empty() && !m.label_keys.is_empty() && m.label_keys.iter().all(|k| !k.is_empty())));
        assert!(d.windows(2).all(|w| w[0].name < w[1].name), "sorted and unique");
        let blkio = d.iter().find(|m| m.name == "container_blkio_device_usage_total").unwrap();
        assert_eq!(blkio.label_keys, ["container", "id", "image", "name", "namespace", "pod", "device", "major", "minor", "operation"]);
    }

    #[test]
    fn a_sample_yields_every_container_metric_with_matching_labels() {
        let sample = ContainerSample {
            processes: ProcessStats { processes: 1, threads: 1, fds: 3, sockets: 0, ulimits: vec![("max_open_files".into(), 1024)] },
            fs: FsStats { device: "/dev/vda".into(), major: 254, minor: 0, ..Default::default() },
            ..Default::default()
        };
        let base = || ["c".to_string(), "/berth/p/c".into(), "busybox".into(), "cid".into(), "default".into(), "p".into()];
        let mut s = Series::new(base(), 5 * NS_PER_SEC as i64);
        container_series(&mut s, &sample, |a, b| format!("{a}:{b}"));
        let mut pod = Series::new(base(), 0);
        network_series(&mut pod, &[InterfaceStats { name: "eth0".into(), ..Default::default() }]);
        let descs = descriptors();
        let all: Vec<&cri::Metric> = s.metrics.iter().chain(&pod.metrics).collect();
        for d in &descs {
            assert!(all.iter().any(|m| m.name == d.name), "{} has no series", d.name);
        }
        for m in &all {
            let d = descs.iter().find(|d| d.name == m.name).unwrap();
            assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
        }
        let blkio: Vec<_> = s.metrics.iter().filter(|m| m.name == "container_blkio_device_usage_total").collect();
        assert_eq!(blkio.len(), 2, "Read and Write of the layer's device with no blkio data");
        assert_eq!(blkio[0].label_values[6..], ["/dev/vda", "254", "0", "Read"]);
        let seen = s.metrics.iter().find(|m| m.name == "container_last_seen").unwrap();
        assert_eq!(seen.value.as_ref().unwrap().value, 5);
    }
}
