//! Node metrics in the Prometheus text format (/metrics): pod start latency, running pods
//! and containers, probe results, under the names the kubelet uses.
use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds (seconds) of the pod start latency buckets.
const START_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Debug, Default)]
pub struct Metrics {
    start_counts: Vec<u64>,
    start_sum: f64,
    start_count: u64,
    /// (probe_type, namespace, pod, container, result) → count.
    probes: BTreeMap<(String, String, String, String, String), u64>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// A pod's containers all ran for the first time `seconds` after the pod was first seen.
    pub fn observe_pod_start(&mut self, seconds: f64) {
        if self.start_counts.is_empty() {
            self.start_counts = vec![0; START_BUCKETS.len()];
        }
        for (i, le) in START_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.start_counts[i] += 1;
            }
        }
        self.start_sum += seconds;
        self.start_count += 1;
    }

    pub fn count_probe(&mut self, kind: &str, namespace: &str, pod: &str, container: &str, ok: bool) {
        let result = if ok { "successful" } else { "failed" };
        *self.probes.entry((kind.into(), namespace.into(), pod.into(), container.into(), result.into())).or_default() += 1;
    }

    /// The text exposition, with the gauges computed by the caller.
    pub fn render(&self, running_pods: usize, running_containers: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP kubelet_running_pods Number of pods that have a running pod sandbox");
        let _ = writeln!(s, "# TYPE kubelet_running_pods gauge\nkubelet_running_pods {running_pods}");
        let _ = writeln!(s, "# HELP kubelet_running_containers Number of containers currently running");
        let _ = writeln!(s, "# TYPE kubelet_running_containers gauge\nkubelet_running_containers{{container_state=\"running\"}} {running_containers}");
        let _ = writeln!(s, "# HELP kubelet_pod_start_duration_seconds Duration in seconds from the node first seeing a pod to all its containers running");
        let _ = writeln!(s, "# TYPE kubelet_pod_start_duration_seconds histogram");
        for (i, le) in START_BUCKETS.iter().enumerate() {
            let _ = writeln!(s, "kubelet_pod_start_duration_seconds_bucket{{le=\"{le}\"}} {}", self.start_counts.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(s, "kubelet_pod_start_duration_seconds_bucket{{le=\"+Inf\"}} {}", self.start_count);
        let _ = writeln!(s, "kubelet_pod_start_duration_seconds_sum {}", self.start_sum);
        let _ = writeln!(s, "kubelet_pod_start_duration_seconds_count {}", self.start_count);
        let _ = writeln!(s, "# HELP prober_probe_total Cumulative number of liveness, readiness or startup probes for a container by result");
        let _ = writeln!(s, "# TYPE prober_probe_total counter");
        for ((kind, ns, pod, container, result), n) in &self.probes {
            let _ = writeln!(
                s,
                "prober_probe_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\",probe_type=\"{}\",result=\"{}\"}} {n}",
                escape(container),
                escape(ns),
                escape(pod),
                escape(kind),
                result
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut m = Metrics::default();
        m.observe_pod_start(0.3);
        m.observe_pod_start(2.5);
        m.count_probe("Readiness", "default", "p", "c", false);
        let t = m.render(1, 2);
        assert!(t.contains("kubelet_pod_start_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(t.contains("kubelet_pod_start_duration_seconds_bucket{le=\"3\"} 2\n"));
        assert!(t.contains("kubelet_pod_start_duration_seconds_count 2\n"));
        assert!(t.contains("kubelet_running_containers{container_state=\"running\"} 2\n"));
        assert!(t.contains("prober_probe_total{container=\"c\",namespace=\"default\",pod=\"p\",probe_type=\"Readiness\",result=\"failed\"} 1\n"));
    }
}
