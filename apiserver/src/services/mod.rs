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
