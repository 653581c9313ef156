//! What the two endpoint controllers (EndpointSlices and Endpoints) ask of a Service and of the
//! pods it selects, as upstream's endpointslice util: the selector a controller serves, which
//! pods are published and on which port, the pod's addresses and hostname, and which services a
//! pod change concerns. Pure functions over the objects; no API calls, no caches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller::{self, phase};

/// The selector of a Service the endpoint controllers serve: None for an ExternalName service
/// and for one without a selector (its endpoints are written by someone else). An empty
/// selector is no selector, as upstream sees it after the API dropped the empty map.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether the set-based `selector` (every key equal) matches `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pod's IPs: status.podIPs, else status.podIP (the API fills one from the other).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else { return vec![] };
    let ips: Vec<String> = status.pod_ips.iter().flatten().map(|p| p.ip.clone()).filter(|ip| !ip.is_empty()).collect();
    if !ips.is_empty() {
        return ips;
    }
    status.pod_ip.clone().filter(|ip| !ip.is_empty()).into_iter().collect()
}

/// Upstream's ShouldPodBeInEndpoints: not finished (Succeeded or Failed), has an IP, and not
/// being deleted unless `include_terminating`.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if matches!(phase(pod), "Succeeded" | "Failed") || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod's hostname is published: it has one and its subdomain is the service.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    !hostname.is_empty() && spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref() && pod.metadata.namespace == svc.metadata.namespace
}

/// The pod's hostname (when [`should_set_hostname`]).
pub fn hostname(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.hostname.clone().filter(|h| !h.is_empty())
}

/// A ClusterIP is set: neither empty nor "None" (headless).
pub fn is_service_ip_set(svc: &Service) -> bool {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// The protocol of a service or container port (TCP when unset).
fn protocol(p: Option<&str>) -> &str {
    p.unwrap_or("TCP")
}

/// Upstream's FindPort: the container port a service port's targetPort means in this pod. A
/// number is itself; a name is looked up among the named ports of the containers, then of the
/// sidecars (init containers with restartPolicy Always), of the same protocol. None: the pod
/// has no such port.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        None => return Some(port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let proto = protocol(port.protocol.as_deref());
    let spec = pod.spec.as_ref()?;
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name.as_str()) && protocol(p.protocol.as_deref()) == proto)
        .map(|p| p.container_port)
}

/// The names of the services in `services` (one namespace) whose selector matches `labels`.
pub fn services_for(services: &[Arc<Service>], labels: Option<&BTreeMap<String, String>>) -> BTreeSet<String> {
    services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|sp| sp.selector.as_ref()).is_some_and(|sel| !sel.is_empty() && selects(sel, labels)))
        .filter_map(|s| s.metadata.name.clone())
        .collect()
}

/// Upstream's podEndpointsChanged: (the pod changed in a way its endpoints show: deletion,
/// readiness, IPs; its labels or hostname/subdomain changed, which may change its services).
fn endpoints_changed(old: &Pod, new: &Pod) -> (bool, bool) {
    let host = |p: &Pod| p.spec.as_ref().map(|s| (s.hostname.clone(), s.subdomain.clone()));
    let labels_changed = old.metadata.labels != new.metadata.labels || host(old) != host(new);
    let pod_changed = old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || controller::is_ready(old) != controller::is_ready(new)
        || pod_ips(old) != pod_ips(new);
    (pod_changed, labels_changed)
}

