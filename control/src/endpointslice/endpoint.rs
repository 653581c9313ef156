//! One pod as an endpoint of one Service, as upstream's podToEndpoint and getEndpointPorts: its
//! addresses of one address type, its conditions, node, zone, hostname and reference, and the
//! ports the service's ports resolve to in it. Also what makes two endpoints the same one
//! (upstream's endpoint hash) and the key grouping endpoints of equal ports. Pure.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use crate::controller::is_ready;
use crate::controller::service_pods::{self, find_port, should_set_hostname};

pub const IPV4: &str = "IPv4";
pub const IPV6: &str = "IPv6";

/// The address types a service's slices have, as upstream's getAddressTypesForService: its
/// ipFamilies; without them the family of its ClusterIP, and both for a headless service.
pub fn address_types(svc: &Service) -> BTreeSet<&'static str> {
    let spec = svc.spec.as_ref();
    let mut types: BTreeSet<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IPV4),
            "IPv6" => Some(IPV6),
            _ => None,
        })
        .collect();
    if !types.is_empty() {
        return types;
    }
    if service_pods::is_service_ip_set(svc) {
        let v6 = spec.and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok()).is_some_and(|ip| ip.is_ipv6());
        types.insert(if v6 { IPV6 } else { IPV4 });
        return types;
    }
    BTreeSet::from([IPV4, IPV6])
}

/// The pod's IPs of `address_type`, in their canonical form.
pub fn addresses(pod: &Pod, address_type: &str) -> Vec<String> {
    service_pods::pod_ips(pod)
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| ip.is_ipv6() == (address_type == IPV6))
        .map(|ip| ip.to_string())
        .collect()
}

/// The ports of the service's ports in this pod (a port whose targetPort the pod does not
/// have is left out); a headless service may have none.
pub fn ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = find_port(pod, p)?;
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// The pod as an endpoint of `address_type` (`zone`: its node's topology.kubernetes.io/zone).
/// serving is the pod's readiness, terminating its deletion, and ready is serving and not
/// terminating, or always with publishNotReadyAddresses.
pub fn from_pod(pod: &Pod, zone: Option<&str>, svc: &Service, address_type: &str) -> Endpoint {
    let serving = is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let ready = publish || (serving && !terminating);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    Endpoint {
        addresses: addresses(pod, address_type),
        conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(serving), terminating: Some(terminating) }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        node_name: node,
        zone: zone.filter(|z| !z.is_empty()).map(String::from),
        hostname: if should_set_hostname(pod, svc) { service_pods::hostname(pod) } else { None },
        ..Default::default()
    }
}

/// What identifies an endpoint across syncs (upstream's endpoint hash): its sorted
/// addresses, hostname and the namespace and name of its target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    target: (String, String),
}

pub fn key(e: &Endpoint) -> EndpointKey {
    let mut addresses = e.addresses.clone();
    addresses.sort();
    let target = e.target_ref.as_ref().map(|r| (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default())).unwrap_or_default();
    EndpointKey { addresses, hostname: e.hostname.clone().unwrap_or_default(), target }
}

/// Upstream's EndpointsEqualBeyondHash: node, zone, conditions and target (but its
/// resourceVersion) equal.
pub fn equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut r| {
            r.resource_version = None;
            r
        })
    };
    a.node_name == b.node_name && a.zone == b.zone && a.conditions == b.conditions && target(a) == target(b)
}

/// The key grouping endpoints of the same ports, in any order (upstream's PortMapKey).
pub type PortKey = Vec<(String, i32, String, String)>;

pub fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0), p.protocol.clone().unwrap_or_default(), p.app_protocol.clone().unwrap_or_default()))
        .collect();
    key.sort();
    key
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

    fn conditions(e: &Endpoint) -> (bool, bool, bool) {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready.unwrap_or_default(), c.serving.unwrap_or_default(), c.terminating.unwrap_or_default())
    }

    #[test]
    fn conditions_are_ready_serving_terminating_as_upstream() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.10"}}));
        let ready = json!({"phase": "Running", "podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "True"}]});
        let unready = json!({"phase": "Running", "podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "False"}]});
        let p = pod(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"containers": [], "nodeName": "n1"}, "status": ready}));
        let e = from_pod(&p, Some("z1"), &s, IPV4);
        assert_eq!(conditions(&e), (true, true, false));
        assert_eq!(e.addresses, vec!["10.1.0.5"]);
        assert_eq!((e.node_name.as_deref(), e.zone.as_deref()), (Some("n1"), Some("z1")));
        let r = e.target_ref.clone().unwrap_or_default();
        assert_eq!((r.kind.as_deref(), r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()), (Some("Pod"), Some("ns"), Some("p"), Some("u1")));
        let mut terminating = p.clone();
        terminating.metadata.deletion_timestamp = serde_json::from_value(json!("2025-01-01T00:00:00Z")).ok();
        assert_eq!(conditions(&from_pod(&terminating, None, &s, IPV4)), (false, true, true));
        let not_ready = pod(json!({"metadata": {"name": "q"}, "spec": {"containers": []}, "status": unready}));
        assert_eq!(conditions(&from_pod(&not_ready, None, &s, IPV4)), (false, false, false));
        let publish = svc(json!({"metadata": {"name": "web"}, "spec": {"publishNotReadyAddresses": true}}));
        assert_eq!(conditions(&from_pod(&not_ready, None, &publish, IPV4)), (true, false, false));
        assert!(from_pod(&p, None, &s, IPV6).addresses.is_empty());
    }

    #[test]
    fn ports_resolve_named_target_ports_and_keys_ignore_order() {
        let s = svc(json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP", "appProtocol": "http"},
            {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"},
            {"name": "gone", "port": 1, "targetPort": "nope", "protocol": "TCP"}
        ]}}));
        let p = pod(json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]}}));
        let ps = ports(&s, &p);
        assert_eq!(ps.len(), 2);
        assert_eq!((ps[0].name.as_deref(), ps[0].port, ps[0].app_protocol.as_deref()), (Some("http"), Some(8080), Some("http")));
        let mut reversed = ps.clone();
        reversed.reverse();
        assert_eq!(port_key(&ps), port_key(&reversed));
    }

    #[test]
    fn address_types_follow_ip_families_then_the_cluster_ip() {
        let dual = svc(json!({"spec": {"ipFamilies": ["IPv6", "IPv4"]}}));
        assert_eq!(address_types(&dual), BTreeSet::from([IPV4, IPV6]));
        let v6 = svc(json!({"spec": {"clusterIP": "fd00::1"}}));
        assert_eq!(address_types(&v6), BTreeSet::from([IPV6]));
        let headless = svc(json!({"spec": {"clusterIP": "None"}}));
        assert_eq!(address_types(&headless), BTreeSet::from([IPV4, IPV6]));
    }
}
