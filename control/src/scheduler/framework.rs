//! The scheduling framework: filter and score plugins (one file each under `plugins/`), composed
//! by a profile with weights, run over a snapshot. A node rejected by a filter gets that
//! plugin's reasons; the reasons of all nodes aggregate into upstream's FitError message
//! ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had ...."). This module decides
//! nothing about a particular resource or label: the plugins do.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::cache::{NodeInfo, Snapshot};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a filter rejects a node; `resolvable`: whether removing pods from the node (preemption)
/// could make room (upstream's Unschedulable vs UnschedulableAndUnresolvable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

impl Rejection {
    pub fn unresolvable(reason: impl Into<String>) -> Rejection {
        Rejection { reasons: vec![reason.into()], resolvable: false }
    }

    pub fn resolvable(reason: impl Into<String>) -> Rejection {
        Rejection { reasons: vec![reason.into()], resolvable: true }
    }
}

/// What a plugin computes once per cycle (upstream's PreFilter / PreScore) for its per-node calls.
pub type CycleState = Option<Box<dyn std::any::Any + Send + Sync>>;

pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection>;
    /// Once per cycle, before the nodes are filtered (default: nothing).
    fn pre_filter(&self, _pod: &Pod, _snapshot: &Snapshot) -> CycleState {
        None
    }
    /// Once per cycle, when the plugin can reject the pod for every node at once (upstream's
    /// PreFilter returning Unschedulable): the state, or why the pod fits nowhere (default:
    /// [`FilterPlugin::pre_filter`], never rejecting).
    fn pre_filter_check(&self, pod: &Pod, snapshot: &Snapshot) -> Result<CycleState, Rejection> {
        Ok(self.pre_filter(pod, snapshot))
    }
    /// The per-node check with the cycle's state (default: [`FilterPlugin::filter`]).
    fn filter_with(&self, pod: &Pod, node: &NodeInfo, _state: &CycleState) -> Result<(), Rejection> {
        self.filter(pod, node)
    }
}

pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// A raw score of `node` for `pod`.
    fn score(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> i64;
    /// Once per cycle, before the nodes are scored (default: nothing).
    fn pre_score(&self, _pod: &Pod, _snapshot: &Snapshot) -> CycleState {
        None
    }
    /// The per-node score with the cycle's state (default: [`ScorePlugin::score`]).
    fn score_with(&self, pod: &Pod, node: &NodeInfo, snapshot: &Snapshot, _state: &CycleState) -> i64 {
        self.score(pod, node, snapshot)
    }
    /// Brings the raw scores of all feasible nodes to 0..=MAX_NODE_SCORE (default: as they are).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Scales scores to 0..=MAX_NODE_SCORE by the highest one; `reverse` makes the highest the worst
/// (upstream's DefaultNormalizeScore).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// One profile: its filters in order and its weighted scores.
pub struct Profile {
    pub scheduler_name: String,
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<(Box<dyn ScorePlugin>, i64)>,
    /// Percentage of nodes to find feasible before scoring (0: upstream's adaptive default).
    pub percentage_of_nodes_to_score: u32,
}

/// Nodes that rejected the pod, by reason, plus whether each rejection could be resolved.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    pub rejected: BTreeMap<String, Rejection>,
    /// Why a PreFilter rejected the pod for every node (then `rejected` lists every node with it).
    pub pre_filter_msg: Option<String>,
}

/// No node fits: upstream's FitError.
#[derive(Debug, Clone)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
    /// The preemption step's message ("preemption: ..."), if it ran.
    pub post_filter_msg: Option<String>,
}

