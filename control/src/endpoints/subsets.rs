//! The subsets of a core/v1 Endpoints, as upstream's endpoints controller and
//! pkg/api/v1/endpoints compute them: one address per published pod (of the service's first IP
//! family) with its node, hostname and reference, ready or not ready, per resolved port;
//! repacked into the canonical layout (addresses offering the same ports share a subset, not
//! ready wins over ready); truncated to 1000 addresses. Pure.
//!
//! Upstream sorts ports and subsets by a hash of their printed form; here by their content
//! (ports by name, number, protocol; subsets by their first address). The sets are the same.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort};

use crate::controller::is_ready;
use crate::controller::service_pods::{self, find_port, should_be_in_endpoints, should_set_hostname};

/// Most addresses an Endpoints holds (upstream's maxCapacity).
pub const MAX_CAPACITY: usize = 1000;

fn is_v6(ip: &str) -> bool {
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6())
}

/// The pod's address for the service, as upstream's podToEndpointAddressForService: the pod IP
/// of the service's (first) IP family; None when the pod has none of it.
pub fn address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let spec = svc.spec.as_ref();
    let want_v6 = match spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        Some(family) => family == "IPv6",
        None if service_pods::is_service_ip_set(svc) => spec.and_then(|s| s.cluster_ip.as_deref()).is_some_and(is_v6),
        None => pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).is_some_and(is_v6),
    };
    let ip = service_pods::pod_ips(pod).into_iter().find(|ip| is_v6(ip) == want_v6)?;
    Some(EndpointAddress {
        ip,
        node_name: Some(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()),
        hostname: if should_set_hostname(pod, svc) { service_pods::hostname(pod) } else { None },
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
    })
}

fn port(p: &ServicePort, number: i32) -> EndpointPort {
    EndpointPort {
        name: p.name.clone().filter(|n| !n.is_empty()),
        port: number,
        protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
        app_protocol: p.app_protocol.clone(),
    }
}

