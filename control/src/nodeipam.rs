//! Node IPAM, as kube-controller-manager's `--allocate-node-cidrs`: every Node without a
//! `spec.podCIDR` gets the first free block of `--node-cidr-mask-size` bits out of
//! `--cluster-cidr` (IPv4), never one another Node holds (whether allocated here or registered
//! by the node itself). The node agent hands its podCIDR to its runtime, whose default CNI
//! config then uses it. A cluster CIDR with no block left leaves the node without one and logs
//! why (upstream records a CIDRNotAvailable event).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("--cluster-cidr {0:?}: not an IPv4 CIDR (a.b.c.d/n)")]
    Cidr(String),
    #[error("--node-cidr-mask-size {mask} must be between the cluster CIDR's prefix {prefix} and 30")]
    Mask { mask: u8, prefix: u8 },
}

/// The blocks of a cluster CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocator {
    base: u32,
    prefix: u8,
    mask: u8,
}

/// `a.b.c.d/n` → (address, prefix), the address masked.
/// An IPv4 CIDR as its network (host bits cleared) and prefix length, on the one CIDR grammar
/// (Go's netip.ParsePrefix, as upstream's `--cluster-cidr`); None for IPv6 or bad input.
fn parse_v4(cidr: &str) -> Option<(u32, u8)> {
    let p = berth_apiserver::services::cidr::Prefix::parse(cidr.trim()).ok()?.masked();
    match p.addr {
        std::net::IpAddr::V4(a) => Some((u32::from(a), p.len)),
        std::net::IpAddr::V6(_) => None,
    }
}

impl Allocator {
    pub fn new(cluster_cidr: &str, mask: u8) -> Result<Allocator, IpamError> {
        let (base, prefix) = parse_v4(cluster_cidr).ok_or_else(|| IpamError::Cidr(cluster_cidr.to_string()))?;
        if mask < prefix || mask > 30 {
            return Err(IpamError::Mask { mask, prefix });
        }
        Ok(Allocator { base, prefix, mask })
    }

    /// The first block not in `used` (blocks as their first address), as a CIDR.
    pub fn next_free(&self, used: &BTreeSet<u32>) -> Option<String> {
        let count: u64 = 1 << (self.mask - self.prefix);
        let size: u64 = 1 << (32 - self.mask);
        (0..count).map(|i| (u64::from(self.base) + i * size) as u32).find(|b| !used.contains(b)).map(|b| format!("{}/{}", Ipv4Addr::from(b), self.mask))
    }

    /// The blocks `cidrs` take (the first address of each, masked to this allocator's size).
    pub fn used<'a>(&self, cidrs: impl Iterator<Item = &'a str>) -> BTreeSet<u32> {
        let m = u32::MAX << (32 - self.mask);
        cidrs.filter_map(parse_v4).map(|(a, _)| a & m).collect()
    }
}

/// Allocates pod CIDRs to Nodes until `stop`.
pub async fn run(client: kube::Client, alloc: Allocator, stop: CancellationToken) {
    let nodes: Api<Node> = Api::all(client);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(nodes.clone(), watcher::Config::default())).default_backoff().applied_objects();
    futures_util::pin_mut!(stream);
    let mut handed: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    loop {
        let node = tokio::select! {
            _ = stop.cancelled() => return,
            n = stream.next() => match n {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching nodes");
                    continue;
                }
                None => return,
            },
        };
        if node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_some_and(|c| !c.is_empty()) {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let all = reader.state();
        // blocks handed out here stay taken until the watch shows them on their node (nodes
        // registering together would otherwise get the same one)
        handed.retain(|n, _| all.iter().any(|x| x.metadata.name.as_deref() == Some(n.as_str()) && x.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_none()));
        let used = alloc.used(
            all.iter()
                .filter_map(|n| n.spec.as_ref())
                .flat_map(|s| s.pod_cidrs.iter().flatten().chain(s.pod_cidr.iter()))
                .map(String::as_str)
                .chain(handed.values().map(String::as_str)),
        );
        let Some(cidr) = alloc.next_free(&used) else {
            tracing::warn!(node = name, "CIDRNotAvailable: no pod CIDR is left in the cluster CIDR for this node");
            continue;
        };
        let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match nodes.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {
                tracing::info!(node = name, pod_cidr = cidr, "allocated the node's pod CIDR");
                handed.insert(name, cidr);
            }
            Err(e) => tracing::warn!(node = name, error = %e, "setting the node's pod CIDR"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_in_order_skipping_taken_ones() {
        let a = Allocator::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(a.next_free(&BTreeSet::new()).as_deref(), Some("10.42.0.0/24"));
        let used = a.used(["10.42.0.0/24", "10.42.1.0/24", "10.99.0.0/24"].into_iter());
        assert_eq!(a.next_free(&used).as_deref(), Some("10.42.2.0/24"));
        let tiny = Allocator::new("10.1.2.0/23", 24).unwrap();
        let used = tiny.used(["10.1.2.0/24", "10.1.3.0/24"].into_iter());
        assert_eq!(tiny.next_free(&used), None);
        assert_eq!(Allocator::new("fd00::/64", 24), Err(IpamError::Cidr("fd00::/64".into())));
        assert_eq!(Allocator::new("10.0.0.0/16", 8), Err(IpamError::Mask { mask: 8, prefix: 16 }));
    }
}