/// "3 reason-a, 1 reason-b" sorted as upstream sorts the strings.
pub fn reasons_histogram<'a>(reasons: impl Iterator<Item = &'a String>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(m) = &self.diagnosis.pre_filter_msg {
            // every node carries the same reason: upstream names it once
            write!(f, " {m}.")?;
        } else {
            let hist = reasons_histogram(self.diagnosis.rejected.values().flat_map(|r| r.reasons.iter()));
            if !hist.is_empty() {
                write!(f, " {hist}.")?;
            }
        }
        if let Some(m) = &self.post_filter_msg {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

/// How many feasible nodes to look for before scoring (upstream's numFeasibleNodesToFind).
pub fn nodes_to_find(all: usize, percentage: u32) -> usize {
    const MIN_NODES: usize = 100;
    const MIN_PERCENT: usize = 5;
    if all < MIN_NODES || percentage >= 100 {
        return all;
    }
    let mut pct = percentage as usize;
    if pct == 0 {
        pct = 50usize.saturating_sub(all / 125).max(MIN_PERCENT);
    }
    (all * pct / 100).max(MIN_NODES)
}

impl Profile {
    /// Each filter's state for one cycle, or the first PreFilter rejection.
    pub fn pre_filter(&self, pod: &Pod, snapshot: &Snapshot) -> Result<Vec<CycleState>, Rejection> {
        self.filters.iter().map(|f| f.pre_filter_check(pod, snapshot)).collect()
    }

    /// Runs the filters on one node; the first rejection stops them.
    pub fn filter_node(&self, pod: &Pod, node: &NodeInfo, states: &[CycleState]) -> Result<(), Rejection> {
        for (f, state) in self.filters.iter().zip(states) {
            f.filter_with(pod, node, state)?;
        }
        Ok(())
    }

    /// Feasible nodes, from `start` round the snapshot, stopping after enough are found.
    pub fn find_feasible(&self, pod: &Pod, snapshot: &Snapshot, start: usize) -> (Vec<Arc<NodeInfo>>, Diagnosis) {
        let all = snapshot.nodes.len();
        let want = nodes_to_find(all, self.percentage_of_nodes_to_score);
        let mut feasible = vec![];
        let mut diagnosis = Diagnosis::default();
        let states = match self.pre_filter(pod, snapshot) {
            Ok(states) => states,
            Err(r) => {
                diagnosis.pre_filter_msg = Some(r.reasons.join(", "));
                for node in snapshot.nodes.iter() {
                    diagnosis.rejected.insert(node.name().to_string(), r.clone());
                }
                return (feasible, diagnosis);
            }
        };
        for i in 0..all {
            let node = &snapshot.nodes[(start + i) % all];
            match self.filter_node(pod, node, &states) {
                Ok(()) => {
                    feasible.push(node.clone());
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(r) => {
                    diagnosis.rejected.insert(node.name().to_string(), r);
                }
            }
        }
        (feasible, diagnosis)
    }

    /// Weighted total score of each feasible node.
    pub fn score(&self, pod: &Pod, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Vec<i64> {
        let mut totals = vec![0i64; nodes.len()];
        for (plugin, weight) in &self.scores {
            let state = plugin.pre_score(pod, snapshot);
            let mut scores: Vec<i64> = nodes.iter().map(|n| plugin.score_with(pod, n, snapshot, &state)).collect();
            plugin.normalize(&mut scores);
            for (t, s) in totals.iter_mut().zip(scores) {
                *t += s * weight;
            }
        }
        totals
    }

    /// The best node; ties broken at random (each tied node equally likely).
    pub fn select_host(&self, pod: &Pod, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Option<Arc<NodeInfo>> {
        if nodes.len() <= 1 {
            return nodes.first().cloned();
        }
        let scores = self.score(pod, nodes, snapshot);
        let (mut best, mut best_score, mut ties) = (0, i64::MIN, 0u32);
        for (i, s) in scores.iter().enumerate() {
            if *s > best_score {
                (best, best_score, ties) = (i, *s, 1);
            } else if *s == best_score {
                ties += 1;
                if fastrand::u32(0..ties) == 0 {
                    best = i;
                }
            }
        }
        nodes.get(best).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_error_reads_as_upstream_writes_it() {
        let mut d = Diagnosis::default();
        d.rejected.insert("a".into(), Rejection::resolvable("Insufficient cpu"));
        d.rejected.insert("b".into(), Rejection::unresolvable("node(s) had untolerated taint {key: value}"));
        d.rejected.insert("c".into(), Rejection::unresolvable("node(s) had untolerated taint {key: value}"));
        let e = FitError {
            num_all_nodes: 3,
            diagnosis: d,
            post_filter_msg: Some("preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.".into()),
        };
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn a_pre_filter_rejection_is_named_once() {
        let mut d = Diagnosis::default();
        d.rejected.insert("a".into(), Rejection::unresolvable("pod has unbound immediate PersistentVolumeClaims"));
        d.rejected.insert("b".into(), Rejection::unresolvable("pod has unbound immediate PersistentVolumeClaims"));
        d.pre_filter_msg = Some("pod has unbound immediate PersistentVolumeClaims".into());
        let e = FitError {
            num_all_nodes: 2,
            diagnosis: d,
            post_filter_msg: Some("preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.".into()),
        };
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn adaptive_percentage_of_nodes_to_score() {
        assert_eq!(nodes_to_find(50, 0), 50);
        assert_eq!(nodes_to_find(1000, 0), 420);
        assert_eq!(nodes_to_find(5000, 0), 500);
        assert_eq!(nodes_to_find(5000, 100), 5000);
        assert_eq!(nodes_to_find(1000, 1), 100);
    }

    #[test]
    fn normalizing_scales_to_the_best() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
    }
}