/// The service's subsets from the pods it selects (repacked).
pub fn desired(svc: &Service, pods: &[std::sync::Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.unwrap_or_default();
    let mut subsets = vec![];
    for pod in pods {
        if !should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(addr) = address(svc, pod) else { continue };
        let ready = publish || is_ready(pod);
        let one = |ports: Option<Vec<EndpointPort>>| {
            let (addresses, not_ready) = if ready { (Some(vec![addr.clone()]), None) } else { (None, Some(vec![addr.clone()])) };
            EndpointSubset { addresses, not_ready_addresses: not_ready, ports }
        };
        if ports.is_empty() {
            // a headless service may have no ports
            if headless {
                subsets.push(one(None));
            }
            continue;
        }
        for p in &ports {
            if let Some(n) = find_port(pod, p) {
                subsets.push(one(Some(vec![port(p, n)])));
            }
        }
    }
    repack(&subsets)
}

type PortKey = (String, i32, String, String);

fn port_key(p: &EndpointPort) -> PortKey {
    (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default(), p.app_protocol.clone().unwrap_or_default())
}

/// Upstream's RepackSubsets: every (address, port) pair expanded, then addresses offering the
/// same ports (with the same readiness) grouped into one subset; an address not ready for a
/// port anywhere is not ready for it. Addresses are the same when IP and target uid are.
pub fn repack(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut addrs: Vec<EndpointAddress> = vec![];
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, (Option<EndpointPort>, BTreeMap<usize, bool>)> = BTreeMap::new();
    for s in subsets {
        let ports: Vec<Option<&EndpointPort>> = match s.ports.as_deref() {
            Some(ps) if !ps.is_empty() => ps.iter().map(Some).collect(),
            _ => vec![None], // no ports: kept under a sentinel
        };
        let listed = s.addresses.iter().flatten().map(|a| (a, true)).chain(s.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (a, ready) in listed {
            let id = (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default());
            let i = *index.entry(id).or_insert_with(|| {
                addrs.push(a.clone());
                addrs.len() - 1
            });
            for p in &ports {
                let key = p.map(port_key).unwrap_or_else(|| (String::new(), -1, String::new(), String::new()));
                let entry = by_port.entry(key).or_insert_with(|| (p.cloned(), BTreeMap::new()));
                let was = entry.1.entry(i).or_insert(ready);
                *was = *was && ready;
            }
        }
    }
    let mut grouped: BTreeMap<Vec<(usize, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (port, set) in by_port.into_values() {
        let ports = grouped.entry(set.into_iter().collect()).or_default();
        ports.extend(port);
    }
    let mut out: Vec<EndpointSubset> = grouped
        .into_iter()
        .map(|(set, mut ports)| {
            let pick = |want: bool| -> Option<Vec<EndpointAddress>> {
                let mut v: Vec<EndpointAddress> = set.iter().filter(|(_, r)| *r == want).map(|(i, _)| addrs[*i].clone()).collect();
                v.sort_by(|a, b| (a.ip.as_str(), uid(a)).cmp(&(b.ip.as_str(), uid(b))));
                (!v.is_empty()).then_some(v)
            };
            ports.sort_by_key(port_key);
            EndpointSubset { addresses: pick(true), not_ready_addresses: pick(false), ports: (!ports.is_empty()).then_some(ports) }
        })
        .collect();
    out.sort_by_key(order_key);
    out
}

fn uid(a: &EndpointAddress) -> &str {
    a.target_ref.as_ref().and_then(|r| r.uid.as_deref()).unwrap_or("")
}

fn order_key(s: &EndpointSubset) -> (String, String, Vec<PortKey>) {
    let first = s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()).next();
    (first.map(|a| a.ip.clone()).unwrap_or_default(), first.map(|a| uid(a).to_string()).unwrap_or_default(), s.ports.iter().flatten().map(port_key).collect())
}

/// Upstream's truncateEndpoints: over 1000 addresses, each subset keeps its share (rounded
/// up, within what is left) of the ready addresses (and no not-ready ones), or, when the ready
/// ones fit, all of them and its share of the not-ready ones. Whether it truncated.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |f: fn(&EndpointSubset) -> usize| subsets.iter().map(f).sum::<usize>();
    let ready = count(|s| s.addresses.as_ref().map_or(0, Vec::len));
    let not_ready = count(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len));
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready { (MAX_CAPACITY, ready) } else { (MAX_CAPACITY - ready, not_ready) };
    let mut left = max;
    for s in subsets.iter_mut() {
        let list = if truncate_ready { &mut s.addresses } else { &mut s.not_ready_addresses };
        let n = list.as_ref().map_or(0, Vec::len);
        let share = ((n as f64 / total as f64) * max as f64).ceil() as usize;
        let keep = share.min(left);
        if let Some(l) = list.as_mut() {
            l.truncate(keep);
        }
        left -= list.as_ref().map_or(0, Vec::len);
        if truncate_ready {
            s.not_ready_addresses = None;
        }
    }
    true
}

/// Upstream's capacityAnnotationSetCorrectly: not over capacity, and no over-capacity
/// annotation.
pub fn capacity_annotation_ok(annotations: Option<&BTreeMap<String, String>>, subsets: &[EndpointSubset]) -> bool {
    let n: usize = subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum();
    n <= MAX_CAPACITY && !annotations.is_some_and(|a| a.contains_key(super::OVER_CAPACITY))
}

