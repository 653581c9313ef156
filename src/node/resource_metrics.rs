//! The kubelet's resource metrics endpoint (/metrics/resource): the few series the resource
//! metrics pipeline (metrics-server, Berth's own scraper in the apiserver) reads, in the
//! Prometheus text format and under upstream's names — cumulative CPU seconds and working-set
//! bytes of the node, of each pod and of each running container, each stamped with the
//! millisecond time it was measured at, the containers' start times, and
//! `resource_scrape_error` (1 when the runtime's stats could not be read).
//!
//! Gathering goes through the node's doors only (the CRI stats for pods and containers, the
//! machine's /proc files for the node); [`render`] is pure.
use super::machine;
use super::NodeShared;
use crate::cri::v1 as cri;
use std::fmt::Write;

/// A cumulative CPU reading: nanoseconds of CPU time, and when (Unix ns) it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub used_ns: u64,
    pub at_ns: i64,
}

/// A working-set reading in bytes, and when (Unix ns) it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub working_set: u64,
    pub at_ns: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    /// When the running container started (Unix seconds).
    pub started_s: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSample {
    pub namespace: String,
    pub name: String,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub containers: Vec<ContainerSample>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub node_cpu: Option<Cpu>,
    pub node_memory: Option<Memory>,
    pub pods: Vec<PodSample>,
    /// The runtime's stats could not be read (the pods are then missing).
    pub error: bool,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One metric family: HELP and TYPE, then its lines (nothing when it has none, as upstream's
/// registry leaves empty families out).
fn family(out: &mut String, name: &str, kind: &str, help: &str, lines: Vec<String>) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

/// The text exposition of `s`, families by name, series by their labels' values (`container`,
/// `namespace`, `pod` in that order), as upstream's registry sorts them.
pub fn render(s: &Samples) -> String {
    let mut containers: Vec<(&PodSample, &ContainerSample)> = s.pods.iter().flat_map(|p| p.containers.iter().map(move |c| (p, c))).collect();
    containers.sort_by(|a, b| (&a.1.name, &a.0.namespace, &a.0.name).cmp(&(&b.1.name, &b.0.namespace, &b.0.name)));
    let mut pods: Vec<&PodSample> = s.pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let container_labels =
        |p: &PodSample, c: &ContainerSample| format!("container=\"{}\",namespace=\"{}\",pod=\"{}\"", escape(&c.name), escape(&p.namespace), escape(&p.name));
    let pod_labels = |p: &PodSample| format!("namespace=\"{}\",pod=\"{}\"", escape(&p.namespace), escape(&p.name));
    let ms = |ns: i64| ns / 1_000_000;
    let mut out = String::new();
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers
            .iter()
            .filter_map(|(p, c)| {
                c.cpu.map(|u| format!("container_cpu_usage_seconds_total{{{}}} {} {}", container_labels(p, c), seconds(u.used_ns), ms(u.at_ns)))
            })
            .collect(),
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers
            .iter()
            .filter_map(|(p, c)| {
                c.memory.map(|m| format!("container_memory_working_set_bytes{{{}}} {} {}", container_labels(p, c), m.working_set, ms(m.at_ns)))
            })
            .collect(),
    );
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        containers
            .iter()
            .filter_map(|(p, c)| c.started_s.filter(|t| *t > 0.0).map(|t| format!("container_start_time_seconds{{{}}} {t}", container_labels(p, c))))
            .collect(),
    );
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        s.node_cpu.map(|u| format!("node_cpu_usage_seconds_total {} {}", seconds(u.used_ns), ms(u.at_ns))).into_iter().collect(),
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        s.node_memory.map(|m| format!("node_memory_working_set_bytes {} {}", m.working_set, ms(m.at_ns))).into_iter().collect(),
    );
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter().filter_map(|p| p.cpu.map(|u| format!("pod_cpu_usage_seconds_total{{{}}} {} {}", pod_labels(p), seconds(u.used_ns), ms(u.at_ns)))).collect(),
    );
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pods.iter().filter_map(|p| p.memory.map(|m| format!("pod_memory_working_set_bytes{{{}}} {} {}", pod_labels(p), m.working_set, ms(m.at_ns)))).collect(),
    );
    family(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        vec![format!("resource_scrape_error {}", u8::from(s.error))],
    );
    out
}

fn cpu_of(c: &cri::CpuUsage) -> Option<Cpu> {
    c.usage_core_nano_seconds.as_ref().map(|v| Cpu { used_ns: v.value, at_ns: c.timestamp })
}

fn memory_of(m: &cri::MemoryUsage) -> Option<Memory> {
    m.working_set_bytes.as_ref().map(|v| Memory { working_set: v.value, at_ns: m.timestamp })
}

