//! Service addresses: cluster IPs from the service CIDRs (`--service-cidr`, the default
//! ServiceCIDR `kubernetes`, one IPAddress object per allocated IP, as Kubernetes 1.33's
//! MultiCIDRServiceAllocator), node ports from `--service-node-port-range` (a bitmap record in
//! the store), the repair loops that put both right after crashes, and the `kubernetes` Service
//! with the endpoints of the running apiservers. The generic REST verbs call the allocators
//! ([`alloc::Allocators`]) when Services are written; everything else here runs in the
//! background of [`spawn`]. This module does not route traffic to Services (the proxy does).

pub mod alloc;
pub mod book;
pub mod cidr;
mod default_cidr;
mod events;
pub mod ip_allocator;
pub mod kubernetes;
pub mod ports;
mod repair_ips;
mod repair_ports;

use std::sync::Arc;

use cidr::Cidr;
use ports::PortRange;

/// The service network of a cluster: what the flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// `--service-cidr`: one CIDR, or two of different families (the first is primary).
    pub cidrs: Vec<Cidr>,
    /// `--service-node-port-range`.
    pub node_ports: PortRange,
}

/// k3s's service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// upstream's node port range.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("--service-cidr: {0}")]
    Cidr(#[from] cidr::CidrError),
    #[error("--service-node-port-range: {0}")]
    Ports(#[from] ports::RangeSyntax),
}

impl ServiceNetwork {
    pub fn parse(service_cidr: &str, node_port_range: &str) -> Result<Self, NetworkError> {
        Ok(ServiceNetwork { cidrs: cidr::parse_list(service_cidr)?, node_ports: PortRange::parse(node_port_range)? })
    }

    /// The `kubernetes` Service's cluster IP: the first address of the primary range.
    pub fn kubernetes_ip(&self) -> Option<std::net::IpAddr> {
        self.cidrs.first().and_then(|c| c.first_address())
    }

    /// The default cluster DNS address (the `kube-dns` Service's): the 10th address of the
    /// primary range, as k3s picks it (10.43.0.10 for 10.43.0.0/16); None for a range too small.
    pub fn cluster_dns_ip(&self) -> Option<std::net::IpAddr> {
        self.cidrs.first().filter(|c| c.assignable_count() >= 10).map(|c| c.nth(9))
    }
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        // both constants parse
        ServiceNetwork::parse(DEFAULT_SERVICE_CIDR, DEFAULT_NODE_PORT_RANGE)
            .unwrap_or_else(|_| ServiceNetwork { cidrs: vec![], node_ports: PortRange { base: 30000, size: 2768 } })
    }
}

/// The allocators over `store`.
pub fn allocators(network: ServiceNetwork, store: Arc<dyn berth_store::Store>) -> alloc::Allocators {
    let key = format!("{}ranges/servicenodeports", store.prefix());
    let ports = ports::PortAllocator::new(network.node_ports, Box::new(book::StoreRange { store, key }));
    alloc::Allocators { network, ports }
}

/// Starts the background work: the default ServiceCIDR, the repair loops, the `kubernetes`
/// Service and its endpoints. Runs until the process ends; `shutdown` removes this server's
/// endpoint lease.
pub async fn start(api: &Arc<crate::Api>) {
    default_cidr::ensure(api).await;
    repair_ips::spawn(api);
    repair_ports::spawn(api);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_dns_address_is_the_tenth_of_the_primary_range() {
        let ip = |cidr: &str| ServiceNetwork::parse(cidr, DEFAULT_NODE_PORT_RANGE).unwrap().cluster_dns_ip().map(|i| i.to_string());
        assert_eq!(ip(DEFAULT_SERVICE_CIDR).as_deref(), Some("10.43.0.10"));
        assert_eq!(ip("10.96.0.0/12,fd00:43::/112").as_deref(), Some("10.96.0.10"));
        assert_eq!(ip("fd00:43::/112").as_deref(), Some("fd00:43::a"));
        assert_eq!(ip("10.0.0.0/29"), None);
    }
}
