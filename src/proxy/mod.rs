//! The service proxy of every node agent (what kube-proxy's nftables mode does): Services,
//! EndpointSlices, ServiceCIDRs and Nodes watched through the API, programmed as nftables rules
//! (`ip <table>`, and `ip6 <table>` in clusters with an IPv6 service range) with `nft -f`, one
//! atomic transaction per sync. It owns its table and nothing else of the host's netfilter; it
//! never reads the store and never writes to the API.
//!
//! - [`cluster`]: the table-wide settings (pod CIDRs, service ranges, node port addresses).
//! - [`model`]: a Service and its endpoints reduced to what the rules need.
//! - [`rules`]: the rule layout (skeleton and per-Service fragments); pure.
//! - [`ruleset`]: the table's contents as data, split by owner.
//! - [`table`]: what was written, and the incremental and full transactions; pure.
//! - [`nft`]: running `nft`.
//! - [`sync`]: the watches, the debounced incremental syncs and the periodic full resync.
//! - [`health`]: the proxy's `/healthz` and the Services' health check node ports.
//! - [`conntrack`]: deleting stale UDP conntrack entries after endpoints change.

pub mod cluster;
pub mod conntrack;
pub mod health;
pub mod model;
pub mod nft;
pub mod rules;
pub mod ruleset;
pub mod sync;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The table name by default.
pub const DEFAULT_TABLE: &str = "berth-proxy";
/// Where the proxy's health server listens by default (kube-proxy's).
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: &str = "0.0.0.0:10256";

/// Where node ports are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// The node's own addresses (its Node's InternalIP and ExternalIP), kube-proxy's nftables
    /// default ("primary").
    Primary,
    /// Local addresses inside these CIDRs.
    Cidrs(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
#[error("--nodeport-addresses: {0}")]
pub struct NodePortAddressesError(String);

impl NodePortAddresses {
    /// `primary` (or nothing), or a list of CIDRs, as kube-proxy's `--nodeport-addresses`.
    pub fn parse(items: &[String]) -> Result<NodePortAddresses, NodePortAddressesError> {
        let items: Vec<&str> = items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if items.is_empty() || items == ["primary"] {
            return Ok(NodePortAddresses::Primary);
        }
        let mut cidrs = vec![];
        for i in items {
            let c = berth_apiserver::services::cidr::Cidr::parse_network(i).map_err(|e| NodePortAddressesError(e.to_string()))?;
            cidrs.push(c.to_string());
        }
        Ok(NodePortAddresses::Cidrs(cidrs))
    }
}

/// How the proxy of one node runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// The nftables table (in families ip and ip6).
    pub table: String,
    /// Cluster IPs the proxy leaves alone: the node-local DNS binds and answers them itself.
    pub skip_cluster_ips: Vec<IpAddr>,
    /// Where pods live beyond the Nodes' pod CIDRs (the server's --cluster-cidr, when known).
    pub cluster_cidrs: Vec<String>,
    pub nodeport_addresses: NodePortAddresses,
    /// The least time between the starts of two syncs.
    pub min_sync_period: Duration,
    /// How often the whole table is written again (repairing drift).
    pub sync_period: Duration,
    /// The proxy's `/healthz` and `/livez` (None: not served).
    pub healthz_bind_address: Option<SocketAddr>,
}

impl ProxyConfig {
    pub fn new(node_name: &str) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.to_string(),
            table: DEFAULT_TABLE.to_string(),
            skip_cluster_ips: vec![],
            cluster_cidrs: vec![],
            nodeport_addresses: NodePortAddresses::Primary,
            min_sync_period: Duration::from_millis(20),
            sync_period: Duration::from_secs(3600),
            healthz_bind_address: None,
        }
    }
}

pub use sync::run;
