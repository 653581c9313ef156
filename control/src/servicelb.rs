//! servicelb: Services of type LoadBalancer on machines without a cloud, as k3s's ServiceLB
//! does it but without its svclb pods. A LoadBalancer Service without a loadBalancerClass gets
//! the addresses of the Ready, schedulable nodes (each node's ExternalIP, else its InternalIP, of
//! the Service's IP families; nodes labelled node.kubernetes.io/exclude-from-external-load-balancers
//! left out) as `status.loadBalancer.ingress` (ipMode VIP); the node agents' service proxies
//! serve the Service's ports on them. A Service that stops being a LoadBalancer has its ingress
//! cleared, as upstream's service controller clears it. Writes only `services/status`, as the
//! service-controller service account.

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::workqueue::WorkQueue;

/// Nodes with this label carry no load-balancer traffic (upstream's label).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

pub struct Controller {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    nodes: Arc<Informer<Node>>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// Whether the node takes load-balancer traffic.
fn eligible(n: &Node) -> bool {
    let ready = n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let schedulable = !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let excluded = n.metadata.labels.as_ref().is_some_and(|l| l.contains_key(EXCLUDE_LABEL));
    ready && schedulable && !excluded
}

/// The node's load-balancer addresses: its ExternalIPs, else its InternalIPs.
fn node_ips(n: &Node) -> Vec<IpAddr> {
    let addrs = n.status.as_ref().and_then(|s| s.addresses.as_ref()).cloned().unwrap_or_default();
    let of = |kind: &str| addrs.iter().filter(|a| a.type_ == kind).filter_map(|a| a.address.parse::<IpAddr>().ok()).collect::<Vec<_>>();
    let external = of("ExternalIP");
    if external.is_empty() {
        of("InternalIP")
    } else {
        external
    }
}

/// The ingress a Service should have: Some(list) for ours (an empty list clears it), None for
/// one another load balancer handles.
pub fn desired<'a>(svc: &Service, nodes: impl IntoIterator<Item = &'a Node>) -> Option<Vec<LoadBalancerIngress>> {
    let spec = svc.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Some(vec![]);
    }
    let families: Vec<String> = spec.ip_families.clone().unwrap_or_else(|| vec!["IPv4".into()]);
    let wanted = |ip: &IpAddr| families.iter().any(|f| (f == "IPv4" && ip.is_ipv4()) || (f == "IPv6" && ip.is_ipv6()));
    let mut ips: Vec<IpAddr> = nodes.into_iter().filter(|n| eligible(n)).flat_map(node_ips).filter(wanted).collect();
    ips.sort();
    ips.dedup();
    Some(ips.into_iter().map(|ip| LoadBalancerIngress { ip: Some(ip.to_string()), ip_mode: Some("VIP".into()), ..Default::default() }).collect())
}

impl Controller {
    /// The controller, its handlers registered; `client` writes as service-controller.
    pub fn new(client: kube::Client, services: Arc<Informer<Service>>, nodes: Arc<Informer<Node>>) -> Arc<Self> {
        let c = Arc::new(Controller { client, services, nodes, queue: WorkQueue::new() });
        let q = c.queue.clone();
        c.services.on_change(move |change| {
            if !matches!(change, Change::Deleted(_)) {
                q.add(key_of(change.object().as_ref()));
            }
        });
        let weak: Weak<Controller> = Arc::downgrade(&c);
        c.nodes.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let relevant = match change {
                Change::Updated { old, new } => eligible(old) != eligible(new) || node_ips(old) != node_ips(new),
                _ => true,
            };
            if relevant {
                c.queue_load_balancers();
            }
        });
        c
    }

    fn queue_load_balancers(&self) {
        for s in self.services.list() {
            if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
                self.queue.add(key_of(s.as_ref()));
            }
        }
    }

    /// Runs the worker until `stop` (the informers run elsewhere).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.services.synced().await;
        self.nodes.synced().await;
        for s in self.services.list() {
            self.queue.add(key_of(s.as_ref()));
        }
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(1, stop, move |k| {
                let this = this.clone();
                let span = tracing::debug_span!("servicelb-sync", service = %format!("{}/{}", k.0, k.1));
                async move { this.sync(&k).await }.instrument(span)
            })
            .await;
    }

    async fn sync(&self, key: &ObjectKey) -> Result<(), String> {
        let (ns, name) = key;
        let Some(svc) = self.services.get(ns, name) else { return Ok(()) };
        let nodes = self.nodes.list();
        let Some(want) = desired(&svc, nodes.iter().map(|n| n.as_ref())) else { return Ok(()) };
        let have = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default();
        if have == want {
            return Ok(());
        }
        let ingress = if want.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&want).map_err(|e| e.to_string())? };
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: kube::Api<Service> = kube::Api::namespaced(self.client.clone(), ns);
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(service = %format!("{ns}/{name}"), ingress = ?want.iter().filter_map(|i| i.ip.clone()).collect::<Vec<_>>(), "load-balancer addresses");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("updating the load-balancer status of {ns}/{name}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, addrs: &[(&str, &str)], extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addrs.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>()}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            if let Some(m) = n[k.as_str()].as_object_mut() {
                m.extend(v.as_object().cloned().unwrap_or_default());
            }
        }
        serde_json::from_value(n).expect("node")
    }

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "lb"}, "spec": spec})).expect("service")
    }

    fn ips(v: &Option<Vec<LoadBalancerIngress>>) -> Option<Vec<String>> {
        v.as_ref().map(|l| l.iter().filter_map(|i| i.ip.clone()).collect())
    }

    #[test]
    fn ready_schedulable_nodes_give_their_external_else_internal_addresses() {
        let nodes = [
            node("a", true, &[("InternalIP", "10.0.0.2"), ("ExternalIP", "192.0.2.2"), ("Hostname", "a")], json!({})),
            node("b", true, &[("InternalIP", "10.0.0.3"), ("InternalIP", "fd00::3")], json!({})),
            node("c", false, &[("InternalIP", "10.0.0.4")], json!({})),
            node("d", true, &[("InternalIP", "10.0.0.5")], json!({"spec": {"unschedulable": true}})),
            node("e", true, &[("InternalIP", "10.0.0.6")], json!({"metadata": {"labels": {EXCLUDE_LABEL: ""}}})),
        ];
        let lb = svc(json!({"type": "LoadBalancer", "ipFamilies": ["IPv4"]}));
        let want = desired(&lb, &nodes);
        assert_eq!(ips(&want), Some(vec!["10.0.0.3".to_string(), "192.0.2.2".to_string()]));
        assert!(want.unwrap_or_default().iter().all(|i| i.ip_mode.as_deref() == Some("VIP")));
        let dual = svc(json!({"type": "LoadBalancer", "ipFamilies": ["IPv6", "IPv4"]}));
        assert_eq!(ips(&desired(&dual, &nodes)).map(|v| v.len()), Some(3));
        // not a LoadBalancer (any more): cleared; another class: not ours
        assert_eq!(ips(&desired(&svc(json!({"type": "ClusterIP"})), &nodes)), Some(vec![]));
        assert_eq!(ips(&desired(&svc(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"})), &nodes)), None);
    }
}
