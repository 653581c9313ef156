//! A pod's resolv.conf from its dnsPolicy and dnsConfig, as the kubelet builds it:
//! ClusterFirst uses the cluster DNS servers with the namespace's search path (and falls
//! back to the host's resolver when the node has no cluster DNS), Default uses the host's,
//! None only the pod's dnsConfig; dnsConfig is merged into the others.
use crate::cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

/// The kubelet's default `--resolv-conf`.
pub const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The kubelet's limits: 3 nameservers, 32 search domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// nameservers, searches and options of a resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => servers.extend(f.next().map(String::from)),
            Some("search") | Some("domain") => searches = f.map(String::from).collect(),
            Some("options") => options.extend(f.map(String::from)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// Which resolver the pod gets before its dnsConfig is merged in.
#[derive(Debug, PartialEq)]
pub enum Resolver {
    /// The cluster's DNS.
    Cluster,
    /// The node's own resolv.conf.
    Host,
    /// Nothing but the pod's dnsConfig.
    Empty,
}

/// The resolver for the pod's policy; the second value says ClusterFirst fell back to the
/// host's resolver for want of cluster DNS.
pub fn resolver(pod: &Pod, have_cluster_dns: bool) -> (Resolver, bool) {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => return (Resolver::Empty, false),
        "Default" => false,
        "ClusterFirstWithHostNet" => true,
        // ClusterFirst on the host network means the host's resolver.
        _ => !host_network,
    };
    match (cluster, have_cluster_dns) {
        (true, true) => (Resolver::Cluster, false),
        (true, false) => (Resolver::Host, true),
        _ => (Resolver::Host, false),
    }
}

/// The pod's DNS config for the runtime; None leaves the runtime's default (the host's
/// resolv.conf as it is).
pub fn dns_config(pod: &Pod, cluster_dns: &[String], cluster_domain: &str, host_resolv_conf: &str) -> Option<cri::DnsConfig> {
    let spec = pod.spec.clone().unwrap_or_default();
    let (which, _) = resolver(pod, !cluster_dns.is_empty());
    let extra = spec.dns_config.clone();
    let (mut servers, mut searches, mut options) = match which {
        Resolver::Cluster => {
            let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let (_, host_searches, _) = parse_resolv_conf(host_resolv_conf);
            let mut s = vec![format!("{ns}.svc.{cluster_domain}"), format!("svc.{cluster_domain}"), cluster_domain.to_string()];
            s.extend(host_searches);
            (cluster_dns.to_vec(), s, vec!["ndots:5".to_string()])
        }
        Resolver::Host if extra.is_none() => return None,
        Resolver::Host => parse_resolv_conf(host_resolv_conf),
        Resolver::Empty => (vec![], vec![], vec![]),
    };
    if let Some(d) = extra {
        servers.extend(d.nameservers.unwrap_or_default());
        searches.extend(d.searches.unwrap_or_default());
        for o in d.options.unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    searches.retain(|s| seen.insert(s.clone()));
    servers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);
    Some(cri::DnsConfig { servers, searches, options })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec})).unwrap()
    }

    const HOST: &str = "# host\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    #[test]
    fn policies_build_resolv_conf_like_the_kubelet() {
        let dns = vec!["10.96.0.10".to_string()];
        let c = dns_config(&pod(serde_json::json!({"containers": []})), &dns, "cluster.local", HOST).unwrap();
        assert_eq!(c.servers, ["10.96.0.10"]);
        assert_eq!(c.searches, ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]);
        assert_eq!(c.options, ["ndots:5"]);
        // No cluster DNS: ClusterFirst falls back to the host's resolver.
        assert!(dns_config(&pod(serde_json::json!({"containers": []})), &[], "cluster.local", HOST).is_none());
        assert_eq!(resolver(&pod(serde_json::json!({"containers": []})), false), (Resolver::Host, true));
        // Host network: ClusterFirst is the host's; ClusterFirstWithHostNet the cluster's.
        assert!(dns_config(&pod(serde_json::json!({"containers": [], "hostNetwork": true})), &dns, "cluster.local", HOST).is_none());
        let c =
            dns_config(&pod(serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})), &dns, "cluster.local", HOST)
                .unwrap();
        assert_eq!(c.servers, ["10.96.0.10"]);
        // Default with dnsConfig merges into the host's.
        let c = dns_config(
            &pod(serde_json::json!({"containers": [], "dnsPolicy": "Default", "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "edns0"}, {"name": "ndots", "value": "2"}]}})),
            &dns,
            "cluster.local",
            HOST,
        )
        .unwrap();
        assert_eq!(
            (c.servers, c.searches, c.options),
            (vec!["192.0.2.53".to_string(), "1.1.1.1".into()], vec!["corp.example".to_string()], vec!["edns0".to_string(), "ndots:2".into()])
        );
        let c = dns_config(
            &pod(serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a", "a"]}})),
            &dns,
            "cluster.local",
            HOST,
        )
        .unwrap();
        assert_eq!((c.servers, c.searches, c.options), (vec!["1.1.1.1".to_string()], vec!["a".to_string()], vec![]));
    }
}
