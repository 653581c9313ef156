//! The replica calculation of the HorizontalPodAutoscaler, as upstream documents and does it
//! (pure: pods, metrics and requests in; a replica count or upstream's error out).
//!
//! desired = ceil(current × usage ratio) where the ratio is the pods' average usage over the
//! target, unless it is within the tolerance of 1.0. Pods being deleted or failed are left out;
//! pending pods, and for CPU pods that are not ready yet or whose sample may be from before
//! they became ready (the CPU initialization period and initial readiness delay), are set
//! aside; pods without metrics are "missing". When any were set aside or missing, the ratio is
//! computed again assuming the missing ones use 100 % of their request (or of the target above
//! 100 %) on a scale down and 0 % on a scale up, the set-aside ones 0 % on a scale up, and the
//! replica count stays when that flips the direction or falls within the tolerance.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

/// A pod's metric: the value (milli-units), when it was measured and over what window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub at: Timestamp,
    pub window: SignedDuration,
}

/// Metrics by pod name.
pub type PodMetrics = BTreeMap<String, PodMetric>;

/// What the calculation is tuned by (kube-controller-manager's flags).
#[derive(Debug, Clone, Copy)]
pub struct Calculator {
    /// --horizontal-pod-autoscaler-tolerance.
    pub tolerance: f64,
    /// --horizontal-pod-autoscaler-cpu-initialization-period.
    pub cpu_initialization_period: SignedDuration,
    /// --horizontal-pod-autoscaler-initial-readiness-delay.
    pub initial_readiness_delay: SignedDuration,
}

/// The outcome for a Utilization target: replicas, the utilization (percent of request) and
/// the average usage (milli-units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utilization {
    pub replicas: i32,
    pub utilization: i32,
    pub raw: i64,
}

/// The outcome for an AverageValue target: replicas and the average usage (milli-units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AverageValue {
    pub replicas: i32,
    pub usage: i64,
}

const NO_PODS: &str = "no pods returned by selector while calculating replica count";
const NO_READY_METRICS: &str = "did not receive metrics for targeted pods (pods might be unready)";

/// The pods sorted into groups.
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn ready_condition(pod: &Pod) -> Option<(&str, Timestamp)> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.as_str(), c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH)))
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.saturating_add(d).unwrap_or(t)
}

