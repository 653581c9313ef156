//! NodePorts: a pod's host ports must be free on the node (same protocol and port, and the same
//! host IP or either side on 0.0.0.0).

use k8s_openapi::api::core::v1::Pod;

use crate::scheduler::cache::{pod_host_ports, HostPort, NodeInfo};
use crate::scheduler::framework::{FilterPlugin, Rejection};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
        if clashes(&pod_host_ports(pod), &node.used_ports) {
            return Err(Rejection::resolvable(REASON));
        }
        Ok(())
    }
}

/// Whether any of `wanted` is held in `used` (same protocol and port, and the same host IP or
/// either side on the wildcard address).
pub fn clashes(wanted: &[HostPort], used: &[HostPort]) -> bool {
    let wild = |ip: &str| ip == "0.0.0.0" || ip == "::";
    wanted.iter().any(|(proto, ip, port)| used.iter().any(|(p, i, n)| p == proto && n == port && (i == ip || wild(i) || wild(ip))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    fn with_port(port: i32, ip: Option<&str>, proto: &str) -> k8s_openapi::api::core::v1::Pod {
        pod(serde_json::json!({"metadata": {"name": format!("p{port}{proto}"), "namespace": "d"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}}))
    }

    #[test]
    fn host_ports_clash_by_protocol_port_and_address() {
        let mut n = node(serde_json::json!({"metadata": {"name": "n"}}));
        n.add_pod(Arc::new(with_port(8080, Some("10.0.0.1"), "TCP")));
        assert_eq!(NodePorts.filter(&with_port(8080, None, "TCP"), &n), Err(Rejection::resolvable(REASON)));
        assert_eq!(NodePorts.filter(&with_port(8080, Some("10.0.0.1"), "TCP"), &n), Err(Rejection::resolvable(REASON)));
        assert_eq!(NodePorts.filter(&with_port(8080, Some("10.0.0.2"), "TCP"), &n), Ok(()));
        assert_eq!(NodePorts.filter(&with_port(8080, None, "UDP"), &n), Ok(()));
        assert_eq!(NodePorts.filter(&with_port(9090, None, "TCP"), &n), Ok(()));
    }
}
