//! The Service environment variables a kubelet gives every container: for each Service of the
//! pod's namespace with a cluster IP (when the pod's `enableServiceLinks` is true, the default)
//! and always for the `kubernetes` Service of the `default` namespace, `<NAME>_SERVICE_HOST`,
//! `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORTNAME>` and the Docker-link style
//! `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`. In-cluster clients find the
//! apiserver through `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`.

use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;

/// The namespace of the apiserver's own Service.
const MASTER_NAMESPACE: &str = "default";
/// The Services of [`MASTER_NAMESPACE`] every pod gets variables for.
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// What the variables of one Service are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLink {
    pub name: String,
    pub cluster_ip: String,
    /// (name, port, protocol) in the Service's order.
    pub ports: Vec<(String, i32, String)>,
}

/// Services by (namespace, name).
pub type ServiceLinks = BTreeMap<(String, String), ServiceLink>;

impl ServiceLink {
    /// The link of a Service with a cluster IP (not headless, not ExternalName); None otherwise.
    pub fn of(service: &Service) -> Option<ServiceLink> {
        let spec = service.spec.as_ref()?;
        let ip = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")?;
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".into())))
            .collect();
        Some(ServiceLink { name: service.metadata.name.clone()?, cluster_ip: ip.to_string(), ports })
    }
}

/// `my-svc` → `MY_SVC`.
fn variable_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The variables of a pod in `namespace` (in a stable order: by Service name).
pub fn variables(services: &ServiceLinks, namespace: &str, enable_service_links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &ServiceLink> = BTreeMap::new();
    for ((ns, name), link) in services {
        if ns == MASTER_NAMESPACE && MASTER_SERVICES.contains(&name.as_str()) {
            chosen.entry(name).or_insert(link);
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, link);
        }
    }
    chosen.values().flat_map(|link| link_variables(link)).collect()
}

fn link_variables(link: &ServiceLink) -> Vec<(String, String)> {
    let prefix = variable_name(&link.name);
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), link.cluster_ip.clone())];
    let Some((_, first, _)) = link.ports.first() else { return out };
    out.push((format!("{prefix}_SERVICE_PORT"), first.to_string()));
    for (name, port, _) in link.ports.iter().filter(|(n, _, _)| !n.is_empty()) {
        out.push((format!("{prefix}_SERVICE_PORT_{}", variable_name(name)), port.to_string()));
    }
    let host = if link.cluster_ip.contains(':') { format!("[{}]", link.cluster_ip) } else { link.cluster_ip.clone() };
    for (i, (_, port, protocol)) in link.ports.iter().enumerate() {
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let url = format!("{lower}://{host}:{port}");
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{port}_{upper}");
        out.push((port_prefix.clone(), url));
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), link.cluster_ip.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, spec: serde_json::Value) -> ((String, String), Option<ServiceLink>) {
        let s: Service = serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).expect("service");
        ((ns.into(), name.into()), ServiceLink::of(&s))
    }

    fn links(items: Vec<((String, String), Option<ServiceLink>)>) -> ServiceLinks {
        items.into_iter().filter_map(|(k, l)| l.map(|l| (k, l))).collect()
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_kubernetes_service_gives_every_pod_the_in_cluster_variables() {
        let all = links(vec![
            service("default", "kubernetes", json!({"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]})),
            service("other", "db", json!({"clusterIP": "10.43.0.7", "ports": [{"port": 5432}]})),
        ]);
        let vars = variables(&all, "web", true);
        assert_eq!(
            vars,
            [
                ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
                ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
                ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
                ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
                ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
                ("KUBERNETES_PORT_443_TCP_PORT", "443"),
                ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // links off: still the apiserver's
        assert_eq!(variables(&all, "other", false).len(), 8);
        assert_eq!(get(&variables(&all, "other", true), "DB_SERVICE_HOST"), Some("10.43.0.7"));
    }

    #[test]
    fn services_of_the_namespace_with_names_ports_and_protocols() {
        let all = links(vec![
            service(
                "shop",
                "my-cart",
                json!({"clusterIP": "10.43.0.20", "ports": [{"name": "http-alt", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            ),
            service("shop", "headless", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            service("shop", "outside", json!({"type": "ExternalName", "externalName": "example.com"})),
            service("shop", "v6", json!({"clusterIP": "fd00::10", "ports": [{"port": 80}]})),
            service("elsewhere", "my-cart", json!({"clusterIP": "10.43.0.99", "ports": [{"port": 1}]})),
        ]);
        let vars = variables(&all, "shop", true);
        assert_eq!(get(&vars, "MY_CART_SERVICE_HOST"), Some("10.43.0.20"));
        assert_eq!(get(&vars, "MY_CART_SERVICE_PORT"), Some("8080"));
        assert_eq!(get(&vars, "MY_CART_SERVICE_PORT_HTTP_ALT"), Some("8080"));
        assert_eq!(get(&vars, "MY_CART_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get(&vars, "MY_CART_PORT"), Some("tcp://10.43.0.20:8080"));
        assert_eq!(get(&vars, "MY_CART_PORT_53_UDP"), Some("udp://10.43.0.20:53"));
        assert_eq!(get(&vars, "MY_CART_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get(&vars, "V6_PORT_80_TCP"), Some("tcp://[fd00::10]:80"));
        assert_eq!(get(&vars, "V6_PORT_80_TCP_ADDR"), Some("fd00::10"));
        assert!(vars.iter().all(|(n, _)| !n.starts_with("HEADLESS") && !n.starts_with("OUTSIDE")), "{vars:?}");
        assert!(variables(&all, "shop", false).is_empty());
    }
}