impl Calculator {
    fn group(&self, pods: &[&Pod], metrics: &PodMetrics, cpu: bool, now: Timestamp) -> Groups {
        let mut g = Groups { ready: 0, unready: BTreeSet::new(), missing: BTreeSet::new(), ignored: BTreeSet::new() };
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = crate::controller::phase(pod);
            if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
                g.ignored.insert(name);
                continue;
            }
            if phase == "Pending" {
                g.unready.insert(name);
                continue;
            }
            let Some(metric) = metrics.get(&name) else {
                g.missing.insert(name);
                continue;
            };
            if cpu {
                let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
                let unready = match (ready_condition(pod), start) {
                    (Some((status, since)), Some(start)) => {
                        if add(start, self.cpu_initialization_period) > now {
                            // still initializing: unready, or sampled before a window since it turned ready
                            status == "False" || metric.at < add(since, metric.window)
                        } else {
                            // unready and never ready since it started
                            status == "False" && add(start, self.initial_readiness_delay) > since
                        }
                    }
                    _ => true,
                };
                if unready {
                    g.unready.insert(name);
                    continue;
                }
            }
            g.ready += 1;
        }
        g
    }

    fn within_tolerance(&self, ratio: f64) -> bool {
        (1.0 - ratio).abs() <= self.tolerance
    }

    /// The replicas for a Utilization target (percent of the pods' requests, `requests` in
    /// milli-units by pod or the error computing them).
    #[allow(clippy::too_many_arguments)]
    pub fn utilization_replicas(
        &self,
        current: i32,
        target: i32,
        cpu: bool,
        pods: &[&Pod],
        mut metrics: PodMetrics,
        requests: Result<BTreeMap<String, i64>, String>,
        now: Timestamp,
    ) -> Result<Utilization, String> {
        if pods.is_empty() {
            return Err(NO_PODS.into());
        }
        let g = self.group(pods, &metrics, cpu, now);
        metrics.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
        if metrics.is_empty() {
            return Err(NO_READY_METRICS.into());
        }
        let requests = requests?;
        let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target)?;
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        let out = |replicas| Ok(Utilization { replicas, utilization, raw });
        if !scale_up_with_unready && g.missing.is_empty() {
            if self.within_tolerance(ratio) {
                return out(current);
            }
            return out((ratio * g.ready as f64).ceil() as i32);
        }
        if ratio < 1.0 {
            let fallback = i64::from(target.max(100));
            for name in &g.missing {
                let value = requests.get(name).copied().unwrap_or(0) * fallback / 100;
                metrics.insert(name.clone(), PodMetric { value, at: now, window: SignedDuration::ZERO });
            }
        } else if ratio > 1.0 {
            for name in &g.missing {
                metrics.insert(name.clone(), PodMetric { value: 0, at: now, window: SignedDuration::ZERO });
            }
        }
        if scale_up_with_unready {
            for name in &g.unready {
                metrics.insert(name.clone(), PodMetric { value: 0, at: now, window: SignedDuration::ZERO });
            }
        }
        let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
        if self.within_tolerance(new_ratio) || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
            return out(current);
        }
        let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return out(current);
        }
        out(replicas)
    }

    /// The replicas for an AverageValue target (milli-units per pod).
    pub fn average_value_replicas(
        &self,
        current: i32,
        target: i64,
        cpu: bool,
        pods: &[&Pod],
        mut metrics: PodMetrics,
        now: Timestamp,
    ) -> Result<AverageValue, String> {
        if pods.is_empty() {
            return Err(NO_PODS.into());
        }
        let g = self.group(pods, &metrics, cpu, now);
        metrics.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
        if metrics.is_empty() {
            return Err(NO_READY_METRICS.into());
        }
        let (ratio, usage) = usage_ratio(&metrics, target);
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        let out = |replicas| Ok(AverageValue { replicas, usage });
        if !scale_up_with_unready && g.missing.is_empty() {
            if self.within_tolerance(ratio) {
                return out(current);
            }
            return out((ratio * g.ready as f64).ceil() as i32);
        }
        let assumed = if ratio < 1.0 {
            Some(target)
        } else if ratio > 1.0 {
            Some(0)
        } else {
            None
        };
        if let Some(value) = assumed {
            for name in &g.missing {
                metrics.insert(name.clone(), PodMetric { value, at: now, window: SignedDuration::ZERO });
            }
        }
        if scale_up_with_unready {
            for name in &g.unready {
                metrics.insert(name.clone(), PodMetric { value: 0, at: now, window: SignedDuration::ZERO });
            }
        }
        let (new_ratio, _) = usage_ratio(&metrics, target);
        if self.within_tolerance(new_ratio) || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
            return out(current);
        }
        let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return out(current);
        }
        out(replicas)
    }
}

/// (usage ratio, utilization %, average usage) of the metrics of pods with a request.
fn utilization_ratio(metrics: &PodMetrics, requests: &BTreeMap<String, i64>, target: i32) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        let Some(r) = requests.get(name) else { continue };
        used += m.value;
        requested += r;
        n += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = i32::try_from(used * 100 / requested).unwrap_or(i32::MAX);
    Ok((f64::from(utilization) / f64::from(target), utilization, used / n))
}

/// (usage ratio, average usage) of the metrics.
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let average = total / metrics.len().max(1) as i64;
    (average as f64 / target as f64, average)
}

