//! The scheduler's picture of the cluster: every node with the pods assigned to it and what they
//! use (requests, host ports, images), kept from the node and pod watches plus the pods this
//! scheduler has just placed and whose binding the watch has not shown yet ("assumed").
//! A scheduling cycle works on a [`Snapshot`]: cheap to take (shared node infos), never changed
//! underneath it. This module only keeps state; it never talks to the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Taint};
use k8s_openapi::api::storage::v1::StorageClass;

use super::resources::{node_allocatable, pod_requests, Resources};

/// A (namespace, name) key.
pub type PodKey = (String, String);

pub fn pod_key(pod: &Pod) -> PodKey {
    (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default())
}

/// A host port a pod holds: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    let spec = pod.spec.iter();
    let containers = spec.flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| {
            let ip = p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
            (p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, p.host_port.unwrap_or(0))
        })
        .collect()
}

/// One node and what is placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    /// Taints the node carries, plus the not-ready / unreachable NoSchedule taint its Ready
    /// condition implies (what upstream's node lifecycle controller would add).
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub pods: Vec<Arc<Pod>>,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
    /// The node's pods that carry pod affinity or anti-affinity terms (for InterPodAffinity).
    pub pods_with_affinity: Vec<Arc<Pod>>,
}

/// Does the pod carry any pod affinity or anti-affinity term?
pub fn has_pod_affinity(pod: &Pod) -> bool {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    a.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let (allocatable, allowed_pods) = node_allocatable(&node);
        let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready")).map(|c| c.status.clone());
        let implied = match ready.as_deref() {
            Some("True") => None,
            Some("False") => Some("node.kubernetes.io/not-ready"),
            _ => Some("node.kubernetes.io/unreachable"),
        };
        if let Some(key) = implied {
            if !taints.iter().any(|t| t.key == key && t.effect == "NoSchedule") {
                taints.push(Taint { key: key.into(), effect: "NoSchedule".into(), ..Default::default() });
            }
        }
        NodeInfo {
            node,
            taints,
            allocatable,
            allowed_pods,
            pods: vec![],
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            used_ports: vec![],
            pods_with_affinity: vec![],
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.requested.add(&pod_requests(&pod, false));
        self.non_zero_requested.add(&pod_requests(&pod, true));
        self.used_ports.extend(pod_host_ports(&pod));
        if has_pod_affinity(&pod) {
            self.pods_with_affinity.push(pod.clone());
        }
        self.pods.push(pod);
    }

    pub fn remove_pod(&mut self, key: &PodKey) {
        let Some(i) = self.pods.iter().position(|p| pod_key(p) == *key) else { return };
        let pod = self.pods.swap_remove(i);
        self.pods_with_affinity.retain(|p| pod_key(p) != *key);
        self.requested.sub(&pod_requests(&pod, false));
        self.non_zero_requested.sub(&pod_requests(&pod, true));
        for port in pod_host_ports(&pod) {
            if let Some(j) = self.used_ports.iter().position(|p| *p == port) {
                self.used_ports.swap_remove(j);
            }
        }
    }

    /// A copy of the node's pods and usage on a new Node object.
    fn with_node(&self, node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo::new(node);
        for p in &self.pods {
            info.add_pod(p.clone());
        }
        info
    }
}

/// A PodDisruptionBudget as preemption needs it.
#[derive(Debug, Clone)]
pub struct Budget {
    pub namespace: String,
    pub selector: berth_apiserver::selector::LabelSelector,
    /// status.disruptionsAllowed.
    pub allowed: i32,
}

/// Claims (by namespace and name), volumes and storage classes (by name), for VolumeBinding.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    pub claims: BTreeMap<(String, String), Arc<PersistentVolumeClaim>>,
    pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
    pub classes: BTreeMap<String, Arc<StorageClass>>,
}

/// What a cycle sees: every node, in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Shared with the cache until it changes a node (copied on write): taking a snapshot of
    /// 5,000 nodes is one reference count, not 5,000.
    pub nodes: Arc<Vec<Arc<NodeInfo>>>,
    /// How many placed pods carry pod affinity or anti-affinity terms (0: InterPodAffinity has
    /// nothing to look for among them).
    pub pods_with_affinity: usize,
    /// Namespace labels, for namespaceSelector.
    pub namespaces: Arc<HashMap<String, BTreeMap<String, String>>>,
    /// PodDisruptionBudgets by namespace/name.
    pub budgets: Arc<BTreeMap<String, Budget>>,
    /// Claims, volumes and classes.
    pub volumes: Arc<Volumes>,
}

