//! Services: defaults (type, session affinity, protocols, target ports, IP families), a cluster
//! IP and node ports allocated on create and kept on update, validation (DNS-1035 names, ports,
//! types), and the `kubectl get services` columns.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct Services;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// A random address of the service range 10.96.0.0/12 (not .0 or .1: .1 is the `kubernetes` service).
/// A real allocator (bitmap in the store, repair loop) is a later step; collisions are unlikely, not impossible.
fn random_cluster_ip() -> String {
    let n = u32::from_be_bytes(uuid::Uuid::new_v4().as_bytes()[..4].try_into().unwrap_or([0; 4])) & 0x000f_ffff;
    let n = n.max(2);
    let ip = std::net::Ipv4Addr::from(0x0a60_0000u32 | n);
    ip.to_string()
}

fn random_node_port() -> i32 {
    30000 + (uuid::Uuid::new_v4().as_u128() % 2768) as i32
}

impl Kind for Services {
    type Object = Service;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::dns1035_label
    }

    fn default(&self, svc: &mut Service) {
        let spec = svc.spec.get_or_insert_with(Default::default);
        let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
        if kind == "ExternalName" {
            return;
        }
        spec.session_affinity.get_or_insert_with(|| "None".into());
        spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".into());
        if kind == "NodePort" || kind == "LoadBalancer" {
            spec.external_traffic_policy.get_or_insert_with(|| "Cluster".into());
        }
        for p in spec.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
            p.target_port.get_or_insert(IntOrString::Int(p.port));
        }
    }

    fn prepare_for_create(&self, svc: &mut Service) {
        svc.status = Some(k8s_openapi::api::core::v1::ServiceStatus { load_balancer: Some(Default::default()), ..Default::default() });
        let Some(spec) = svc.spec.as_mut() else { return };
        if spec.type_.as_deref() == Some("ExternalName") {
            return;
        }
        if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            spec.cluster_ip = Some(random_cluster_ip());
        }
        if spec.cluster_ip.as_deref() != Some("None") {
            spec.cluster_ips = spec.cluster_ip.clone().map(|ip| vec![ip]);
            spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
            spec.ip_family_policy.get_or_insert_with(|| "SingleStack".into());
        } else {
            spec.cluster_ips = Some(vec!["None".into()]);
            spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
            spec.ip_family_policy.get_or_insert_with(|| "SingleStack".into());
        }
        if matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer")) {
            for p in spec.ports.iter_mut().flatten() {
                p.node_port.get_or_insert_with(random_node_port);
            }
        }
        if spec.type_.as_deref() == Some("LoadBalancer") {
            spec.allocate_load_balancer_node_ports.get_or_insert(true);
        }
    }

    fn prepare_for_update(&self, new: &mut Service, old: &Service) {
        let (Some(n), Some(o)) = (new.spec.as_mut(), old.spec.as_ref()) else { return };
        if n.cluster_ip.as_deref().unwrap_or("").is_empty() && n.type_ != Some("ExternalName".into()) {
            n.cluster_ip = o.cluster_ip.clone();
            n.cluster_ips = o.cluster_ips.clone();
        }
        if n.cluster_ips.is_none() {
            n.cluster_ips = o.cluster_ips.clone();
        }
        if n.ip_families.is_none() {
            n.ip_families = o.ip_families.clone();
        }
        if n.ip_family_policy.is_none() {
            n.ip_family_policy = o.ip_family_policy.clone();
        }
        for p in n.ports.iter_mut().flatten() {
            if p.node_port.is_none() {
                p.node_port = o.ports.iter().flatten().find(|op| op.port == p.port && op.protocol == p.protocol).and_then(|op| op.node_port);
            }
        }
    }

    fn unique_values(&self, svc: &Service) -> Vec<(String, String)> {
        let Some(spec) = &svc.spec else { return vec![] };
        let mut out = vec![];
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") {
            out.push(("spec.clusterIPs".to_string(), ip.to_string()));
        }
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            if let Some(np) = p.node_port.filter(|n| *n != 0) {
                out.push((format!("spec.ports[{i}].nodePort"), format!("{np}/{}", p.protocol.as_deref().unwrap_or("TCP"))));
            }
        }
        out
    }

    fn validate(&self, svc: &Service) -> Vec<FieldError> {
        let mut errs = vec![];
        let Some(spec) = &svc.spec else { return vec![FieldError::required("spec", "")] };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if !TYPES.contains(&kind) {
            errs.push(FieldError::not_supported("spec.type", kind, TYPES));
        }
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if ports.is_empty() && kind != "ExternalName" && !headless {
            errs.push(FieldError::required("spec.ports", ""));
        }
        for (i, p) in ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            let name = p.name.as_deref().unwrap_or("");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(format!("{path}.name"), ""));
            } else if !name.is_empty() {
                errs.extend(crate::status::check_name(&format!("{path}.name"), name, berth_names::dns1123_label));
            }
            if !(1..=65535).contains(&p.port) {
                errs.push(FieldError::invalid(format!("{path}.port"), p.port, "must be between 1 and 65535, inclusive"));
            }
            if let Some(proto) = p.protocol.as_deref().filter(|pr| !PROTOCOLS.contains(pr)) {
                errs.push(FieldError::not_supported(format!("{path}.protocol"), proto, PROTOCOLS));
            }
            if let Some(IntOrString::Int(t)) = p.target_port {
                if !(1..=65535).contains(&t) {
                    errs.push(FieldError::invalid(format!("{path}.targetPort"), t, "must be between 1 and 65535, inclusive"));
                }
            }
        }
        errs.extend(super::validate_labels("spec.selector", spec.selector.as_ref()));
        errs
    }

    fn validate_update(&self, new: &Service, old: &Service) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let ip = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default();
        if !ip(old).is_empty() && ip(new) != ip(old) && new.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName") {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", ip(new), "may not change once set"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Type", "string", "The type of service."),
            col("Cluster-IP", "string", "The cluster IP of the service."),
            col("External-IP", "string", "The external IP of the service."),
            col("Port(s)", "string", "The ports of the service."),
            AGE_COLUMN,
            wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
        ]
    }

    fn cells(&self, svc: &Service, now: Timestamp) -> Vec<Value> {
        let spec = svc.spec.clone().unwrap_or_default();
        let kind = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        let mut external: Vec<String> = spec.external_ips.clone().unwrap_or_default();
        let external = match kind.as_str() {
            "ExternalName" => spec.external_name.clone().unwrap_or_default(),
            "LoadBalancer" => {
                let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default();
                external.extend(ingress.into_iter().filter_map(|i| i.ip.or(i.hostname)));
                if external.is_empty() {
                    "<pending>".into()
                } else {
                    external.join(",")
                }
            }
            _ if external.is_empty() => "<none>".into(),
            _ => external.join(","),
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                match p.node_port {
                    Some(np) if np != 0 => format!("{}:{np}/{proto}", p.port),
                    _ => format!("{}/{proto}", p.port),
                }
            })
            .collect::<Vec<_>>();
        let ports = if ports.is_empty() { "<none>".to_string() } else { ports.join(",") };
        let selector = spec.selector.clone().unwrap_or_default();
        let selector = if selector.is_empty() { "<none>".to_string() } else { selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",") };
        let cluster_ip = spec.cluster_ip.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into());
        vec![
            json!(svc.metadata.name.clone().unwrap_or_default()),
            json!(kind),
            json!(cluster_ip),
            json!(external),
            json!(ports),
            json!(age(svc.metadata.creation_timestamp.as_ref(), now)),
            json!(selector),
        ]
    }
}
