//! The rule layout (kube-proxy's nftables mode, in Berth's words): from the table's settings and
//! each Service's model to [`Fragment`]s. Pure functions; the layout is sketched in README.md.
//!
//! The skeleton ([`skeleton`]) hooks the table into netfilter and holds the verdict maps every
//! Service adds its elements to:
//! - `nat-prerouting`/`nat-output` → `services`: `daddr . proto . dport` looked up in
//!   `service-ips` (cluster, external and load-balancer IPs), `proto . dport` in
//!   `service-nodeports` for a destination in `nodeport-ips` that is local.
//! - `nat-postrouting` → `masquerading`: masquerades what a rule marked (`mark-for-masquerade`)
//!   and hairpin traffic (a pod sent to itself through a Service: source and translated
//!   destination one address, looked up in `hairpin-endpoints`).
//! - the filter hooks: `no-endpoint-services`/`no-endpoint-nodeports` reject (or drop) new
//!   connections to Services without endpoints; `cluster-ips-check` rejects other ports of
//!   cluster IPs and drops addresses of the service CIDRs no Service has.
//!
//! Each Service port (`<ns>/<name>/<proto>/<port name or number>`) gets `svc-*` (DNAT to a
//! random one of the cluster endpoints: `numgen random mod N` over an anonymous map of
//! `address . port`), `local-*` (the same among this node's, for a traffic policy Local), `ext-*`
//! (traffic to node ports, external and load-balancer IPs: masquerading and the
//! externalTrafficPolicy). With session affinity the choice goes through a chain per endpoint
//! `ep-*__<ip>/<port>` that records the client in a set `aff-*` (timeout: the affinity's) and
//! DNATs; known clients go straight to their endpoint's chain.
//!
//! Unlike kube-proxy's nftables mode, endpoints get no chain of their own without affinity:
//! `nft` reads every chain of the table before each transaction, so 10 chains per Service would
//! make each sync of a 1,000-Service table pay for 11,000 chains (README: the benchmark).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::model::{Endpoint, ServiceModel, ServicePort};
use super::ruleset::{ip_in_name, Chain, Family, Fragment};

/// The mark bit of packets to masquerade (kube-proxy's).
pub const MASQUERADE_MARK: &str = "0x4000";

/// The table-wide settings the skeleton is made from (elements of its sets, of one family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base {
    /// Where pods live (masquerading decisions): CIDRs, none nested in another.
    pub pod_cidrs: Vec<String>,
    /// The ranges cluster IPs come from (unallocated addresses are dropped).
    pub service_cidrs: Vec<String>,
    /// The addresses (or CIDRs) node ports are served on.
    pub nodeport_addresses: Vec<String>,
}

/// What every Service fragment depends on beyond its own Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Whether pod CIDRs are known: then traffic to a cluster IP from elsewhere (the node,
    /// other hosts) is masqueraded, as kube-proxy does with --cluster-cidr.
    pub masquerade_off_cluster: bool,
    /// Cluster IPs not to program (the node-local DNS answers on them itself).
    pub skip_cluster_ips: Vec<IpAddr>,
    /// This node's addresses: a load-balancer source range that holds one also lets in the
    /// node's own traffic to the load-balancer IP (its source is then that IP).
    pub node_ips: Vec<IpAddr>,
}

