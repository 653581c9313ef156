//! The node lifecycle controller, as kube-controller-manager's: it notices nodes whose kubelet
//! stopped reporting and acts on it.
//! - Every `monitor_period` each Node is checked: when neither its Lease in kube-node-lease was
//!   renewed nor its Ready condition's heartbeat moved for `grace` (--node-monitor-grace-period,
//!   40 s), its Ready, MemoryPressure, DiskPressure and PIDPressure conditions become Unknown
//!   (`NodeStatusUnknown`, "Kubelet stopped posting node status."; a condition never posted:
//!   `NodeStatusNeverUpdated`). The clock starts when the controller first sees a node, so a
//!   freshly elected controller gives every node the full grace period.
//! - Taints follow the Ready condition: `node.kubernetes.io/not-ready` (False) or
//!   `node.kubernetes.io/unreachable` (Unknown), each as NoSchedule and NoExecute (with
//!   `timeAdded`), plus NoSchedule taints for `spec.unschedulable` and the pressure conditions;
//!   they go when the condition does.
//! - The NoExecute taint manager: a pod on a node with a NoExecute taint it does not tolerate is
//!   deleted at once, one that tolerates it for `tolerationSeconds` when that time has passed
//!   since the taint was added (the DefaultTolerationSeconds admission gives pods 300 s), with the
//!   DisruptionTarget condition (`DeletionByTaintManager`) written first, as upstream.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const PRESSURE_TAINTS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];
/// The conditions made Unknown when the kubelet goes quiet.
const WATCHED_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Debug, Clone)]
pub struct Config {
    /// --node-monitor-grace-period.
    pub grace: Duration,
    /// --node-monitor-period.
    pub monitor_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { grace: Duration::from_secs(40), monitor_period: Duration::from_secs(5) }
    }
}

/// What was last seen of a node's kubelet, and when.
struct Probe {
    heartbeat: Option<Timestamp>,
    renew: Option<Timestamp>,
    seen: Instant,
}

/// Runs the controller until `stop`: it watches through `informers` (the controller manager's
/// own identity, as upstream's shared informers) and writes through `client` (the
/// node-controller's).
pub async fn run(informers: kube::Client, client: kube::Client, cfg: Config, stop: CancellationToken) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::all(client.clone());
    let leases_watch: Api<Lease> = Api::namespaced(informers.clone(), "kube-node-lease");
    let nodes_watch: Api<Node> = Api::all(informers.clone());
    let pods_watch: Api<Pod> = Api::all(informers);
    let (nodes, nodes_w) = reflector::store();
    let (leases, leases_w) = reflector::store();
    let (pods, pods_w) = reflector::store();
    let node_stream = reflector(nodes_w, watcher(nodes_watch, watcher::Config::default())).default_backoff().for_each(|_| async {});
    let lease_stream = reflector(leases_w, watcher(leases_watch, watcher::Config::default())).default_backoff().for_each(|_| async {});
    let pod_stream = reflector(pods_w, watcher(pods_watch, watcher::Config::default())).default_backoff().for_each(|_| async {});
    let streams = async { tokio::join!(node_stream, lease_stream, pod_stream) };
    let work = async {
        let _ = nodes.wait_until_ready().await;
        let _ = leases.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        let mut probes: HashMap<String, Probe> = HashMap::new();
        let mut tick = tokio::time::interval(cfg.monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leases_now: BTreeMap<String, Option<Timestamp>> = leases
                .state()
                .iter()
                .map(|l| (l.metadata.name.clone().unwrap_or_default(), l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0)))
                .collect();
            let all_nodes = nodes.state();
            probes.retain(|name, _| all_nodes.iter().any(|n| n.metadata.name.as_deref() == Some(name)));
            for node in all_nodes.iter() {
                let name = node.metadata.name.clone().unwrap_or_default();
                let heartbeat = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
                let renew = leases_now.get(&name).copied().flatten();
                let probe = probes.entry(name.clone()).or_insert(Probe { heartbeat, renew, seen: Instant::now() });
                if probe.heartbeat != heartbeat || probe.renew != renew {
                    *probe = Probe { heartbeat, renew, seen: Instant::now() };
                }
                let quiet = probe.seen.elapsed() > cfg.grace;
                if quiet {
                    mark_unknown(&nodes_api, node).await;
                }
                // taints from the conditions as they will be after this pass
                let ready = if quiet { "Unknown".to_string() } else { condition(node, "Ready").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()) };
                let has_ready = condition(node, "Ready").is_some() || quiet;
                retaint(&nodes_api, node, has_ready.then_some(ready.as_str())).await;
            }
            evict(&pods_api, &nodes.state(), &pods.state()).await;
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = streams => {}
        _ = work => {}
    }
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == kind))
}

