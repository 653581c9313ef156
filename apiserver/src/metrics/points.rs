//! The last two points of every node and container, and the usage they give, as metrics-server
//! keeps them: each scrape's batch replaces the last points; the point it replaces becomes the
//! previous one when it is older (a newer batch that repeats a point keeps the previous one
//! that is older still); a container that restarted (started after the last point) starts over;
//! a container that started less than one resolution (but at least 10 s) before its point
//! counts from its start with zero CPU. Usage is CPU = Δ CPU time / Δ time (nano-cores), memory
//! = the last working set, over the window between the two points. A node or pod without two
//! points has no usage (it is absent from the API); a pod only when all its containers have
//! two points.

use std::collections::BTreeMap;

use super::decode::{PodKey, Point};

/// A container that started at least this long (and less than one resolution) before its
/// point is measured from its start.
const FRESH_CONTAINER_MIN_NS: i64 = 10_000_000_000;

/// All nodes' batches of one scrape round, merged.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub nodes: BTreeMap<String, Point>,
    pub pods: BTreeMap<PodKey, BTreeMap<String, Point>>,
}

/// Usage over a window ending at `at_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanocores: u64,
    pub memory: u64,
    pub at_ns: i64,
    pub window_ns: i64,
}

/// A pod's usage: its containers' (by name), the earliest time and its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    pub containers: Vec<(String, u64, u64)>,
    pub at_ns: i64,
    pub window_ns: i64,
}

#[derive(Debug, Default)]
pub struct Points {
    resolution_ns: i64,
    nodes_last: BTreeMap<String, Point>,
    nodes_prev: BTreeMap<String, Point>,
    pods_last: BTreeMap<PodKey, BTreeMap<String, Point>>,
    pods_prev: BTreeMap<PodKey, BTreeMap<String, Point>>,
}

/// The usage between two points (None when they go backwards).
fn usage(last: &Point, prev: &Point) -> Option<Usage> {
    if last.start_ns < prev.start_ns || last.cpu_ns < prev.cpu_ns || last.at_ns <= prev.at_ns {
        return None;
    }
    let window_ns = last.at_ns - prev.at_ns;
    let cpu = (last.cpu_ns - prev.cpu_ns) as f64 / (window_ns as f64 / 1e9);
    Some(Usage { cpu_nanocores: cpu as u64, memory: last.memory, at_ns: last.at_ns, window_ns })
}

impl Points {
    pub fn new(resolution: std::time::Duration) -> Points {
        Points { resolution_ns: i64::try_from(resolution.as_nanos()).unwrap_or(i64::MAX), ..Default::default() }
    }

    /// Takes in one scrape round.
    pub fn store(&mut self, round: Round) {
        let mut nodes_prev = BTreeMap::new();
        for (name, new) in &round.nodes {
            if let Some(last) = self.nodes_last.get(name) {
                if new.at_ns > last.at_ns {
                    nodes_prev.insert(name.clone(), *last);
                } else if let Some(prev) = self.nodes_prev.get(name).filter(|p| p.at_ns < new.at_ns) {
                    nodes_prev.insert(name.clone(), *prev);
                }
            }
        }
        let mut pods_prev = BTreeMap::new();
        for (key, containers) in &round.pods {
            let mut prev_containers = BTreeMap::new();
            for (name, new) in containers {
                let since_start = new.at_ns - new.start_ns;
                if new.start_ns > 0 && since_start > 0 && since_start < self.resolution_ns && since_start >= FRESH_CONTAINER_MIN_NS {
                    prev_containers.insert(name.clone(), Point { at_ns: new.start_ns, cpu_ns: 0, ..*new });
                    continue;
                }
                let Some(last) = self.pods_last.get(key).and_then(|c| c.get(name)) else { continue };
                // restarted since the last point: nothing to compare with
                if new.start_ns >= last.at_ns {
                    continue;
                }
                if new.at_ns > last.at_ns {
                    prev_containers.insert(name.clone(), *last);
                } else if let Some(prev) = self.pods_prev.get(key).and_then(|c| c.get(name)).filter(|p| p.at_ns < new.at_ns) {
                    prev_containers.insert(name.clone(), *prev);
                }
            }
            if !prev_containers.is_empty() {
                pods_prev.insert(key.clone(), prev_containers);
            }
        }
        self.nodes_last = round.nodes;
        self.nodes_prev = nodes_prev;
        self.pods_last = round.pods;
        self.pods_prev = pods_prev;
    }

