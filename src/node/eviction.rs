//! Node-pressure eviction, as the kubelet does it: eviction signals measured from the
//! machine, hard and soft thresholds (soft ones with grace periods), node conditions with a
//! transition period, and the order in which pods are evicted under each kind of pressure.
//! This module holds the rules; `housekeeping` applies them to the node's pods.
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

impl Signal {
    pub const ALL: [Signal; 6] =
        [Signal::MemoryAvailable, Signal::NodeFsAvailable, Signal::NodeFsInodesFree, Signal::ImageFsAvailable, Signal::ImageFsInodesFree, Signal::PidAvailable];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The node condition the signal drives.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    /// The resource named in eviction messages.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::PidAvailable => "pids",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            _ => "ephemeral-storage",
        }
    }

    pub fn is_disk(self) -> bool {
        !matches!(self, Signal::MemoryAvailable | Signal::PidAvailable)
    }

    /// Byte-valued signals are shown as quantities, counts as plain numbers.
    fn in_bytes(self) -> bool {
        matches!(self, Signal::MemoryAvailable | Signal::NodeFsAvailable | Signal::ImageFsAvailable)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Absolute(u64),
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
    /// None for a hard threshold; how long a soft one must hold before pods are evicted.
    pub grace: Option<Duration>,
}

impl Threshold {
    /// The threshold in the signal's unit, for a resource of `capacity`.
    pub fn quantity(&self, capacity: u64) -> u64 {
        match self.amount {
            Amount::Absolute(v) => v,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    pub fn is_hard(&self) -> bool {
        self.grace.is_none()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ThresholdError {
    #[error("eviction threshold {0:?}: expected <signal><<quantity or percentage>, like memory.available<100Mi")]
    Syntax(String),
    #[error(
        "unknown eviction signal {0:?} (known: memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)"
    )]
    Signal(String),
    #[error("eviction threshold {0:?}: bad quantity")]
    Quantity(String),
    #[error("soft eviction threshold for {0} has no grace period (eviction-soft-grace-period)")]
    NoGrace(String),
    #[error("bad duration {0:?} (like 30s, 1m30s, 500ms)")]
    Duration(String),
}

/// `memory.available<100Mi,nodefs.available<10%` into (signal, amount) pairs.
pub fn parse_thresholds(s: &str) -> Result<Vec<(Signal, Amount)>, ThresholdError> {
    let mut out: Vec<(Signal, Amount)> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item.split_once('<').ok_or_else(|| ThresholdError::Syntax(item.into()))?;
        let signal = Signal::parse(name.trim()).ok_or_else(|| ThresholdError::Signal(name.trim().into()))?;
        let value = value.trim();
        let amount = if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p.parse().map_err(|_| ThresholdError::Quantity(item.into()))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(ThresholdError::Quantity(item.into()));
            }
            Amount::Percent(p)
        } else {
            let q = crate::util::quantity::Quantity::parse(value).ok().filter(|q| !q.is_negative()).ok_or_else(|| ThresholdError::Quantity(item.into()))?;
            Amount::Absolute(q.value() as u64)
        };
        out.retain(|(s, _)| *s != signal);
        out.push((signal, amount));
    }
    Ok(out)
}

/// A Go-style duration (1m30s, 10s, 500ms, 1h), through the one duration parser.
pub fn parse_duration(s: &str) -> Result<Duration, ThresholdError> {
    crate::util::duration::parse(s.trim()).map_err(|_| ThresholdError::Duration(s.into()))
}

/// `memory.available=1m30s,nodefs.available=2m` into grace periods by signal.
pub fn parse_grace_periods(s: &str) -> Result<BTreeMap<Signal, Duration>, ThresholdError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, d) = item.split_once('=').ok_or_else(|| ThresholdError::Syntax(item.into()))?;
        let signal = Signal::parse(name.trim()).ok_or_else(|| ThresholdError::Signal(name.trim().into()))?;
        out.insert(signal, parse_duration(d)?);
    }
    Ok(out)
}

/// The kubelet's default hard thresholds on Linux.
pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";

/// The hard thresholds of a cluster node (`berth server`, `berth agent`), as k3s sets them:
/// disk thresholds of 5%, so a node on a well-used disk still runs pods; the kubelet's memory
/// and inode thresholds are kept. `--eviction-hard` or `[eviction] hard` replace them.
pub const CLUSTER_NODE_HARD: &str = "memory.available<100Mi,nodefs.available<5%,imagefs.available<5%,nodefs.inodesFree<5%";