/// The skeleton of the table of family `f`.
pub fn skeleton(f: Family, base: &Base) -> Fragment {
    let a = f.nft();
    let addr = f.addr_type();
    let mut t = Fragment::default();
    t.map("service-ips", format!("type {addr} . inet_proto . inet_service : verdict ;"));
    t.map("service-nodeports", "type inet_proto . inet_service : verdict ;".to_string());
    t.map("no-endpoint-services", format!("type {addr} . inet_proto . inet_service : verdict ;"));
    t.map("no-endpoint-nodeports", "type inet_proto . inet_service : verdict ;".to_string());
    t.map("firewall-ips", format!("type {addr} . inet_proto . inet_service : verdict ;"));
    t.set("cluster-ips", format!("type {addr} ;"), true);
    t.set("hairpin-endpoints", format!("type {addr} . {addr} ;"), true);
    for name in ["pod-cidrs", "service-cidrs", "nodeport-ips"] {
        t.set(name, format!("type {addr} ; flags interval ;"), true);
    }
    for c in &base.pod_cidrs {
        t.member("pod-cidrs", c.clone());
    }
    for c in &base.service_cidrs {
        t.member("service-cidrs", c.clone());
    }
    for c in &base.nodeport_addresses {
        t.member("nodeport-ips", c.clone());
    }
    let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let hook = |kind: &str, hook: &str, priority: &str| format!("type {kind} hook {hook} priority {priority} ; policy accept ;");
    t.chain("nat-prerouting".into(), Chain::hooked(&hook("nat", "prerouting", "dstnat"), rules(&["jump services"])));
    t.chain("nat-output".into(), Chain::hooked(&hook("nat", "output", "-100"), rules(&["jump services"])));
    t.chain("nat-postrouting".into(), Chain::hooked(&hook("nat", "postrouting", "srcnat"), rules(&["jump masquerading"])));
    // before DNAT: the load-balancer source ranges judge the destination as the client sent it
    t.chain("filter-prerouting".into(), Chain::hooked(&hook("filter", "prerouting", "-110"), rules(&["ct state new jump firewall-check"])));
    t.chain(
        "filter-input".into(),
        Chain::hooked(&hook("filter", "input", "-110"), rules(&["ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"])),
    );
    t.chain(
        "filter-forward".into(),
        Chain::hooked(&hook("filter", "forward", "-110"), rules(&["ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"])),
    );
    t.chain(
        "filter-output".into(),
        Chain::hooked(&hook("filter", "output", "-110"), rules(&["ct state new jump service-endpoints-check", "ct state new jump firewall-check"])),
    );
    t.chain("filter-output-post-dnat".into(), Chain::hooked(&hook("filter", "output", "-90"), rules(&["ct state new jump cluster-ips-check"])));
    t.chain(
        "services".into(),
        Chain::new(vec![
            format!("{a} daddr . meta l4proto . th dport vmap @service-ips"),
            format!("{a} daddr @nodeport-ips fib daddr type local meta l4proto . th dport vmap @service-nodeports"),
        ]),
    );
    t.chain(
        "masquerading".into(),
        Chain::new(vec![
            format!("ct status dnat {a} saddr . {a} daddr @hairpin-endpoints jump mark-for-masquerade"),
            format!("meta mark & {MASQUERADE_MARK} == 0 return"),
            format!("meta mark set meta mark ^ {MASQUERADE_MARK}"),
            "masquerade fully-random".into(),
        ]),
    );
    t.chain("mark-for-masquerade".into(), Chain::new(vec![format!("meta mark set meta mark | {MASQUERADE_MARK}")]));
    t.chain("firewall-check".into(), Chain::new(vec![format!("{a} daddr . meta l4proto . th dport vmap @firewall-ips")]));
    t.chain("service-endpoints-check".into(), Chain::new(vec![format!("{a} daddr . meta l4proto . th dport vmap @no-endpoint-services")]));
    t.chain(
        "nodeport-endpoints-check".into(),
        Chain::new(vec![format!("{a} daddr @nodeport-ips fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports")]),
    );
    // addresses of this node (the node-local DNS on a cluster IP, say) are not ours to judge
    t.chain(
        "cluster-ips-check".into(),
        Chain::new(vec!["fib daddr type local return".into(), format!("{a} daddr @cluster-ips reject"), format!("{a} daddr @service-cidrs drop")]),
    );
    t.chain("reject-chain".into(), Chain::new(vec!["reject".into()]));
    t
}

/// The identifier of one Service port in chain names.
fn port_id(svc: &ServiceModel, port: &ServicePort) -> String {
    let p = if port.name.is_empty() { port.port.to_string() } else { port.name.clone() };
    format!("{}/{}/{}/{p}", svc.namespace, svc.name, port.protocol.nft())
}

fn endpoint_id(port_id: &str, ep: &Endpoint) -> String {
    format!("{port_id}__{}/{}", ip_in_name(&ep.ip), ep.port)
}

