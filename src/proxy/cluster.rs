//! The table-wide settings from the cluster's objects: where pods live (every Node's pod CIDRs
//! and the server's --cluster-cidr), the service ranges (ServiceCIDR objects) and the addresses
//! node ports are served on (this node's Node addresses, or the --nodeport-addresses CIDRs).
//! Pure: the objects come in, [`Base`]s go out.

use std::net::IpAddr;

use berth_apiserver::services::cidr::Cidr;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::ServiceCIDR;

use super::rules::Base;
use super::ruleset::Family;
use super::NodePortAddresses;

/// CIDRs of family `f` among `items` (bad ones skipped), none nested in another (an nftables
/// interval set takes no overlapping elements), sorted.
pub fn disjoint<'a>(f: Family, items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut cidrs: Vec<Cidr> = items.into_iter().filter_map(|s| Cidr::parse_network(s).ok()).filter(|c| f.has(&c.network())).collect();
    // widest first, so a nested one always meets its cover before
    cidrs.sort_by_key(|c| (c.prefix(), c.to_string()));
    let mut kept: Vec<Cidr> = vec![];
    for c in cidrs {
        if !kept.iter().any(|k| k.covers(&c)) {
            kept.push(c);
        }
    }
    let mut out: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
    out.sort();
    out
}

fn node_pod_cidrs(n: &Node) -> impl Iterator<Item = &str> {
    let spec = n.spec.as_ref();
    spec.and_then(|s| s.pod_cidrs.as_ref()).into_iter().flatten().chain(spec.and_then(|s| s.pod_cidr.as_ref())).map(String::as_str)
}

/// This node's InternalIP and ExternalIP addresses (not loopback ones).
pub fn node_addresses(n: &Node) -> Vec<IpAddr> {
    let addrs = n.status.as_ref().and_then(|s| s.addresses.as_ref());
    let mut out: Vec<IpAddr> = addrs
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The skeleton's settings for family `f`.
pub fn base<'a>(
    f: Family,
    nodes: impl IntoIterator<Item = &'a Node>,
    own: Option<&Node>,
    service_cidrs: impl IntoIterator<Item = &'a ServiceCIDR>,
    cluster_cidrs: &[String],
    nodeports: &NodePortAddresses,
) -> Base {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let pod = nodes.iter().flat_map(|n| node_pod_cidrs(n)).chain(cluster_cidrs.iter().map(String::as_str));
    let services: Vec<&ServiceCIDR> = service_cidrs.into_iter().collect();
    let svc = services.iter().flat_map(|s| s.spec.as_ref().and_then(|s| s.cidrs.as_ref()).into_iter().flatten()).map(String::as_str);
    let nodeport_addresses = match nodeports {
        NodePortAddresses::Primary => own.map(node_addresses).unwrap_or_default().iter().filter(|ip| f.has(ip)).map(|ip| ip.to_string()).collect(),
        NodePortAddresses::Cidrs(c) => disjoint(f, c.iter().map(String::as_str)),
    };
    Base { pod_cidrs: disjoint(f, pod), service_cidrs: disjoint(f, svc), nodeport_addresses }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_cidrs_of_all_nodes_and_the_cluster_cidr_without_nesting() {
        let n1: Node = serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24", "fd00:42:1::/64"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.5"}, {"type": "Hostname", "address": "a"}, {"type": "InternalIP", "address": "127.0.0.1"}]}}))
        .expect("node");
        let n2: Node = serde_json::from_value(json!({"metadata": {"name": "b"}, "spec": {"podCIDR": "10.99.0.0/24"}})).expect("node");
        let sc: ServiceCIDR =
            serde_json::from_value(json!({"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.43.0.0/16", "fd00:43::/112"]}})).expect("cidr");
        let b = base(Family::V4, [&n1, &n2], Some(&n1), [&sc], &["10.42.0.0/16".to_string()], &NodePortAddresses::Primary);
        assert_eq!(b.pod_cidrs, ["10.42.0.0/16", "10.99.0.0/24"]);
        assert_eq!(b.service_cidrs, ["10.43.0.0/16"]);
        assert_eq!(b.nodeport_addresses, ["192.0.2.5"], "no loopback, no host name");
        let b6 = base(Family::V6, [&n1, &n2], Some(&n1), [&sc], &[], &NodePortAddresses::Primary);
        assert_eq!((b6.pod_cidrs, b6.service_cidrs), (vec!["fd00:42:1::/64".to_string()], vec!["fd00:43::/112".to_string()]));
        assert!(b6.nodeport_addresses.is_empty());
        let any = NodePortAddresses::parse(&["0.0.0.0/0".to_string()]).expect("cidrs");
        assert_eq!(base(Family::V4, [&n1], None, [], &[], &any).nodeport_addresses, ["0.0.0.0/0"]);
        assert!(NodePortAddresses::parse(&["10.0.0.1/8".to_string()]).is_err());
        assert_eq!(NodePortAddresses::parse(&["primary".to_string()]).expect("primary"), NodePortAddresses::Primary);
    }
}
