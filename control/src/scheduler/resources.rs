//! Resource arithmetic of scheduling: what a pod requests (as upstream's resource helpers count
//! it: regular containers summed, sidecars — restartable init containers — added, plain init
//! containers as a maximum on top of the sidecars started before them, pod overhead added) and
//! what a node offers (status.allocatable). Quantities go through the one quantity parser.

use std::collections::BTreeMap;

use berth_names::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

/// Upstream's defaults for a container that requests no cpu / memory, used when scoring only.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler accounts: millicores, bytes, and every other resource
/// (hugepages-*, extended resources) in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub scalar: BTreeMap<String, i64>,
}

fn parse(q: &ApiQuantity) -> Quantity {
    Quantity::parse(&q.0).unwrap_or_default()
}

impl Resources {
    pub fn from_list(list: Option<&BTreeMap<String, ApiQuantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let q = parse(q);
            match name.as_str() {
                "cpu" => r.milli_cpu = q.milli_value(),
                "memory" => r.memory = q.value(),
                "ephemeral-storage" => r.ephemeral_storage = q.value(),
                // The pod count is accounted apart (allowed_pods).
                "pods" => {}
                other => {
                    r.scalar.insert(other.to_string(), q.value());
                }
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }
}

/// A container's requests; a resource with a limit and no request requests its limit (what the
/// apiserver's defaulting gives upstream).
fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let res = c.resources.as_ref();
    let mut list = res.and_then(|r| r.limits.clone()).unwrap_or_default();
    list.extend(res.and_then(|r| r.requests.clone()).unwrap_or_default());
    let mut r = Resources::from_list(Some(&list));
    if non_zero {
        if !list.contains_key("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if !list.contains_key("memory") {
            r.memory = DEFAULT_MEMORY;
        }
    }
    r
}

/// What `pod` requests. `non_zero`: containers without a cpu / memory request count upstream's
/// defaults (for scoring, so that empty requests do not all land on one node).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources::default() };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running beside the app containers and the later init containers.
            reqs.add(&r);
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut during = r;
            during.add(&sidecars);
            init_max.max_with(&during);
        }
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resources::from_list(Some(overhead)));
    }
    reqs
}

/// What a node offers pods: status.allocatable (capacity when allocatable is not reported).
pub fn node_allocatable(node: &Node) -> (Resources, i64) {
    let status = node.status.as_ref();
    let list = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let pods = list.and_then(|l| l.get("pods")).map(|q| parse(q).value()).unwrap_or(0);
    (Resources::from_list(list), pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn init_containers_count_as_a_maximum_and_sidecars_add_up() {
        let p = pod(serde_json::json!({"spec": {
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m", "memory": "100Mi"}}},
                {"name": "init", "resources": {"requests": {"cpu": "1", "memory": "50Mi"}}}
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "300m"}, "limits": {"memory": "1Gi"}}}],
            "overhead": {"cpu": "10m"}
        }}));
        let r = pod_requests(&p, false);
        // max(300m + 200m, 1 + 200m) + 10m overhead.
        assert_eq!(r.milli_cpu, 1210);
        // max(1Gi + 100Mi, 50Mi + 100Mi).
        assert_eq!(r.memory, (1024 + 100) << 20);
        let empty = pod(serde_json::json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(pod_requests(&empty, false), Resources::default());
        let nz = pod_requests(&empty, true);
        assert_eq!((nz.milli_cpu, nz.memory), (DEFAULT_MILLI_CPU, DEFAULT_MEMORY));
    }
}
