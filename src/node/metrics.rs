//! Node metrics in the Prometheus text format (/metrics): pod start latency, running pods
//! and containers, probe results, under the names the kubelet uses; and the runtime's CRI
//! container metrics (/metrics/cadvisor) in the same format.
use crate::cri::v1 as cri;
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

/// A HELP text in the text format: backslash and newline escaped (quotes stay).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn type_name(metric_type: i32) -> &'static str {
    match cri::MetricType::try_from(metric_type) {
        Ok(cri::MetricType::Counter) => "counter",
        _ => "gauge",
    }
}

/// One sample line: name{key="value",...} value [timestamp in ms]. A series whose label
/// values do not pair up with its descriptor's keys is left out (the CRI leaves it undefined).
fn write_sample(out: &mut String, desc: &cri::MetricDescriptor, m: &cri::Metric) {
    if m.label_values.len() != desc.label_keys.len() {
        return;
    }
    let labels: Vec<String> = desc.label_keys.iter().zip(&m.label_values).map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    let value = m.value.as_ref().map(|v| v.value).unwrap_or(0);
    let _ = write!(out, "{}{{{}}} {value}", desc.name, labels.join(","));
    if m.timestamp > 0 {
        let _ = write!(out, " {}", m.timestamp / 1_000_000);
    }
    out.push('\n');
}

/// The text exposition of the CRI metrics: one family per descriptor that has series, its
/// pod-level and container-level samples together.
pub fn cri_metrics_text(descriptors: &[cri::MetricDescriptor], pods: &[cri::PodSandboxMetrics]) -> String {
    let mut by_name: std::collections::HashMap<&str, Vec<&cri::Metric>> = std::collections::HashMap::new();
    for pod in pods {
        for m in pod.metrics.iter().chain(pod.container_metrics.iter().flat_map(|c| &c.metrics)) {
            by_name.entry(m.name.as_str()).or_default().push(m);
        }
    }
    let mut out = String::new();
    for desc in descriptors {
        let Some(samples) = by_name.get(desc.name.as_str()) else { continue };
        out.push_str(&format!("# HELP {} {}\n", desc.name, escape_help(&desc.help)));
        out.push_str(&format!("# TYPE {} {}\n", desc.name, type_name(samples[0].metric_type)));
        for m in samples {
            write_sample(&mut out, desc, m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_metrics_render_as_prometheus_text() {
        let descriptors = vec![
            cri::MetricDescriptor {
                name: "container_cpu_usage_seconds_total".into(),
                help: "CPU \\ time\nin s".into(),
                label_keys: vec!["pod".into(), "cpu".into()],
            },
            cri::MetricDescriptor { name: "container_threads".into(), help: "Threads".into(), label_keys: vec!["pod".into()] },
        ];
        let metric = |name: &str, values: &[&str], value: u64, metric_type: cri::MetricType| cri::Metric {
            name: name.into(),
            timestamp: 1_700_000_000_123_456_789,
            metric_type: metric_type as i32,
            label_values: values.iter().map(|v| v.to_string()).collect(),
            value: Some(cri::UInt64Value { value }),
        };
        let pods = vec![cri::PodSandboxMetrics {
            pod_sandbox_id: "p".into(),
            metrics: vec![],
            container_metrics: vec![cri::ContainerMetrics {
                container_id: "c".into(),
                metrics: vec![
                    metric("container_cpu_usage_seconds_total", &["a\"b\\c\nd", "total"], 7, cri::MetricType::Counter),
                    metric("container_cpu_usage_seconds_total", &["short"], 1, cri::MetricType::Counter),
                ],
            }],
        }];
        let t = cri_metrics_text(&descriptors, &pods);
        assert_eq!(
            t,
            "# HELP container_cpu_usage_seconds_total CPU \\\\ time\\nin s\n# TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{pod=\"a\\\"b\\\\c\\nd\",cpu=\"total\"} 7 1700000000123\n"
        );
    }

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