/// The subsets as compared: empty lists as absent, target references without resourceVersion.
pub fn normalized(subsets: Option<&[EndpointSubset]>) -> Vec<EndpointSubset> {
    let addrs = |l: &Option<Vec<EndpointAddress>>| {
        l.clone().filter(|v| !v.is_empty()).map(|v| {
            v.into_iter()
                .map(|mut a| {
                    if let Some(r) = a.target_ref.as_mut() {
                        r.resource_version = None;
                    }
                    a
                })
                .collect()
        })
    };
    subsets
        .unwrap_or_default()
        .iter()
        .map(|s| EndpointSubset {
            addresses: addrs(&s.addresses),
            not_ready_addresses: addrs(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn pod(i: usize, ready: bool, port: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}")},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": format!("10.1.{}.{}", i / 200, i % 200 + 1),
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .expect("pod"),
        )
    }

    fn web() -> Service {
        svc(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.1", "ipFamilies": ["IPv4"],
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}, {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"}]}}))
    }

    fn ips(l: &Option<Vec<EndpointAddress>>) -> Vec<String> {
        l.iter().flatten().map(|a| a.ip.clone()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_of_the_same_ports_share_one_subset() {
        let subsets = desired(&web(), &[pod(2, true, 8080), pod(1, true, 8080), pod(3, false, 8080)]);
        assert_eq!(subsets.len(), 1, "{subsets:?}");
        let s = &subsets[0];
        assert_eq!(ips(&s.addresses), vec!["10.1.0.2", "10.1.0.3"]);
        assert_eq!(ips(&s.not_ready_addresses), vec!["10.1.0.4"]);
        let ports: Vec<(Option<String>, i32)> = s.ports.iter().flatten().map(|p| (p.name.clone(), p.port)).collect();
        assert_eq!(ports, vec![(Some("http".into()), 8080), (Some("metrics".into()), 9100)]);
        let a = &s.addresses.as_ref().expect("addresses")[0];
        assert_eq!((a.node_name.as_deref(), a.target_ref.as_ref().and_then(|r| r.name.as_deref())), (Some("n1"), Some("p1")));
    }

    #[test]
    fn pods_with_other_ports_get_their_own_subset_and_unpublished_pods_none() {
        let mut gone = (*pod(4, true, 8080)).clone();
        gone.metadata.deletion_timestamp = serde_json::from_value(json!("2025-01-01T00:00:00Z")).ok();
        let subsets = desired(&web(), &[pod(1, true, 8080), pod(2, true, 9090), Arc::new(gone)]);
        assert_eq!(subsets.len(), 3, "{subsets:?}");
        // 9100 is offered by both pods; 8080 and 9090 by one each
        let shape: Vec<(Vec<String>, Vec<i32>)> = subsets.iter().map(|s| (ips(&s.addresses), s.ports.iter().flatten().map(|p| p.port).collect())).collect();
        assert!(shape.contains(&(vec!["10.1.0.2".into(), "10.1.0.3".into()], vec![9100])), "{shape:?}");
        assert!(shape.contains(&(vec!["10.1.0.2".into()], vec![8080])), "{shape:?}");
        assert!(shape.contains(&(vec!["10.1.0.3".into()], vec![9090])), "{shape:?}");
    }

    #[test]
    fn headless_services_without_ports_list_addresses_without_ports() {
        let s = svc(json!({"metadata": {"name": "db", "namespace": "ns"}, "spec": {"clusterIP": "None", "ipFamilies": ["IPv4"]}}));
        let subsets = desired(&s, &[pod(1, true, 1), pod(2, false, 1)]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert_eq!((ips(&subsets[0].addresses), ips(&subsets[0].not_ready_addresses)), (vec!["10.1.0.2".into()], vec!["10.1.0.3".into()]));
        let publish = svc(json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "10.96.0.2", "publishNotReadyAddresses": true}}));
        assert!(desired(&publish, &[pod(1, false, 1)]).is_empty(), "ports: none, not headless");
    }

    #[test]
    fn truncation_keeps_1000_ready_first_in_proportion() {
        let pods: Vec<Arc<Pod>> = (0..1100).map(|i| pod(i, i % 10 != 0, 8080)).collect();
        let mut subsets = desired(&web(), &pods);
        assert!(!capacity_annotation_ok(None, &subsets));
        assert!(truncate(&mut subsets));
        let ready: usize = subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum();
        let not_ready: usize = subsets.iter().map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum();
        assert_eq!((ready, not_ready), (990, 10));
        let many: Vec<Arc<Pod>> = (0..1200).map(|i| pod(i, true, 8080)).collect();
        let mut subsets = desired(&web(), &many);
        assert!(truncate(&mut subsets));
        assert_eq!(subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum::<usize>(), 1000);
        assert!(capacity_annotation_ok(None, &subsets));
    }
}