    pub fn node(&self, name: &str) -> Option<Usage> {
        usage(self.nodes_last.get(name)?, self.nodes_prev.get(name)?)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodUsage> {
        let key = (namespace.to_string(), name.to_string());
        let (last, prev) = (self.pods_last.get(&key)?, self.pods_prev.get(&key)?);
        let mut containers = vec![];
        let mut earliest: Option<Usage> = None;
        for (c, l) in last {
            let p = prev.get(c)?;
            let Some(u) = usage(l, p) else { continue };
            containers.push((c.clone(), u.cpu_nanocores, u.memory));
            if earliest.is_none_or(|e| u.at_ns < e.at_ns) {
                earliest = Some(u);
            }
        }
        let e = earliest?;
        Some(PodUsage { containers, at_ns: e.at_ns, window_ns: e.window_ns })
    }

    /// How many containers have usage (the points that can be served).
    pub fn containers(&self) -> usize {
        self.pods_prev.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn point(start: i64, at: i64, cpu_ms: u64, memory: u64) -> Point {
        Point { start_ns: start * S, at_ns: at * S, cpu_ns: cpu_ms * 1_000_000, memory }
    }

    fn round(node: Option<Point>, containers: &[(&str, Point)]) -> Round {
        let mut r = Round::default();
        if let Some(n) = node {
            r.nodes.insert("n1".into(), n);
        }
        if !containers.is_empty() {
            r.pods.insert(("ns".into(), "p".into()), containers.iter().map(|(n, p)| (n.to_string(), *p)).collect());
        }
        r
    }

    #[test]
    fn usage_needs_two_points_and_is_the_rate_between_them() {
        let mut s = Points::new(std::time::Duration::from_secs(15));
        s.store(round(Some(point(0, 100, 1_000, 10)), &[("a", point(1, 100, 500, 7))]));
        assert_eq!(s.node("n1"), None);
        assert_eq!(s.pod("ns", "p"), None, "one point: absent");
        s.store(round(Some(point(0, 115, 4_000, 20)), &[("a", point(1, 115, 2_000, 8))]));
        assert_eq!(s.node("n1"), Some(Usage { cpu_nanocores: 200_000_000, memory: 20, at_ns: 115 * S, window_ns: 15 * S }));
        assert_eq!(s.pod("ns", "p"), Some(PodUsage { containers: vec![("a".into(), 100_000_000, 8)], at_ns: 115 * S, window_ns: 15 * S }));
        // the same point again: the previous one stays
        s.store(round(Some(point(0, 115, 4_000, 20)), &[("a", point(1, 115, 2_000, 8))]));
        assert_eq!(s.node("n1").map(|u| u.window_ns), Some(15 * S));
        assert_eq!(s.pod("ns", "p").map(|u| u.window_ns), Some(15 * S));
        // a node missing from a round loses its points
        s.store(round(None, &[]));
        assert_eq!((s.node("n1"), s.pod("ns", "p")), (None, None));
    }

    #[test]
    fn restarts_start_over_and_fresh_containers_count_from_their_start() {
        let mut s = Points::new(std::time::Duration::from_secs(60));
        s.store(round(None, &[("a", point(1, 100, 500, 7))]));
        // restarted at 125 (5 s before its point): the old point is not compared with
        s.store(round(None, &[("a", point(125, 130, 50, 7))]));
        assert_eq!(s.pod("ns", "p"), None);
        // started 20 s before its first point, within one resolution: from its start
        let mut s = Points::new(std::time::Duration::from_secs(60));
        s.store(round(None, &[("a", point(100, 120, 2_000, 7))]));
        assert_eq!(s.pod("ns", "p").map(|u| (u.containers[0].1, u.window_ns)), Some((100_000_000, 20 * S)));
        // a pod is served only when all its containers have two points
        let mut s = Points::new(std::time::Duration::from_secs(15));
        s.store(round(None, &[("a", point(1, 100, 500, 7))]));
        s.store(round(None, &[("a", point(1, 115, 600, 7)), ("b", point(1, 115, 600, 7))]));
        assert_eq!(s.pod("ns", "p"), None);
    }
}