/// The share of Service `svc` in the table of family `f`: nothing when it has no cluster IP
/// of that family.
pub fn service(f: Family, svc: &ServiceModel, ctx: &Context) -> Fragment {
    let mut frag = Fragment::default();
    let Some(cluster_ip) = svc.cluster_ips.iter().find(|ip| f.has(ip)) else { return frag };
    let a = f.nft();
    let program_cluster_ip = !ctx.skip_cluster_ips.contains(cluster_ip);
    let mut externals: Vec<IpAddr> = svc.external_ips.iter().chain(&svc.load_balancer_ips).filter(|ip| f.has(ip)).copied().collect();
    externals.sort();
    externals.dedup();
    let firewall = firewall_sources(f, svc, ctx);
    for port in &svc.ports {
        let id = port_id(svc, port);
        let proto = port.protocol.nft();
        let key = |ip: &IpAddr| format!("{ip} . {proto} . {}", port.port);
        let cluster: Vec<&Endpoint> = port.cluster_endpoints();
        let local: Vec<&Endpoint> = port.local_endpoints();
        let has_external = port.node_port.is_some() || !externals.is_empty();
        let needs_local = svc.internal_local || (svc.external_local && has_external);
        let (svc_chain, local_chain, ext_chain) = (format!("svc-{id}"), format!("local-{id}"), format!("ext-{id}"));

        // every endpoint traffic may go to: hairpin pairs, and with affinity its chain and set
        let mut used: BTreeSet<&Endpoint> = cluster.iter().copied().collect();
        if needs_local {
            used.extend(local.iter().copied());
        }
        for ep in &used {
            frag.member("hairpin-endpoints", format!("{} . {}", ep.ip, ep.ip));
            let Some(timeout) = svc.affinity_timeout else { continue };
            let eid = endpoint_id(&id, ep);
            frag.set(&format!("aff-{eid}"), format!("type {} ; flags dynamic,timeout ;", f.addr_type()), false);
            let rules =
                vec![format!("update @aff-{eid} {{ {a} saddr timeout {timeout}s }}"), format!("meta l4proto {proto} dnat to {}", f.socket(&ep.ip, ep.port))];
            frag.chain(format!("ep-{eid}"), Chain::new(rules));
        }
        // traffic to the cluster IP from outside the pod network is masqueraded
        let masquerade_off_cluster =
            ctx.masquerade_off_cluster.then(|| format!("{a} daddr {cluster_ip} {proto} dport {} {a} saddr != @pod-cidrs jump mark-for-masquerade", port.port));
        let dispatch = |eps: &[&Endpoint]| -> Vec<String> {
            if svc.affinity_timeout.is_some() {
                let mut rules: Vec<String> = eps
                    .iter()
                    .map(|ep| {
                        let eid = endpoint_id(&id, ep);
                        format!("{a} saddr @aff-{eid} goto ep-{eid}")
                    })
                    .collect();
                rules.push(match eps {
                    [one] => format!("goto ep-{}", endpoint_id(&id, one)),
                    _ => {
                        let arms: Vec<String> = eps.iter().enumerate().map(|(i, ep)| format!("{i} : goto ep-{}", endpoint_id(&id, ep))).collect();
                        format!("numgen random mod {} vmap {{ {} }}", eps.len(), arms.join(", "))
                    }
                });
                return rules;
            }
            vec![match eps {
                [one] => format!("meta l4proto {proto} dnat to {}", f.socket(&one.ip, one.port)),
                _ => {
                    let arms: Vec<String> = eps.iter().enumerate().map(|(i, ep)| format!("{i} : {} . {}", ep.ip, ep.port)).collect();
                    format!("meta l4proto {proto} dnat {a} addr . port to numgen random mod {} map {{ {} }}", eps.len(), arms.join(", "))
                }
            }]
        };
        if !cluster.is_empty() {
            let mut rules: Vec<String> = masquerade_off_cluster.iter().cloned().collect();
            rules.extend(dispatch(&cluster));
            frag.chain(svc_chain.clone(), Chain::new(rules));
        }
        if needs_local && !local.is_empty() {
            let mut rules: Vec<String> = masquerade_off_cluster.iter().filter(|_| svc.internal_local).cloned().collect();
            rules.extend(dispatch(&local));
            frag.chain(local_chain.clone(), Chain::new(rules));
        }

        // cluster IP traffic
        if program_cluster_ip {
            frag.member("cluster-ips", cluster_ip.to_string());
            let k = key(cluster_ip);
            if svc.internal_local {
                if !local.is_empty() {
                    frag.entry("service-ips", k, format!("goto {local_chain}"));
                } else if !cluster.is_empty() {
                    // endpoints elsewhere only: dropped, as upstream
                    frag.entry("no-endpoint-services", k, "drop".into());
                } else {
                    frag.entry("no-endpoint-services", k, "goto reject-chain".into());
                }
            } else if !cluster.is_empty() {
                frag.entry("service-ips", k, format!("goto {svc_chain}"));
            } else {
                frag.entry("no-endpoint-services", k, "goto reject-chain".into());
            }
        }

        // load-balancer source ranges: other sources are dropped before DNAT (node ports and
        // external IPs are not subject to them, as upstream)
        if let Some(sources) = &firewall {
            let fw_chain = format!("fw-{id}");
            frag.chain(fw_chain.clone(), Chain::new(vec![format!("{a} saddr != {{ {} }} drop", sources.join(", "))]));
            for ip in svc.load_balancer_ips.iter().filter(|ip| f.has(ip)) {
                frag.entry("firewall-ips", key(ip), format!("goto {fw_chain}"));
            }
        }

        // node ports, external and load-balancer IPs
        if !has_external {
            continue;
        }
        if cluster.is_empty() {
            for ip in &externals {
                frag.entry("no-endpoint-services", key(ip), "goto reject-chain".into());
            }
            if let Some(np) = port.node_port {
                frag.entry("no-endpoint-nodeports", format!("{proto} . {np}"), "goto reject-chain".into());
            }
            continue;
        }
        let rules = if svc.external_local {
            vec![
                // pods and the node itself reach the service as from inside: all endpoints
                format!("{a} saddr @pod-cidrs goto {svc_chain}"),
                "fib saddr type local jump mark-for-masquerade".into(),
                format!("fib saddr type local goto {svc_chain}"),
                // others keep their source address and go to this node's endpoints only
                if local.is_empty() { "drop".into() } else { format!("goto {local_chain}") },
            ]
        } else {
            vec!["jump mark-for-masquerade".into(), format!("goto {svc_chain}")]
        };
        frag.chain(ext_chain.clone(), Chain::new(rules));
        for ip in &externals {
            frag.entry("service-ips", key(ip), format!("goto {ext_chain}"));
        }
        if let Some(np) = port.node_port {
            frag.entry("service-nodeports", format!("{proto} . {np}"), format!("goto {ext_chain}"));
        }
    }
    frag
}

