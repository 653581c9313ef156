//! Reads a kubelet's /metrics/resource answer (the Prometheus text format) into one batch of
//! points, as metrics-server decodes it: the node's cumulative CPU and working set, and per pod
//! per container the cumulative CPU, working set, their timestamp (milliseconds, the scrape's
//! time when a sample has none) and the container's start time. Incomplete readings are dropped
//! as metrics-server drops them: a node without a timestamp, CPU or memory; a pod any of whose
//! containers lacks CPU or memory. Other series are skipped.

use std::collections::BTreeMap;

/// One reading of a node or container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    /// When the container (or node) started, Unix ns (0: unknown).
    pub start_ns: i64,
    /// When the reading was taken, Unix ns.
    pub at_ns: i64,
    /// CPU time used since the start, ns.
    pub cpu_ns: u64,
    /// Working set, bytes.
    pub memory: u64,
}

/// A pod's namespace and name.
pub type PodKey = (String, String);

/// What one scrape of one node found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub node: Option<Point>,
    /// Container points by pod, then by container name.
    pub pods: BTreeMap<PodKey, BTreeMap<String, Point>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("failed parsing metrics: line {line}: {why}")]
    Line { line: usize, why: &'static str },
}

/// A sample line: its name, labels and value and its timestamp in ms (if written).
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
    ms: Option<i64>,
}

/// A sample's labels (name, unescaped value) and the rest of its line.
type Labels<'a> = (Vec<(&'a str, String)>, &'a str);

fn parse_labels(mut s: &str) -> Result<Labels<'_>, &'static str> {
    let mut labels = vec![];
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("a label without a value")?;
        let key = s[..eq].trim();
        let rest = s[eq + 1..].trim_start().strip_prefix('"').ok_or("a label value that is not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &rest[end + 1..];
    }
}

fn parse_line(line: &str) -> Result<Sample<'_>, &'static str> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (vec![], &line[name_end..]),
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("a sample without a value")?.parse::<f64>().map_err(|_| "a value that is not a number")?;
    let ms = match fields.next() {
        Some(t) => Some(t.parse::<i64>().map_err(|_| "a timestamp that is not an integer")?),
        None => None,
    };
    Ok(Sample { name, labels, value, ms })
}

fn label<'a>(s: &'a Sample<'_>, key: &str) -> &'a str {
    s.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The point of the container a sample is about.
fn container<'a>(pods: &'a mut BTreeMap<PodKey, BTreeMap<String, Point>>, s: &Sample<'_>) -> &'a mut Point {
    let pod = pods.entry((label(s, "namespace").to_string(), label(s, "pod").to_string())).or_default();
    pod.entry(label(s, "container").to_string()).or_default()
}

/// The batch of one scrape, taken at `scraped_ns` (the time of samples without a timestamp).
pub fn decode(text: &str, scraped_ns: i64) -> Result<Batch, DecodeError> {
    let mut node = Point::default();
    let mut pods: BTreeMap<PodKey, BTreeMap<String, Point>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let s = parse_line(line).map_err(|why| DecodeError::Line { line: i + 1, why })?;
        let at_ns = s.ms.map(|ms| ms.saturating_mul(1_000_000)).unwrap_or(scraped_ns);
        match s.name {
            "node_cpu_usage_seconds_total" => {
                node.cpu_ns = (s.value * 1e9) as u64;
                node.at_ns = at_ns;
            }
            "node_memory_working_set_bytes" => {
                node.memory = s.value as u64;
                node.at_ns = at_ns;
            }
            "container_cpu_usage_seconds_total" => {
                let p = container(&mut pods, &s);
                p.cpu_ns = (s.value * 1e9) as u64;
                p.at_ns = at_ns;
            }
            "container_memory_working_set_bytes" => {
                let p = container(&mut pods, &s);
                p.memory = s.value as u64;
                p.at_ns = at_ns;
            }
            "container_start_time_seconds" => container(&mut pods, &s).start_ns = (s.value * 1e9) as i64,
            _ => {}
        }
    }
    let node = (node.at_ns != 0 && node.cpu_ns != 0 && node.memory != 0).then_some(node);
    pods.retain(|_, containers| {
        containers.retain(|_, p| *p != Point::default());
        !containers.is_empty() && containers.values().all(|p| p.cpu_ns != 0 && p.memory != 0)
    });
    Ok(Batch { node, pods })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="web",pod="a"} 1.5 1700000000123
container_cpu_usage_seconds_total{container="side\"car",namespace="web",pod="a"} 2.5e-01 1700000000123
container_cpu_usage_seconds_total{container="app",namespace="web",pod="half"} 1 1700000000123
container_memory_working_set_bytes{container="app",namespace="web",pod="a"} 1.6384e+04 1700000000123
container_memory_working_set_bytes{container="side\"car",namespace="web",pod="a"} 4096 1700000000123
container_start_time_seconds{container="app",namespace="web",pod="a"} 1.6999999995e+09
node_cpu_usage_seconds_total 120.25 1700000000100
node_memory_working_set_bytes 1.073741824e+09 1700000000100
resource_scrape_error 0
"#;

    #[test]
    fn reads_what_metrics_server_reads() {
        let b = decode(TEXT, 5).expect("decodes");
        assert_eq!(b.node, Some(Point { start_ns: 0, at_ns: 1_700_000_000_100_000_000, cpu_ns: 120_250_000_000, memory: 1 << 30 }));
        let a = &b.pods[&("web".to_string(), "a".to_string())];
        assert_eq!(a["app"], Point { start_ns: 1_699_999_999_500_000_000, at_ns: 1_700_000_000_123_000_000, cpu_ns: 1_500_000_000, memory: 16384 });
        assert_eq!(a["side\"car"].cpu_ns, 250_000_000);
        assert!(!b.pods.contains_key(&("web".to_string(), "half".to_string())), "a container without memory drops its pod");
    }

    #[test]
    fn samples_without_timestamps_get_the_scrape_time_and_bad_lines_fail() {
        let b = decode("node_cpu_usage_seconds_total 1\nnode_memory_working_set_bytes 2\n", 42).expect("decodes");
        assert_eq!(b.node.map(|n| n.at_ns), Some(42));
        assert!(decode("node_memory_working_set_bytes 0 1\n", 1).expect("decodes").node.is_none(), "an incomplete node is dropped");
        assert_eq!(decode("x{a=\"1} 2\n", 1), Err(DecodeError::Line { line: 1, why: "an unterminated label value" }));
        assert_eq!(decode("x{a=\"1\"} two\n", 1), Err(DecodeError::Line { line: 1, why: "a value that is not a number" }));
    }
}
