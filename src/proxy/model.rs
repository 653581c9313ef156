//! What the proxy programs for one Service, as plain data: the Service and its EndpointSlices
//! reduced to what the rules need (IPs, ports, traffic policies, affinity, the endpoints of each
//! port with their conditions and whether they are on this node). Pure: it knows nothing of
//! nftables, and every name and address it keeps has been checked, so the rule text made from
//! it cannot carry anything but identifiers and addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_apiserver::services::cidr::Prefix;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Session affinity's default timeout (`sessionAffinityConfig.clientIP.timeoutSeconds`): 3 h.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// The API's spelling ("TCP"; absent means TCP).
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// nftables' name (inet_proto).
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One endpoint of one Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// The target port (from the EndpointSlice port of the same name and protocol).
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (`nodeName` is this node's name).
    pub local: bool,
}

/// One port of a Service and its endpoints (all of them: [`ServicePort::cluster_endpoints`] and
/// [`ServicePort::local_endpoints`] pick the ones traffic goes to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name ("" for the lone unnamed port of a Service).
    pub name: String,
    pub protocol: Proto,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Sorted by address and port; one per address and port.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// The endpoints traffic policy Cluster sends to: the ready ones, or when there are none,
    /// the serving ones that are terminating (as upstream's proxies fall back).
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// The same choice among this node's endpoints (traffic policy Local).
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter().filter(|e| e.local))
    }
}

fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