/// The sources a Service's load-balancer IPs of family `f` take traffic from (None: any):
/// its source ranges of that family, and its load-balancer IPs when a range holds one of the
/// node's addresses (the node reaching the IP as a local address sends from it).
fn firewall_sources(f: Family, svc: &ServiceModel, ctx: &Context) -> Option<Vec<String>> {
    let ranges: Vec<_> = svc.source_ranges.iter().filter(|r| f.has(&r.addr)).collect();
    if ranges.is_empty() || !svc.load_balancer_ips.iter().any(|ip| f.has(ip)) {
        return None;
    }
    let mut out: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
    if ctx.node_ips.iter().any(|n| ranges.iter().any(|r| r.contains(n))) {
        // one already inside a range would overlap it in the set
        let lb = svc.load_balancer_ips.iter().filter(|ip| f.has(ip) && !ranges.iter().any(|r| r.contains(ip)));
        out.extend(lb.map(|ip| ip.to_string()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Endpoint, Proto, ServicePort};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn ep(addr: &str, ready: bool, local: bool) -> Endpoint {
        Endpoint { ip: ip(addr), port: 8080, ready, serving: ready, terminating: false, local }
    }

    fn web(endpoints: Vec<Endpoint>) -> ServiceModel {
        ServiceModel {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ips: vec![ip("10.43.0.5")],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![ServicePort { name: "http".into(), protocol: Proto::Tcp, port: 80, node_port: None, endpoints }],
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            source_ranges: vec![],
            health_check_node_port: None,
        }
    }

    fn ctx() -> Context {
        Context { masquerade_off_cluster: true, skip_cluster_ips: vec![], node_ips: vec![ip("192.0.2.50")] }
    }

    fn rules<'a>(f: &'a Fragment, chain: &str) -> &'a [String] {
        f.chains.get(chain).map(|c| c.rules.as_slice()).unwrap_or_else(|| panic!("no chain {chain}: {:?}", f.chains.keys()))
    }

    fn value<'a>(f: &'a Fragment, map: &str, key: &str) -> Option<&'a str> {
        f.elements.get(&(map.to_string(), key.to_string())).and_then(|v| v.as_deref())
    }

    #[test]
    fn a_cluster_ip_balances_randomly_over_ready_endpoints_with_hairpin_masquerade() {
        let f = service(Family::V4, &web(vec![ep("10.42.0.7", true, true), ep("10.42.0.8", true, false), ep("10.42.0.9", false, true)]), &ctx());
        assert_eq!(value(&f, "service-ips", "10.43.0.5 . tcp . 80"), Some("goto svc-default/web/tcp/http"));
        assert!(f.elements.contains_key(&("cluster-ips".to_string(), "10.43.0.5".to_string())));
        assert_eq!(
            rules(&f, "svc-default/web/tcp/http"),
            [
                "ip daddr 10.43.0.5 tcp dport 80 ip saddr != @pod-cidrs jump mark-for-masquerade",
                "meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.42.0.7 . 8080, 1 : 10.42.0.8 . 8080 }",
            ]
        );
        // hairpin: each endpoint reaching itself is masqueraded in postrouting
        let hairpin: Vec<&String> = f.elements.keys().filter(|(set, _)| set == "hairpin-endpoints").map(|(_, k)| k).collect();
        assert_eq!(hairpin, ["10.42.0.7 . 10.42.0.7", "10.42.0.8 . 10.42.0.8"], "not the unready one");
        assert_eq!(f.chains.len(), 1, "one chain: {:?}", f.chains.keys());
    }

    #[test]
    fn without_endpoints_the_cluster_ip_and_node_port_reject() {
        let mut s = web(vec![ep("10.42.0.9", false, true)]);
        s.ports[0].node_port = Some(30080);
        let f = service(Family::V4, &s, &ctx());
        assert!(f.chains.is_empty(), "{:?}", f.chains.keys());
        assert_eq!(value(&f, "no-endpoint-services", "10.43.0.5 . tcp . 80"), Some("goto reject-chain"));
        assert_eq!(value(&f, "no-endpoint-nodeports", "tcp . 30080"), Some("goto reject-chain"));
        assert_eq!(value(&f, "service-ips", "10.43.0.5 . tcp . 80"), None);
    }

    #[test]
    fn node_ports_external_and_load_balancer_ips_go_through_the_external_chain() {
        let mut s = web(vec![ep("10.42.0.7", true, true)]);
        s.ports[0].node_port = Some(30080);
        s.external_ips = vec![ip("192.0.2.7")];
        s.load_balancer_ips = vec![ip("192.0.2.8"), ip("fd00::8")];
        let f = service(Family::V4, &s, &ctx());
        let ext = "ext-default/web/tcp/http";
        assert_eq!(rules(&f, ext), ["jump mark-for-masquerade", "goto svc-default/web/tcp/http"]);
        assert_eq!(value(&f, "service-nodeports", "tcp . 30080"), Some("goto ext-default/web/tcp/http"));
        assert_eq!(value(&f, "service-ips", "192.0.2.7 . tcp . 80"), Some("goto ext-default/web/tcp/http"));
        assert_eq!(value(&f, "service-ips", "192.0.2.8 . tcp . 80"), Some("goto ext-default/web/tcp/http"));
        assert_eq!(f.elements.keys().filter(|(m, _)| m == "service-ips").count(), 3, "the IPv6 LB IP is the ip6 table's");

        // externalTrafficPolicy Local: outside clients keep their address and reach local endpoints only
        s.external_local = true;
        s.ports[0].endpoints.push(ep("10.42.1.7", true, false));
        let f = service(Family::V4, &s, &ctx());
        assert_eq!(
            rules(&f, ext),
            [
                "ip saddr @pod-cidrs goto svc-default/web/tcp/http",
                "fib saddr type local jump mark-for-masquerade",
                "fib saddr type local goto svc-default/web/tcp/http",
                "goto local-default/web/tcp/http",
            ]
        );
        assert_eq!(rules(&f, "local-default/web/tcp/http"), ["meta l4proto tcp dnat to 10.42.0.7:8080"]);
        assert_eq!(value(&f, "service-ips", "10.43.0.5 . tcp . 80"), Some("goto svc-default/web/tcp/http"), "cluster IP traffic: all endpoints");
        // no local endpoint: outside traffic dropped, pods still served
        s.ports[0].endpoints.retain(|e| !e.local);
        let f = service(Family::V4, &s, &ctx());
        assert_eq!(rules(&f, ext).last().map(String::as_str), Some("drop"));
        assert!(!f.chains.contains_key("local-default/web/tcp/http"));
    }

    #[test]
    fn load_balancer_source_ranges_drop_other_sources_of_the_load_balancer_ips_only() {
        let prefix = |s: &str| berth_apiserver::services::cidr::Prefix::parse(s).expect("prefix");
        let mut s = web(vec![ep("10.42.0.7", true, true)]);
        s.ports[0].node_port = Some(30080);
        s.load_balancer_ips = vec![ip("192.0.2.8"), ip("fd00::8")];
        s.external_ips = vec![ip("192.0.2.7")];
        s.source_ranges = vec![prefix("198.51.100.0/24"), prefix("fd00:1::/64")];
        let f = service(Family::V4, &s, &ctx());
        let fw = "fw-default/web/tcp/http";
        assert_eq!(rules(&f, fw), ["ip saddr != { 198.51.100.0/24 } drop"]);
        assert_eq!(value(&f, "firewall-ips", "192.0.2.8 . tcp . 80"), Some("goto fw-default/web/tcp/http"));
        assert_eq!(f.elements.keys().filter(|(m, _)| m == "firewall-ips").count(), 1, "not the external IP, not the node port");
        // a range holding the node's address lets the node's own traffic (from the LB IP) in
        s.source_ranges.push(prefix("192.0.2.48/28"));
        let f = service(Family::V4, &s, &ctx());
        assert_eq!(rules(&f, fw), ["ip saddr != { 198.51.100.0/24, 192.0.2.48/28, 192.0.2.8 } drop"]);
        // the IPv6 table has its own ranges; without ranges of a family its LB IPs are open
        let mut s6 = s.clone();
        s6.cluster_ips = vec![ip("10.43.0.5"), ip("fd00:43::5")];
        let f6 = service(Family::V6, &s6, &ctx());
        assert_eq!(rules(&f6, fw), ["ip6 saddr != { fd00:1::/64 } drop"]);
        s.source_ranges.retain(|r| r.addr.is_ipv6());
        assert!(!service(Family::V4, &s, &ctx()).chains.contains_key(fw));
        // without endpoints the filter stays (the reject comes after it)
        let mut empty = web(vec![]);
        empty.load_balancer_ips = vec![ip("192.0.2.8")];
        empty.source_ranges = vec![prefix("198.51.100.0/24")];
        let f = service(Family::V4, &empty, &ctx());
        assert_eq!(value(&f, "firewall-ips", "192.0.2.8 . tcp . 80"), Some("goto fw-default/web/tcp/http"));
        assert_eq!(value(&f, "no-endpoint-services", "192.0.2.8 . tcp . 80"), Some("goto reject-chain"));
    }

    #[test]
    fn internal_traffic_policy_local_uses_local_endpoints_or_drops() {
        let mut s = web(vec![ep("10.42.0.7", true, true), ep("10.42.1.7", true, false)]);
        s.internal_local = true;
        let f = service(Family::V4, &s, &ctx());
        assert_eq!(value(&f, "service-ips", "10.43.0.5 . tcp . 80"), Some("goto local-default/web/tcp/http"));
        assert_eq!(
            rules(&f, "local-default/web/tcp/http"),
            ["ip daddr 10.43.0.5 tcp dport 80 ip saddr != @pod-cidrs jump mark-for-masquerade", "meta l4proto tcp dnat to 10.42.0.7:8080"]
        );
        s.ports[0].endpoints.retain(|e| !e.local);
        let f = service(Family::V4, &s, &ctx());
        assert_eq!(value(&f, "no-endpoint-services", "10.43.0.5 . tcp . 80"), Some("drop"));
    }

    #[test]
    fn session_affinity_remembers_clients_per_endpoint() {
        let mut s = web(vec![ep("10.42.0.7", true, true), ep("10.42.0.8", true, true)]);
        s.affinity_timeout = Some(60);
        let f = service(Family::V4, &s, &ctx());
        let e7 = "default/web/tcp/http__10.42.0.7/8080";
        assert!(f.sets.get(&format!("aff-{e7}")).is_some_and(|d| !d.owned && d.spec.contains("dynamic,timeout")));
        assert_eq!(rules(&f, &format!("ep-{e7}")), [format!("update @aff-{e7} {{ ip saddr timeout 60s }}"), "meta l4proto tcp dnat to 10.42.0.7:8080".into()]);
        let svc_rules = rules(&f, "svc-default/web/tcp/http");
        assert_eq!(svc_rules[1], format!("ip saddr @aff-{e7} goto ep-{e7}"));
        assert!(svc_rules[3].starts_with("numgen random mod 2 vmap { 0 : goto ep-"), "{svc_rules:?}");
    }

    #[test]
    fn skipped_cluster_ips_and_other_families_program_nothing_for_them() {
        let s = web(vec![ep("10.42.0.7", true, true)]);
        let skip = Context { masquerade_off_cluster: false, skip_cluster_ips: vec![ip("10.43.0.5")], node_ips: vec![] };
        let f = service(Family::V4, &s, &skip);
        assert_eq!(f.elements.keys().map(|(set, _)| set.as_str()).collect::<Vec<_>>(), ["hairpin-endpoints"], "no cluster IP elements");
        assert_eq!(rules(&f, "svc-default/web/tcp/http"), ["meta l4proto tcp dnat to 10.42.0.7:8080"], "no pod CIDRs: no masquerade rule");
        assert_eq!(service(Family::V6, &s, &ctx()), Fragment::default());
    }

    #[test]
    fn ipv6_services_use_ip6_syntax() {
        let v6 = |addr: &str| Endpoint { ip: ip(addr), port: 8080, ready: true, serving: true, terminating: false, local: true };
        let mut s = web(vec![v6("fd00:42::7"), v6("fd00:42::8")]);
        s.cluster_ips = vec![ip("10.43.0.5"), ip("fd00:43::5")];
        s.ports[0].protocol = Proto::Udp;
        let f = service(Family::V6, &s, &ctx());
        assert_eq!(
            rules(&f, "svc-default/web/udp/http")[1],
            "meta l4proto udp dnat ip6 addr . port to numgen random mod 2 map { 0 : fd00:42::7 . 8080, 1 : fd00:42::8 . 8080 }"
        );
        s.ports[0].endpoints.truncate(1);
        s.affinity_timeout = Some(5);
        let f = service(Family::V6, &s, &ctx());
        let eid = "ep-default/web/udp/http__fd00.42..7/8080";
        assert_eq!(
            rules(&f, eid),
            ["update @aff-default/web/udp/http__fd00.42..7/8080 { ip6 saddr timeout 5s }", "meta l4proto udp dnat to [fd00:42::7]:8080"]
        );
        assert_eq!(value(&f, "service-ips", "fd00:43::5 . udp . 80"), Some("goto svc-default/web/udp/http"));
        let sk = skeleton(Family::V6, &Base::default());
        assert!(sk.sets["service-ips"].spec.starts_with("type ipv6_addr"));
        assert_eq!(sk.chains["services"].rules[0], "ip6 daddr . meta l4proto . th dport vmap @service-ips");
    }
}