/// The pods' requests of `resource` in milli-units (their containers' and restartable init
/// containers', or only `container`'s), or upstream's error for the first pod lacking one.
pub fn requests(pods: &[&Pod], container: Option<&str>, resource: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut total = 0i64;
        let mut found = false;
        for c in spec.containers.iter().chain(sidecars) {
            if container.is_some_and(|want| want != c.name) {
                continue;
            }
            let request = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource));
            let Some(q) = request else {
                return Err(format!("missing request for {resource} in container {} of Pod {name}", c.name));
            };
            total += berth_names::quantity::Quantity::parse(&q.0).map(|q| q.milli_value()).unwrap_or(0);
            found = true;
            if container.is_some() {
                break;
            }
        }
        if let (Some(want), false) = (container, found) {
            return Err(format!("container {want} not found in Pod {name}"));
        }
        out.insert(name, total);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("time")
    }

    fn ago(secs: i64) -> String {
        now().checked_sub(SignedDuration::from_secs(secs)).expect("time").to_string()
    }

    /// A running pod started long ago, ready (or not) since long ago, requesting `cpu_m`.
    fn pod(name: &str, ready: bool, cpu_m: i64) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": format!("{cpu_m}m")}}}]},
            "status": {"phase": "Running", "startTime": ago(3600),
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": ago(3500)}]},
        }))
        .expect("pod")
    }

    /// A pod started `started` seconds ago whose Ready condition changed `since` seconds ago.
    fn young(name: &str, ready: bool, cpu_m: i64, started: i64, since: i64) -> Pod {
        let mut p = pod(name, ready, cpu_m);
        if let Some(st) = p.status.as_mut() {
            st.start_time = serde_json::from_value(json!(ago(started))).ok();
            if let Some(c) = st.conditions.as_mut().and_then(|c| c.first_mut()) {
                c.last_transition_time = serde_json::from_value(json!(ago(since))).ok();
            }
        }
        p
    }

    fn metrics(values: &[(&str, i64)]) -> PodMetrics {
        values.iter().map(|(n, v)| (n.to_string(), PodMetric { value: *v, at: now(), window: SignedDuration::from_secs(15) })).collect()
    }

    fn calc() -> Calculator {
        Calculator { tolerance: 0.1, cpu_initialization_period: SignedDuration::from_mins(5), initial_readiness_delay: SignedDuration::from_secs(30) }
    }

    fn utilization(current: i32, target: i32, pods: &[Pod], values: &[(&str, i64)]) -> Result<Utilization, String> {
        let refs: Vec<&Pod> = pods.iter().collect();
        calc().utilization_replicas(current, target, true, &refs, metrics(values), requests(&refs, None, "cpu"), now())
    }

    #[test]
    fn utilization_cases_as_upstream_computes_them() {
        let three = [pod("a", true, 1000), pod("b", true, 1000), pod("c", true, 1000)];
        // (current, target %, pods, usage) → replicas, utilization
        type Case<'a> = (&'a str, i32, i32, Vec<Pod>, Vec<(&'a str, i64)>, i32, i32);
        let cases: Vec<Case> = vec![
            ("scale up", 3, 30, three.to_vec(), vec![("a", 300), ("b", 500), ("c", 700)], 5, 50),
            (
                "scale down",
                5,
                50,
                vec![pod("a", true, 1000), pod("b", true, 1000), pod("c", true, 1000), pod("d", true, 1000), pod("e", true, 1000)],
                vec![("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)],
                3,
                28,
            ),
            (
                "within the tolerance",
                3,
                100,
                vec![pod("a", true, 900), pod("b", true, 1000), pod("c", true, 1100)],
                vec![("a", 1010), ("b", 1030), ("c", 1020)],
                3,
                102,
            ),
            ("double the usage: double the pods", 2, 50, vec![pod("a", true, 200), pod("b", true, 200)], vec![("a", 200), ("b", 200)], 4, 100),
            (
                "an unready pod counts as 0 % on a scale up",
                3,
                30,
                vec![young("a", false, 1000, 60, 60), pod("b", true, 1000), pod("c", true, 1000)],
                vec![("a", 300), ("b", 500), ("c", 700)],
                4,
                60,
            ),
            (
                "a pod unready for long after being ready counts",
                3,
                30,
                vec![pod("a", false, 1000), pod("b", true, 1000), pod("c", true, 1000)],
                vec![("a", 300), ("b", 500), ("c", 700)],
                5,
                50,
            ),
            (
                "a missing pod counts as 100 % on a scale down",
                4,
                50,
                vec![pod("a", true, 1000), pod("b", true, 1000), pod("c", true, 1000), pod("d", true, 1000)],
                vec![("a", 100), ("b", 100), ("c", 100)],
                3,
                10,
            ),
            (
                "a missing pod counts as 0 % on a scale up",
                4,
                50,
                vec![pod("a", true, 1000), pod("b", true, 1000), pod("c", true, 1000), pod("d", true, 1000)],
                vec![("a", 900), ("b", 900), ("c", 900)],
                6,
                90,
            ),
            (
                "missing pods that would flip the direction keep the count",
                3,
                50,
                vec![pod("a", true, 1000), pod("b", true, 1000), pod("c", true, 1000)],
                vec![("a", 400), ("b", 400)],
                3,
                40,
            ),
        ];
        for (what, current, target, pods, values, replicas, util) in cases {
            let got = utilization(current, target, &pods, &values).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((got.replicas, got.utilization), (replicas, util), "{what}");
        }
    }

    #[test]
    fn failures_in_upstreams_words() {
        assert_eq!(utilization(1, 50, &[], &[]), Err(NO_PODS.to_string()));
        assert_eq!(utilization(1, 50, &[pod("a", true, 100)], &[]), Err(NO_READY_METRICS.to_string()));
        let mut no_request = pod("b", true, 100);
        if let Some(s) = no_request.spec.as_mut() {
            s.containers[0].resources = None;
        }
        assert_eq!(
            utilization(2, 50, &[pod("a", true, 100), no_request], &[("a", 50), ("b", 50)]),
            Err("missing request for cpu in container c of Pod b".to_string())
        );
        let refs = [pod("a", true, 100)];
        let refs: Vec<&Pod> = refs.iter().collect();
        assert_eq!(requests(&refs, Some("web"), "cpu"), Err("container web not found in Pod a".to_string()));
    }

    #[test]
    fn a_cpu_sample_from_a_pod_still_initializing_is_set_aside() {
        // started a minute ago, ready 5 s ago: its 15 s sample covers the time before it was ready
        let pods = [pod("a", true, 1000), young("young", true, 1000, 60, 5)];
        // the old pod alone at 90 % of a 50 % target: a scale up, with the young one at 0 % that
        // is 45 %, within the tolerance: the count stays
        let got = utilization(2, 50, &pods, &[("a", 900), ("young", 900)]).expect("replicas");
        assert_eq!((got.replicas, got.utilization), (2, 90));
        // ready for a window already: counted
        let pods = [pod("a", true, 1000), young("young", true, 1000, 60, 30)];
        assert_eq!(utilization(2, 50, &pods, &[("a", 900), ("young", 900)]).map(|u| u.replicas), Ok(4));
        // memory is not subject to the CPU initialization period
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = calc().average_value_replicas(2, 450, false, &refs, metrics(&[("a", 900), ("young", 900)]), now()).expect("replicas");
        assert_eq!(got, AverageValue { replicas: 4, usage: 900 });
    }

    #[test]
    fn average_value_targets() {
        let pods = [pod("a", true, 100), pod("b", true, 100), pod("c", true, 100)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = calc().average_value_replicas(3, 20_000, false, &refs, metrics(&[("a", 10_000), ("b", 20_000), ("c", 30_000)]), now());
        assert_eq!(got, Ok(AverageValue { replicas: 3, usage: 20_000 }));
        let got = calc().average_value_replicas(3, 10_000, false, &refs, metrics(&[("a", 10_000), ("b", 20_000), ("c", 30_000)]), now());
        assert_eq!(got, Ok(AverageValue { replicas: 6, usage: 20_000 }));
        // a missing pod assumed at the target on a scale down
        let got = calc().average_value_replicas(3, 40_000, false, &refs, metrics(&[("a", 10_000), ("b", 10_000)]), now());
        assert_eq!(got, Ok(AverageValue { replicas: 2, usage: 10_000 }));
    }
}