/// A Service as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceModel {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs` (one per family).
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` of a LoadBalancer Service (not those with ipMode Proxy).
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// sessionAffinity ClientIP: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// externalTrafficPolicy Local (NodePort and LoadBalancer Services only).
    pub external_local: bool,
    /// `spec.loadBalancerSourceRanges` (networks, host bits cleared; none nested in another):
    /// the only sources the load-balancer IPs take traffic from.
    pub source_ranges: Vec<Prefix>,
    /// `spec.healthCheckNodePort` of a LoadBalancer Service with externalTrafficPolicy Local.
    pub health_check_node_port: Option<u16>,
}

/// Why a Service is not proxied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("not proxied (no cluster IP, headless or ExternalName)")]
    NotProxied,
    #[error("{0:?} is not a name the proxy can use")]
    BadName(String),
}

/// A DNS label (Service and namespace names) or a port name: lowercase letters, digits, '-'.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn ips<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = items.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.dedup();
    out
}

impl ServiceModel {
    /// The model of `svc` with the endpoints of `slices` (the slices labelled with its name),
    /// on node `node_name`.
    pub fn from_api<'a>(svc: &Service, slices: impl IntoIterator<Item = &'a EndpointSlice>, node_name: &str) -> Result<ServiceModel, Skip> {
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        for n in [&namespace, &name] {
            if !plain_name(n) {
                return Err(Skip::BadName(n.clone()));
            }
        }
        let spec = svc.spec.as_ref().ok_or(Skip::NotProxied)?;
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            return Err(Skip::NotProxied);
        }
        let cluster_ips = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(list), _) if !list.is_empty() => ips(list),
            (_, Some(one)) => ips([one]),
            _ => vec![],
        };
        if cluster_ips.is_empty() {
            // headless ("None") or not allocated yet
            return Err(Skip::NotProxied);
        }
        let external = matches!(kind, "NodePort" | "LoadBalancer");
        let load_balancer_ips = if kind == "LoadBalancer" {
            let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
            ips(ingress.into_iter().flatten().filter(|i| i.ip_mode.as_deref() != Some("Proxy")).filter_map(|i| i.ip.as_ref()))
        } else {
            vec![]
        };
        let slices: Vec<&EndpointSlice> = slices.into_iter().filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6")).collect();
        let mut ports = vec![];
        for p in spec.ports.iter().flatten() {
            let port_name = p.name.clone().unwrap_or_default();
            if !port_name.is_empty() && !plain_name(&port_name) {
                return Err(Skip::BadName(port_name));
            }
            let (Some(protocol), Ok(port)) = (Proto::parse(p.protocol.as_deref()), u16::try_from(p.port)) else { continue };
            let node_port = p.node_port.filter(|_| external).and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
            ports.push(ServicePort { endpoints: endpoints_of(&slices, &port_name, protocol, node_name), name: port_name, protocol, port, node_port });
        }
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let t = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
            t.and_then(|t| u32::try_from(t).ok()).filter(|t| *t > 0).unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let health_check_node_port = (kind == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local"))
            .then_some(spec.health_check_node_port)
            .flatten()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        Ok(ServiceModel {
            namespace,
            name,
            cluster_ips,
            external_ips: ips(spec.external_ips.iter().flatten()),
            load_balancer_ips,
            ports,
            affinity_timeout,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
            source_ranges: source_ranges(spec.load_balancer_source_ranges.iter().flatten()),
            health_check_node_port,
        })
    }

    /// This node's ready endpoints (one per address and port over all ports), what the health
    /// check node port reports as `localEndpoints`.
    pub fn local_ready_endpoints(&self) -> usize {
        let eps: std::collections::BTreeSet<(IpAddr, u16)> =
            self.ports.iter().flat_map(|p| p.endpoints.iter()).filter(|e| e.local && e.ready).map(|e| (e.ip, e.port)).collect();
        eps.len()
    }
}

/// Source ranges as networks (as the API's validation, surrounding blanks are tolerated and
/// host bits cleared; bad ones skipped), without any nested in another (an nftables set of
/// intervals takes no overlaps).
fn source_ranges<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<Prefix> {
    let mut all: Vec<Prefix> = items.into_iter().filter_map(|s| Prefix::parse(s.trim()).ok()).map(|p| p.masked()).collect();
    // widest first: a nested one always meets its cover before
    all.sort_by_key(|p| (p.len, p.addr));
    let mut kept: Vec<Prefix> = vec![];
    for p in all {
        if !kept.iter().any(|k| k.contains_prefix(&p)) {
            kept.push(p);
        }
    }
    kept
}

/// The endpoints of the Service port named `port_name` with `protocol`: the first address of
/// each endpoint of every slice that has a port of that name and protocol. An address listed
/// twice (in two slices) is kept once, with the best conditions.
fn endpoints_of(slices: &[&EndpointSlice], port_name: &str, protocol: Proto, node_name: &str) -> Vec<Endpoint> {
    let mut found: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| p.name.as_deref().unwrap_or("") == port_name && Proto::parse(p.protocol.as_deref()) == Some(protocol));
        let Some(port) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else { continue };
        for e in &slice.endpoints {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let c = e.conditions.as_ref();
            // unset conditions: ready unless said otherwise; serving as ready; not terminating
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref() == Some(node_name);
            let ep = Endpoint { ip, port, ready, serving, terminating, local };
            let rank = |e: &Endpoint| (e.ready, e.serving, !e.terminating);
            match found.get(&(ip, port)) {
                Some(have) if rank(have) >= rank(&ep) => {}
                _ => {
                    found.insert((ip, port), ep);
                }
            }
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ports_take_their_endpoints_by_name_and_protocol() {
        let s = svc(json!({"metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
                "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.9"]}}));
        let a = slice(json!({"metadata": {"name": "web-a"}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [
            {"addresses": ["10.42.0.7"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["10.42.0.8"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "n2"},
        ]}));
        // the same endpoint again, not ready, in a second slice: kept once, ready
        let b = slice(json!({"metadata": {"name": "web-b"}, "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.42.0.7"], "conditions": {"ready": false}, "nodeName": "n1"}]}));
        let fqdn = slice(json!({"metadata": {"name": "web-c"}, "addressType": "FQDN", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["example.com"]}]}));
        let m = ServiceModel::from_api(&s, [&a, &b, &fqdn], "n1").expect("model");
        assert_eq!(m.cluster_ips, vec![ip("10.43.0.5")]);
        assert_eq!(m.external_ips, vec![ip("192.0.2.9")]);
        assert_eq!((m.affinity_timeout, m.internal_local, m.external_local), (Some(DEFAULT_AFFINITY_TIMEOUT), false, true));
        let http = &m.ports[0];
        assert_eq!((http.protocol, http.port, http.node_port), (Proto::Tcp, 80, Some(30080)));
        assert_eq!(http.endpoints.len(), 2);
        assert_eq!(http.endpoints[0], Endpoint { ip: ip("10.42.0.7"), port: 8080, ready: true, serving: true, terminating: false, local: true });
        assert_eq!(http.cluster_endpoints().len(), 1, "the ready one only");
        let dns = &m.ports[1];
        assert_eq!((dns.protocol, dns.node_port), (Proto::Udp, None), "no node port given");
        assert!(dns.endpoints.iter().all(|e| e.port == 5353));
    }

    #[test]
    fn without_ready_endpoints_serving_terminating_ones_take_traffic() {
        let e = |ip_: &str, ready, serving, terminating, local| Endpoint { ip: ip(ip_), port: 80, ready, serving, terminating, local };
        let p = ServicePort {
            name: String::new(),
            protocol: Proto::Tcp,
            port: 80,
            node_port: None,
            endpoints: vec![e("10.0.0.1", false, true, true, true), e("10.0.0.2", false, false, true, false), e("10.0.0.3", true, true, false, false)],
        };
        assert_eq!(p.cluster_endpoints().iter().map(|e| e.ip).collect::<Vec<_>>(), vec![ip("10.0.0.3")]);
        assert_eq!(p.local_endpoints().iter().map(|e| e.ip).collect::<Vec<_>>(), vec![ip("10.0.0.1")], "local: terminating but serving");
        let none_ready = ServicePort { endpoints: p.endpoints[..2].to_vec(), ..p.clone() };
        assert_eq!(none_ready.cluster_endpoints().iter().map(|e| e.ip).collect::<Vec<_>>(), vec![ip("10.0.0.1")]);
    }

    #[test]
    fn headless_external_name_and_odd_names_are_skipped() {
        let headless = svc(json!({"metadata": {"namespace": "a", "name": "h"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}}));
        assert_eq!(ServiceModel::from_api(&headless, [], "n"), Err(Skip::NotProxied));
        let ext = svc(json!({"metadata": {"namespace": "a", "name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert_eq!(ServiceModel::from_api(&ext, [], "n"), Err(Skip::NotProxied));
        let odd = svc(json!({"metadata": {"namespace": "a", "name": "x;y"}, "spec": {"clusterIP": "10.0.0.1"}}));
        assert!(matches!(ServiceModel::from_api(&odd, [], "n"), Err(Skip::BadName(_))));
    }

    #[test]
    fn source_ranges_and_the_health_check_node_port_of_a_local_load_balancer() {
        let lb = svc(json!({"metadata": {"namespace": "a", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 31000}, {"name": "b", "port": 81, "nodePort": 31001}],
                "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                "loadBalancerSourceRanges": [" 10.0.0.0/8", "10.1.2.3/16", "192.0.2.1/32", "fd00::/64", "junk"]}}));
        let a = slice(json!({"metadata": {"name": "lb-a"}, "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}, {"name": "b", "port": 8081}],
        "endpoints": [
            {"addresses": ["10.42.0.7"], "conditions": {"ready": true}, "nodeName": "n"},
            {"addresses": ["10.42.0.8"], "conditions": {"ready": false}, "nodeName": "n"},
            {"addresses": ["10.42.0.9"], "conditions": {"ready": true}, "nodeName": "other"},
        ]}));
        let m = ServiceModel::from_api(&lb, [&a], "n").expect("model");
        assert_eq!(m.source_ranges.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["10.0.0.0/8", "192.0.2.1/32", "fd00::/64"], "nested and bad ones gone");
        assert_eq!(m.health_check_node_port, Some(32000));
        assert_eq!(m.local_ready_endpoints(), 2, "10.42.0.7:8080 and :8081");
        // externalTrafficPolicy Cluster: no health check
        let mut cluster = lb.clone();
        if let Some(s) = cluster.spec.as_mut() {
            s.external_traffic_policy = Some("Cluster".into());
        }
        assert_eq!(ServiceModel::from_api(&cluster, [&a], "n").expect("model").health_check_node_port, None);
    }

    #[test]
    fn load_balancer_ips_come_from_the_status_but_not_in_proxy_mode() {
        let lb = svc(json!({"metadata": {"namespace": "a", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 31000}], "internalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}}}));
        let m = ServiceModel::from_api(&lb, [], "n").expect("model");
        assert_eq!(m.load_balancer_ips, vec![ip("192.0.2.10")]);
        assert!(m.internal_local && !m.external_local);
        assert_eq!(m.ports[0].node_port, Some(31000));
    }
}