/// `[eviction]` in the config file; the kubelet's flags of the same names override it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionConfig {
    /// Hard thresholds (default: the kubelet's). An empty string turns hard eviction off.
    pub hard: Option<String>,
    pub soft: Option<String>,
    pub soft_grace_period: Option<String>,
    /// Most seconds a pod gets to stop on a soft eviction (0: its own grace period).
    pub max_pod_grace_period: Option<i64>,
    /// How long a pressure condition stays after its threshold stops being met (5m).
    pub pressure_transition_period: Option<String>,
    /// How often signals are measured (10s, the kubelet's housekeeping period).
    pub monitoring_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvictionSettings {
    pub thresholds: Vec<Threshold>,
    pub max_pod_grace_period: i64,
    pub pressure_transition_period: Duration,
    pub monitoring_interval: Duration,
}

impl EvictionConfig {
    pub fn settings(&self) -> Result<EvictionSettings, ThresholdError> {
        let mut thresholds: Vec<Threshold> = parse_thresholds(self.hard.as_deref().unwrap_or(DEFAULT_HARD))?
            .into_iter()
            .map(|(signal, amount)| Threshold { signal, amount, grace: None })
            .collect();
        let graces = parse_grace_periods(self.soft_grace_period.as_deref().unwrap_or(""))?;
        for (signal, amount) in parse_thresholds(self.soft.as_deref().unwrap_or(""))? {
            let grace = *graces.get(&signal).ok_or_else(|| ThresholdError::NoGrace(signal.name().into()))?;
            thresholds.push(Threshold { signal, amount, grace: Some(grace) });
        }
        let dur = |v: &Option<String>, d: u64| v.as_deref().map(parse_duration).unwrap_or(Ok(Duration::from_secs(d)));
        let monitoring_interval = dur(&self.monitoring_interval, 10)?;
        if monitoring_interval.is_zero() {
            return Err(ThresholdError::Duration("0".into()));
        }
        Ok(EvictionSettings {
            thresholds,
            max_pod_grace_period: self.max_pod_grace_period.unwrap_or(0).max(0),
            pressure_transition_period: dur(&self.pressure_transition_period, 300)?,
            monitoring_interval,
        })
    }
}

/// One measured signal: what is available now and of how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// Show a signal value the way eviction messages do.
pub fn show(signal: Signal, v: u64) -> String {
    if signal.in_bytes() && v > 0 {
        format!("{}Ki", v / 1024)
    } else {
        v.to_string()
    }
}

/// What one monitoring round decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Node conditions now in force (MemoryPressure, DiskPressure, PIDPressure).
    pub conditions: Vec<&'static str>,
    /// The threshold to reclaim for now, with what its signal measured.
    pub reclaim: Option<(Threshold, Observation)>,
}

/// The thresholds' memory across rounds: when each was first seen met, when each condition
/// last held.
#[derive(Debug, Default)]
pub struct Monitor {
    first_met: BTreeMap<(Signal, bool), Duration>,
    condition_last_met: BTreeMap<&'static str, Duration>,
}

impl Monitor {
    /// One round at time `now` (monotonic) with the signals observed.
    pub fn step(&mut self, settings: &EvictionSettings, observed: &BTreeMap<Signal, Observation>, now: Duration) -> Decision {
        let mut actionable: Vec<(Threshold, Observation)> = Vec::new();
        for t in &settings.thresholds {
            let Some(o) = observed.get(&t.signal) else { continue };
            let key = (t.signal, t.is_hard());
            if o.available >= t.quantity(o.capacity) {
                self.first_met.remove(&key);
                continue;
            }
            let since = *self.first_met.entry(key).or_insert(now);
            self.condition_last_met.insert(t.signal.condition(), now);
            let held = now.saturating_sub(since);
            if t.grace.map(|g| held >= g).unwrap_or(true) {
                actionable.push((t.clone(), *o));
            }
        }
        let transition = settings.pressure_transition_period;
        self.condition_last_met.retain(|_, last| now.saturating_sub(*last) <= transition);
        let conditions = self.condition_last_met.keys().copied().collect();
        // Memory first, then PIDs, then disk; hard before soft.
        actionable.sort_by_key(|(t, _)| (t.signal.is_disk(), t.signal != Signal::MemoryAvailable, !t.is_hard()));
        Decision { conditions, reclaim: actionable.into_iter().next() }
    }
}

/// What ranking needs to know of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    pub uid: String,
    pub priority: i32,
    /// Use of the resource under pressure (bytes, inodes or processes).
    pub usage: u64,
    /// The pod's request of that resource (0 when none).
    pub request: u64,
}

/// Order pods for eviction under `signal`, first to go first: for memory and disk, pods
/// using more than they requested, then lower priority, then usage above request; for
/// PIDs, lower priority then more processes.
pub fn rank(signal: Signal, pods: &mut [PodFacts]) {
    pods.sort_by(|a, b| {
        let over = |p: &PodFacts| p.usage > p.request;
        let above = |p: &PodFacts| p.usage as i128 - p.request as i128;
        match signal {
            Signal::PidAvailable => a.priority.cmp(&b.priority).then(b.usage.cmp(&a.usage)),
            _ => over(b).cmp(&over(a)).then(a.priority.cmp(&b.priority)).then(above(b).cmp(&above(a))),
        }
    });
}