/// The node's own readings (blocking: /proc files).
fn node_readings() -> (Option<Cpu>, Option<Memory>) {
    let now = crate::util::time::now_ns();
    let cpu = std::fs::read_to_string("/proc/stat").ok().and_then(|s| machine::parse_cpu_ns(&s)).map(|used_ns| Cpu { used_ns, at_ns: now });
    let memory = machine::memory().map(|m| Memory { working_set: m.working_set, at_ns: now });
    (cpu, memory)
}

/// What /metrics/resource reports now: the node from the machine, the pods and their running
/// containers (those with a cgroup to read) from the runtime's pod sandbox stats, named by the
/// node's pods.
pub async fn gather(shared: &NodeShared) -> Samples {
    let (node_cpu, node_memory) = tokio::task::spawn_blocking(node_readings).await.unwrap_or((None, None));
    let stats = match shared.runtime.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }).await {
        Ok(r) => r.stats,
        Err(e) => {
            tracing::warn!(error = %e.message, "reading pod stats for the resource metrics");
            return Samples { node_cpu, node_memory, pods: vec![], error: true };
        }
    };
    let statuses = shared.statuses.read().await;
    let mut pods = Vec::new();
    for s in stats {
        let Some(uid) = s.attributes.as_ref().and_then(|a| a.labels.get("io.kubernetes.pod.uid")) else { continue };
        let Some(pod) = statuses.get(uid) else { continue };
        let linux = s.linux.unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let started = |name: &str| super::summary::running_since(&status, name).map(|t| t.0.as_nanosecond() as f64 / 1e9);
        let mut containers: Vec<ContainerSample> = vec![];
        for c in &linux.containers {
            let name = c.attributes.as_ref().and_then(|a| a.metadata.as_ref()).map(|m| m.name.clone()).unwrap_or_default();
            // an exited container has no cgroup left to read: not running, not reported
            let Some(cpu) = c.cpu.as_ref().and_then(cpu_of) else { continue };
            if name.is_empty() || containers.iter().any(|x| x.name == name) {
                continue;
            }
            containers.push(ContainerSample { started_s: started(&name), memory: c.memory.as_ref().and_then(memory_of), cpu: Some(cpu), name });
        }
        let md = &pod.metadata;
        pods.push(PodSample {
            namespace: md.namespace.clone().unwrap_or_else(|| "default".into()),
            name: md.name.clone().unwrap_or_default(),
            cpu: linux.cpu.as_ref().and_then(cpu_of),
            memory: linux.memory.as_ref().and_then(memory_of),
            containers,
        });
    }
    Samples { node_cpu, node_memory, pods, error: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstreams_families_sorted_with_millisecond_timestamps() {
        let at = 1_700_000_000_123_456_789;
        let container = |name: &str, cpu: u64, mem: u64| ContainerSample {
            name: name.into(),
            cpu: Some(Cpu { used_ns: cpu, at_ns: at }),
            memory: Some(Memory { working_set: mem, at_ns: at }),
            started_s: Some(1_699_999_000.0),
        };
        let s = Samples {
            node_cpu: Some(Cpu { used_ns: 12_500_000_000, at_ns: at }),
            node_memory: Some(Memory { working_set: 1 << 30, at_ns: at }),
            pods: vec![
                PodSample {
                    namespace: "web".into(),
                    name: "b".into(),
                    cpu: Some(Cpu { used_ns: 2_000_000_000, at_ns: at }),
                    memory: Some(Memory { working_set: 8192, at_ns: at }),
                    containers: vec![container("app", 1_500_000_000, 4096), container("side\"car", 500_000_000, 4096)],
                },
                PodSample { namespace: "default".into(), name: "a".into(), cpu: None, memory: None, containers: vec![container("app", 1, 4096)] },
            ],
            error: false,
        };
        let text = render(&s);
        let want = "\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"a\"} 0.000000001 1700000000123
container_cpu_usage_seconds_total{container=\"app\",namespace=\"web\",pod=\"b\"} 1.5 1700000000123
container_cpu_usage_seconds_total{container=\"side\\\"car\",namespace=\"web\",pod=\"b\"} 0.5 1700000000123
";
        assert!(text.starts_with(want), "{text}");
        assert!(text.contains("container_start_time_seconds{container=\"app\",namespace=\"web\",pod=\"b\"} 1699999000\n"), "{text}");
        assert!(text.contains("node_cpu_usage_seconds_total 12.5 1700000000123\n"), "{text}");
        assert!(text.contains("node_memory_working_set_bytes 1073741824 1700000000123\n"), "{text}");
        assert!(text.contains("pod_cpu_usage_seconds_total{namespace=\"web\",pod=\"b\"} 2 1700000000123\n"), "{text}");
        assert!(!text.contains("pod_cpu_usage_seconds_total{namespace=\"default\""), "a pod without readings has no series: {text}");
        assert!(text.ends_with("# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n"), "{text}");
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or("")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_failed_read_says_so() {
        let text = render(&Samples { error: true, ..Default::default() });
        assert_eq!(
            text,
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error 1\n"
        );
    }
}