/// The watched conditions set to Unknown (those not already so).
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Vec<NodeCondition> {
    let mut out = vec![];
    for kind in WATCHED_CONDITIONS {
        match condition(node, kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => out.push(NodeCondition {
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                last_transition_time: Some(Time(now)),
                ..c.clone()
            }),
            None => out.push(NodeCondition {
                type_: kind.to_string(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    out
}

async fn mark_unknown(api: &Api<Node>, node: &Node) {
    let changed = unknown_conditions(node, Timestamp::now());
    if changed.is_empty() {
        return;
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({"status": {"conditions": changed}});
    match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await {
        Ok(_) => tracing::info!(node = name, "the kubelet stopped posting node status: conditions Unknown"),
        Err(e) => tracing::warn!(node = name, error = %e, "marking the node's conditions Unknown"),
    }
}

/// The taints this controller manages, for a node whose Ready condition is `ready` (None: the
/// node never posted one).
pub fn wanted_taints(node: &Node, ready: Option<&str>) -> Vec<(String, String)> {
    let mut out = vec![];
    let by_ready = match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    };
    if let Some(key) = by_ready {
        out.push((key.to_string(), "NoSchedule".to_string()));
        out.push((key.to_string(), "NoExecute".to_string()));
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        out.push((UNSCHEDULABLE.to_string(), "NoSchedule".to_string()));
    }
    for (kind, key) in PRESSURE_TAINTS {
        if condition(node, kind).is_some_and(|c| c.status == "True") {
            out.push((key.to_string(), "NoSchedule".to_string()));
        }
    }
    out
}

fn managed(key: &str) -> bool {
    key == NOT_READY || key == UNREACHABLE || key == UNSCHEDULABLE || PRESSURE_TAINTS.iter().any(|(_, k)| *k == key)
}

/// The node's taints with the managed ones made what `wanted` says (others untouched).
pub fn retainted(current: &[Taint], wanted: &[(String, String)], now: Timestamp) -> Vec<Taint> {
    let mut out: Vec<Taint> = current.iter().filter(|t| !managed(&t.key) || wanted.iter().any(|(k, e)| *k == t.key && *e == t.effect)).cloned().collect();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            let time_added = (effect == "NoExecute").then_some(Time(now));
            out.push(Taint { key: key.clone(), effect: effect.clone(), time_added, value: None });
        }
    }
    out
}

async fn retaint(api: &Api<Node>, node: &Node, ready: Option<&str>) {
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let wanted = wanted_taints(node, ready);
    let next = retainted(&current, &wanted, Timestamp::now());
    if next == current {
        return;
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({"spec": {"taints": next}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => tracing::info!(node = name, taints = ?wanted, "node taints updated"),
        Err(e) => tracing::warn!(node = name, error = %e, "updating the node's taints"),
    }
}

/// When a pod on a node with `taints` must go: None when it tolerates them all for ever.
pub fn eviction_time(pod: &Pod, taints: &[Taint]) -> Option<Timestamp> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let added = t.time_added.as_ref().map(|x| x.0).unwrap_or_else(Timestamp::now);
        let matching: Vec<_> = tolerations.iter().filter(|tol| crate::scheduler::plugins::taint_toleration::tolerates(tol, t)).collect();
        let when = if matching.is_empty() {
            Some(added)
        } else if matching.iter().any(|tol| tol.toleration_seconds.is_none()) {
            None
        } else {
            let secs = matching.iter().filter_map(|tol| tol.toleration_seconds).min().unwrap_or(0).max(0);
            added.checked_add(jiff::SignedDuration::from_secs(secs)).ok()
        };
        if let Some(w) = when {
            at = Some(at.map_or(w, |a: Timestamp| a.min(w)));
        }
    }
    at
}

async fn evict(api: &Api<Pod>, nodes: &[std::sync::Arc<Node>], pods: &[std::sync::Arc<Pod>]) {
    let now = Timestamp::now();
    let taints_of: BTreeMap<&str, Vec<Taint>> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or(""), n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()))
        .filter(|(_, t)| t.iter().any(|t| t.effect == "NoExecute"))
        .collect();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
        let Some(taints) = taints_of.get(node) else { continue };
        let Some(at) = eviction_time(pod, taints) else { continue };
        if at > now {
            continue;
        }
        let (ns, name) = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
        let api: Api<Pod> = Api::namespaced(api.clone().into_client(), &ns);
        let condition = serde_json::json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": Time(now)
        }]}});
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition)).await {
            tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "the DisruptionTarget condition");
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node, "Marking for deletion Pod {ns}/{name} (TaintManagerEviction)"),
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "evicting the pod"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    #[test]
    fn quiet_nodes_get_unknown_conditions() {
        let n = node(json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:01:00Z"}]}}));
        let now = Timestamp::now();
        let cs = unknown_conditions(&n, now);
        assert_eq!(cs.len(), 4);
        let ready = &cs[0];
        assert_eq!((ready.type_.as_str(), ready.status.as_str(), ready.reason.as_deref()), ("Ready", "Unknown", Some("NodeStatusUnknown")));
        assert_eq!(ready.message.as_deref(), Some("Kubelet stopped posting node status."));
        assert_eq!(ready.last_heartbeat_time.as_ref().map(|t| t.0.to_string()), Some("2026-01-01T00:01:00Z".into()), "the heartbeat stays");
        assert_eq!(cs[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
    }

    #[test]
    fn taints_follow_ready_and_keep_the_users() {
        let n = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "mine", "effect": "NoSchedule"}]}}));
        let now = Timestamp::now();
        let current = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let t = retainted(&current, &wanted_taints(&n, Some("Unknown")), now);
        let keys: Vec<(String, String)> = t.iter().map(|t| (t.key.clone(), t.effect.clone())).collect();
        assert_eq!(keys, vec![("mine".into(), "NoSchedule".into()), (UNREACHABLE.into(), "NoSchedule".into()), (UNREACHABLE.into(), "NoExecute".into())]);
        assert!(t[2].time_added.is_some() && t[1].time_added.is_none());
        let back = retainted(&t, &wanted_taints(&n, Some("True")), now);
        assert_eq!(back, current);
    }

    #[test]
    fn pods_go_when_their_toleration_runs_out() {
        let added = Timestamp::now();
        let taints = vec![Taint { key: UNREACHABLE.into(), effect: "NoExecute".into(), time_added: Some(Time(added)), value: None }];
        let pod =
            |tolerations: serde_json::Value| -> Pod { serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}})).expect("pod") };
        assert_eq!(eviction_time(&pod(json!([])), &taints), Some(added));
        let t = eviction_time(&pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}])), &taints);
        assert_eq!(t, added.checked_add(jiff::SignedDuration::from_secs(30)).ok());
        assert_eq!(eviction_time(&pod(json!([{"operator": "Exists"}])), &taints), None);
    }
}