/// Pods at or above this priority (system-cluster-critical, system-node-critical) are
/// never evicted.
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hard: &str, soft: &str, grace: &str) -> EvictionSettings {
        EvictionConfig {
            hard: Some(hard.into()),
            soft: Some(soft.into()),
            soft_grace_period: Some(grace.into()),
            pressure_transition_period: Some("30s".into()),
            ..Default::default()
        }
        .settings()
        .unwrap()
    }

    #[test]
    fn thresholds_parse_and_reject_bad_input() {
        let t = parse_thresholds("memory.available<100Mi, nodefs.available<10%,pid.available<500").unwrap();
        assert_eq!(t[0], (Signal::MemoryAvailable, Amount::Absolute(100 << 20)));
        assert_eq!(t[1], (Signal::NodeFsAvailable, Amount::Percent(10.0)));
        assert_eq!(t[2], (Signal::PidAvailable, Amount::Absolute(500)));
        assert!(matches!(parse_thresholds("memory.free<1Gi"), Err(ThresholdError::Signal(_))));
        assert!(matches!(parse_thresholds("memory.available>1Gi"), Err(ThresholdError::Syntax(_))));
        assert!(matches!(parse_thresholds("memory.available<lots"), Err(ThresholdError::Quantity(_))));
        assert!(matches!(parse_thresholds("nodefs.available<120%"), Err(ThresholdError::Quantity(_))));
        let e = EvictionConfig { soft: Some("memory.available<1Gi".into()), ..Default::default() }.settings();
        assert!(matches!(e, Err(ThresholdError::NoGrace(_))));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 minutes").is_err());
        let d = EvictionConfig::default().settings().unwrap();
        assert_eq!(d.thresholds.len(), 4);
        assert_eq!(d.monitoring_interval, Duration::from_secs(10));
        assert!(EvictionConfig { hard: Some(String::new()), ..Default::default() }.settings().unwrap().thresholds.is_empty());
    }

    #[test]
    fn percentages_scale_with_capacity() {
        let t = Threshold { signal: Signal::NodeFsAvailable, amount: Amount::Percent(10.0), grace: None };
        assert_eq!(t.quantity(1000), 100);
    }

    #[test]
    fn hard_acts_at_once_soft_after_its_grace_and_conditions_linger() {
        let s = settings("memory.available<100Mi", "memory.available<1Gi", "memory.available=20s");
        let mut m = Monitor::default();
        let obs = |avail: u64| BTreeMap::from([(Signal::MemoryAvailable, Observation { available: avail, capacity: 8 << 30 })]);
        // Under the soft threshold only: pressure, but nothing to do until 20 s have passed.
        let d = m.step(&s, &obs(512 << 20), Duration::from_secs(0));
        assert_eq!(d.conditions, vec!["MemoryPressure"]);
        assert!(d.reclaim.is_none());
        assert!(m.step(&s, &obs(512 << 20), Duration::from_secs(10)).reclaim.is_none());
        let d = m.step(&s, &obs(512 << 20), Duration::from_secs(20));
        assert_eq!(d.reclaim.map(|(t, _)| t.is_hard()), Some(false));
        // Below the hard threshold: at once.
        let d = m.step(&s, &obs(50 << 20), Duration::from_secs(21));
        assert_eq!(d.reclaim.map(|(t, _)| t.is_hard()), Some(true));
        // Recovered: the condition stays for the transition period, then goes.
        let d = m.step(&s, &obs(4 << 30), Duration::from_secs(40));
        assert_eq!((d.conditions.len(), d.reclaim.is_none()), (1, true));
        assert!(m.step(&s, &obs(4 << 30), Duration::from_secs(60)).conditions.is_empty());
        // A soft threshold met again starts its grace over.
        assert!(m.step(&s, &obs(512 << 20), Duration::from_secs(61)).reclaim.is_none());
    }

    #[test]
    fn memory_ranking_puts_pods_over_their_request_first() {
        let pod = |uid: &str, priority, usage, request| PodFacts { uid: uid.into(), priority, usage, request };
        let mut pods = vec![
            pod("guaranteed-big", 0, 900, 1000),
            pod("besteffort-small", 0, 10, 0),
            pod("burstable-over", 0, 500, 100),
            pod("besteffort-high-priority", 1000, 50, 0),
        ];
        rank(Signal::MemoryAvailable, &mut pods);
        let order: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(order, ["burstable-over", "besteffort-small", "besteffort-high-priority", "guaranteed-big"]);
        let mut pids = vec![pod("a", 10, 5, 0), pod("b", 0, 2, 0), pod("c", 0, 9, 0)];
        rank(Signal::PidAvailable, &mut pids);
        assert_eq!(pids.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["c", "b", "a"]);
    }
}