/// The services (names, of `services` in the pod's namespace) a pod update concerns, as
/// upstream's GetServicesToUpdateOnPodChange: none when nothing its endpoints show changed;
/// after a label change, the services it left or joined (and, when the pod changed too, all
/// of them).
pub fn services_to_update(services: &[Arc<Service>], old: &Pod, new: &Pod) -> BTreeSet<String> {
    if old.metadata.resource_version == new.metadata.resource_version {
        return BTreeSet::new();
    }
    let (pod_changed, labels_changed) = endpoints_changed(old, new);
    if !pod_changed && !labels_changed {
        return BTreeSet::new();
    }
    let now = services_for(services, new.metadata.labels.as_ref());
    if !labels_changed {
        return now;
    }
    let before = services_for(services, old.metadata.labels.as_ref());
    if pod_changed {
        now.union(&before).cloned().collect()
    } else {
        now.symmetric_difference(&before).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn named_target_ports_resolve_per_pod_by_name_and_protocol_sidecars_included() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [
                {"name": "init", "ports": [{"name": "side", "containerPort": 1}]},
                {"name": "sidecar", "restartPolicy": "Always", "ports": [{"name": "side", "containerPort": 9090}]}
            ]
        }}));
        let port = |v: serde_json::Value| -> ServicePort { serde_json::from_value(v).expect("port") };
        assert_eq!(find_port(&p, &port(json!({"port": 80, "targetPort": "http"}))), Some(8080));
        assert_eq!(find_port(&p, &port(json!({"port": 80, "targetPort": "http", "protocol": "UDP"}))), None);
        assert_eq!(find_port(&p, &port(json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}))), Some(53));
        assert_eq!(find_port(&p, &port(json!({"port": 80, "targetPort": "side"}))), Some(9090));
        assert_eq!(find_port(&p, &port(json!({"port": 80, "targetPort": 81}))), Some(81));
        assert_eq!(find_port(&p, &port(json!({"port": 80}))), Some(80));
        assert_eq!(find_port(&p, &port(json!({"port": 80, "targetPort": "missing"}))), None);
    }

    #[test]
    fn published_pods_have_an_ip_are_not_finished_and_terminate_only_when_asked() {
        let running = pod(json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}}));
        assert!(should_be_in_endpoints(&running, false));
        assert_eq!(pod_ips(&running), vec!["10.0.0.1".to_string()]);
        let no_ip = pod(json!({"status": {"phase": "Pending"}}));
        assert!(!should_be_in_endpoints(&no_ip, true));
        let done = pod(json!({"status": {"phase": "Succeeded", "podIPs": [{"ip": "10.0.0.1"}]}}));
        assert!(!should_be_in_endpoints(&done, true));
        let deleting = pod(json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}}));
        assert!(should_be_in_endpoints(&deleting, true) && !should_be_in_endpoints(&deleting, false));
    }

    #[test]
    fn hostnames_are_published_for_the_subdomain_service_only() {
        let s = svc(json!({"metadata": {"name": "db", "namespace": "ns"}}));
        let p = pod(json!({"metadata": {"namespace": "ns"}, "spec": {"containers": [], "hostname": "db-0", "subdomain": "db"}}));
        assert!(should_set_hostname(&p, &s));
        let other = pod(json!({"metadata": {"namespace": "ns"}, "spec": {"containers": [], "hostname": "db-0", "subdomain": "web"}}));
        assert!(!should_set_hostname(&other, &s));
    }

    #[test]
    fn pod_updates_concern_the_services_left_and_joined() {
        let services: Vec<Arc<Service>> = vec![
            Arc::new(svc(json!({"metadata": {"name": "a"}, "spec": {"selector": {"app": "a"}}}))),
            Arc::new(svc(json!({"metadata": {"name": "b"}, "spec": {"selector": {"app": "b"}}}))),
            Arc::new(svc(json!({"metadata": {"name": "all"}, "spec": {"selector": {"tier": "x"}}}))),
            Arc::new(svc(json!({"metadata": {"name": "none"}, "spec": {}}))),
        ];
        let a = pod(json!({"metadata": {"resourceVersion": "1", "labels": {"app": "a", "tier": "x"}}}));
        let b = pod(json!({"metadata": {"resourceVersion": "2", "labels": {"app": "b", "tier": "x"}}}));
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(services_to_update(&services, &a, &b), set(&["a", "b"]));
        let mut ready = b.clone();
        ready.metadata.resource_version = Some("3".into());
        ready.status = Some(serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "True"}]})).expect("status"));
        assert_eq!(services_to_update(&services, &b, &ready), set(&["all", "b"]));
        let mut annotated = b.clone();
        annotated.metadata.resource_version = Some("4".into());
        assert!(services_to_update(&services, &b, &annotated).is_empty());
    }
}