impl Snapshot {
    /// A snapshot of these nodes alone (no namespaces, budgets or volumes).
    pub fn with_nodes(nodes: Vec<Arc<NodeInfo>>) -> Snapshot {
        let pods_with_affinity = nodes.iter().map(|n| n.pods_with_affinity.len()).sum();
        Snapshot { nodes: Arc::new(nodes), pods_with_affinity, ..Default::default() }
    }

    /// How many nodes carry each image (by name), for ImageLocality's spread.
    pub fn image_spread(&self, image: &str) -> usize {
        self.nodes.iter().filter(|n| super::plugins::image_locality::node_image_size(n, image).is_some()).count()
    }
}

/// Nodes and assigned pods.
#[derive(Debug, Default)]
pub struct Cache {
    /// Every node, in the order they came (a removed node's place goes to the last one).
    nodes: Arc<Vec<Arc<NodeInfo>>>,
    /// Where each node is in `nodes`.
    index: HashMap<String, usize>,
    /// Placed pods with pod affinity or anti-affinity terms.
    pods_with_affinity: usize,
    /// Pods placed on nodes (seen bound, or assumed), and the node.
    pods: HashMap<PodKey, (String, Arc<Pod>)>,
    /// Pods whose node is not (yet) known to the cache.
    orphans: HashMap<String, Vec<Arc<Pod>>>,
    namespaces: Arc<HashMap<String, BTreeMap<String, String>>>,
    budgets: Arc<BTreeMap<String, Budget>>,
    volumes: Arc<Volumes>,
}

/// Does a node change matter to pods waiting for room (upstream's node update events)?
fn node_changed_for_scheduling(old: &NodeInfo, new: &NodeInfo) -> bool {
    old.allocatable != new.allocatable
        || old.allowed_pods != new.allowed_pods
        || old.taints != new.taints
        || old.node.metadata.labels != new.node.metadata.labels
        || old.node.spec.as_ref().and_then(|s| s.unschedulable) != new.node.spec.as_ref().and_then(|s| s.unschedulable)
        || old.node.status.as_ref().and_then(|s| s.images.as_ref()).map(|i| i.len())
            != new.node.status.as_ref().and_then(|s| s.images.as_ref()).map(|i| i.len())
}

impl Cache {
    /// The node `name` to change (copied first when a snapshot still holds it).
    fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        let i = *self.index.get(name)?;
        Arc::make_mut(&mut self.nodes).get_mut(i).map(Arc::make_mut)
    }

    /// Adds or updates a node; true when the change could make a waiting pod fit.
    pub fn set_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let node = Arc::new(super::slim::node(node));
        match self.index.get(&name).copied() {
            Some(i) => {
                let old = &self.nodes[i];
                let new = old.with_node(node);
                let changed = node_changed_for_scheduling(old, &new);
                Arc::make_mut(&mut self.nodes)[i] = Arc::new(new);
                changed
            }
            None => {
                let mut info = NodeInfo::new(node);
                for p in self.orphans.remove(&name).unwrap_or_default() {
                    info.add_pod(p);
                }
                self.index.insert(name, self.nodes.len());
                Arc::make_mut(&mut self.nodes).push(Arc::new(info));
                true
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let nodes = Arc::make_mut(&mut self.nodes);
        let info = nodes.swap_remove(i);
        if let Some(moved) = nodes.get(i) {
            self.index.insert(moved.name().to_string(), i);
        }
        self.orphans.insert(name.to_string(), info.pods.clone());
    }

    pub fn node_names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    /// Places (or moves) a pod on `node`: a bound pod from the watch, or one just assumed (kept
    /// as [`super::slim::placed`] leaves it). True when the pod is new there or its labels
    /// changed (what pod affinity looks at).
    pub fn add_pod(&mut self, node: &str, pod: Pod) -> bool {
        let pod = Arc::new(super::slim::placed(pod));
        let key = pod_key(&pod);
        let same_place = self.pods.get(&key).filter(|(n, _)| n == node);
        let changed = same_place.is_none_or(|(_, old)| old.metadata.labels != pod.metadata.labels);
        // the binding of a pod assumed here, or a status update: what the node accounts is the
        // same (as it is in the same place with the same spec), nothing to redo
        if !changed && same_place.is_some_and(|(_, old)| old.spec == pod.spec) {
            return false;
        }
        self.remove_pod(&key);
        if has_pod_affinity(&pod) {
            self.pods_with_affinity += 1;
        }
        self.pods.insert(key, (node.to_string(), pod.clone()));
        match self.node_mut(node) {
            Some(info) => info.add_pod(pod),
            None => self.orphans.entry(node.to_string()).or_default().push(pod),
        }
        changed
    }

    /// Removes a pod from its node; true when it held resources somewhere.
    pub fn remove_pod(&mut self, key: &PodKey) -> bool {
        let Some((node, pod)) = self.pods.remove(key) else { return false };
        if has_pod_affinity(&pod) {
            self.pods_with_affinity -= 1;
        }
        match self.node_mut(&node) {
            Some(info) => info.remove_pod(key),
            None => {
                if let Some(o) = self.orphans.get_mut(&node) {
                    o.retain(|p| pod_key(p) != *key);
                }
            }
        }
        true
    }

    pub fn has_pod(&self, key: &PodKey) -> bool {
        self.pods.contains_key(key)
    }

    pub fn pod_keys(&self) -> Vec<PodKey> {
        self.pods.keys().cloned().collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.clone(),
            pods_with_affinity: self.pods_with_affinity,
            namespaces: self.namespaces.clone(),
            budgets: self.budgets.clone(),
            volumes: self.volumes.clone(),
        }
    }

    /// Claims, volumes and classes as they are now.
    pub fn volumes(&self) -> Arc<Volumes> {
        self.volumes.clone()
    }

    /// Changes the claims, volumes and classes (copied on write: snapshots keep theirs).
    pub fn update_volumes(&mut self, change: impl FnOnce(&mut Volumes)) {
        change(Arc::make_mut(&mut self.volumes));
    }

    /// A namespace's labels seen (or changed); true when they changed.
    pub fn set_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) -> bool {
        if self.namespaces.get(name) == Some(&labels) {
            return false;
        }
        Arc::make_mut(&mut self.namespaces).insert(name.to_string(), labels);
        true
    }

    /// A PodDisruptionBudget seen (Some) or deleted (None), keyed namespace/name.
    pub fn set_budget(&mut self, key: String, budget: Option<Budget>) {
        let budgets = Arc::make_mut(&mut self.budgets);
        match budget {
            Some(b) => budgets.insert(key, b),
            None => budgets.remove(&key),
        };
    }

    pub fn remove_namespace(&mut self, name: &str) {
        Arc::make_mut(&mut self.namespaces).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}}))
        .expect("node")
    }

    fn pod(name: &str, cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": cpu}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}))
        .expect("pod")
    }

    #[test]
    fn pods_are_accounted_on_their_node_and_survive_node_updates() {
        let mut c = Cache::default();
        c.add_pod("n1", pod("early", "500m"));
        assert!(c.set_node(node("n1", "2")), "a new node is an event");
        c.add_pod("n1", pod("p", "1"));
        let snap = c.snapshot();
        assert_eq!(snap.nodes[0].requested.milli_cpu, 1500, "the pod seen before its node counts too");
        assert_eq!(snap.nodes[0].used_ports.len(), 2);
        assert!(!c.set_node(node("n1", "2")), "an identical update changes nothing for waiting pods");
        assert!(c.set_node(node("n1", "4")));
        assert_eq!(c.snapshot().nodes[0].requested.milli_cpu, 1500);
        assert!(c.remove_pod(&("default".into(), "p".into())));
        assert_eq!(c.snapshot().nodes[0].requested.milli_cpu, 500);
        assert_eq!(snap.nodes[0].requested.milli_cpu, 1500, "a snapshot does not change under a cycle");
    }

    #[test]
    fn a_node_that_is_not_ready_carries_the_implied_taint() {
        let mut n = node("n", "1");
        if let Some(c) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].status = "False".into();
        }
        let info = NodeInfo::new(Arc::new(n));
        assert_eq!(info.taints.len(), 1);
        assert_eq!(info.taints[0].key, "node.kubernetes.io/not-ready");
    }
}
