//! Services: defaults (type, session affinity, protocols, target ports), what an update keeps
//! (allocated cluster IPs and node ports the client did not send) and drops (those the new type
//! has no use for: they are released), validation (DNS-1035 names, ports, types, cluster IPs),
//! and the `kubectl get services` columns. Cluster IPs, IP families and node ports are
//! allocated by `crate::services::alloc`, which the REST verbs call around the write.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct Services;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() != Some("ExternalName")
}

fn needs_node_ports(spec: &ServiceSpec) -> bool {
    matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"))
}

fn needs_health_check_port(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer") && spec.external_traffic_policy.as_deref() == Some("Local")
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
        if spec.type_.as_deref() == Some("LoadBalancer") {
            spec.allocate_load_balancer_node_ports.get_or_insert(true);
        }
    }

    fn prepare_for_update(&self, new: &mut Service, old: &Service) {
        let (Some(n), Some(o)) = (new.spec.as_mut(), old.spec.as_ref()) else { return };
        // keep what was allocated and the client did not send (upstream's patchAllocatedValues)
        if needs_cluster_ip(n) && needs_cluster_ip(o) {
            if n.cluster_ip.as_deref().unwrap_or("").is_empty() {
                n.cluster_ip = o.cluster_ip.clone();
            }
            if n.cluster_ips.as_ref().is_none_or(|l| l.is_empty()) {
                n.cluster_ips = o.cluster_ips.clone();
            }
            if n.ip_families.is_none() {
                n.ip_families = o.ip_families.clone();
            }
            if n.ip_family_policy.is_none() {
                n.ip_family_policy = o.ip_family_policy.clone();
            }
        }
        if needs_node_ports(n) && needs_node_ports(o) {
            for p in n.ports.iter_mut().flatten() {
                if p.node_port.unwrap_or(0) == 0 {
                    p.node_port = o.ports.iter().flatten().find(|op| op.port == p.port && op.protocol == p.protocol).and_then(|op| op.node_port);
                }
            }
        }
        if needs_health_check_port(n) && needs_health_check_port(o) && n.health_check_node_port.unwrap_or(0) == 0 {
            n.health_check_node_port = o.health_check_node_port;
        }
        // drop what the new type has no use for (upstream's dropTypeDependentFields): released
        // once the update is stored
        if needs_cluster_ip(o) && !needs_cluster_ip(n) {
            if n.cluster_ips == o.cluster_ips || n.cluster_ip == o.cluster_ip {
                n.cluster_ip = None;
                n.cluster_ips = None;
            }
            if n.ip_families == o.ip_families {
                n.ip_families = None;
            }
            if n.ip_family_policy == o.ip_family_policy {
                n.ip_family_policy = None;
            }
        }
        let node_ports = |s: &ServiceSpec| s.ports.iter().flatten().map(|p| p.node_port).collect::<Vec<_>>();
        if needs_node_ports(o) && !needs_node_ports(n) && node_ports(n) == node_ports(o) {
            for p in n.ports.iter_mut().flatten() {
                p.node_port = None;
            }
        }
        if needs_health_check_port(o) && !needs_health_check_port(n) && n.health_check_node_port == o.health_check_node_port {
            n.health_check_node_port = None;
        }
        if n.type_.as_deref() != Some("LoadBalancer") {
            n.allocate_load_balancer_node_ports = None;
        }
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
        errs.extend(validate_cluster_ips(spec));
        if kind == "ClusterIP" {
            for (i, p) in ports.iter().enumerate() {
                if p.node_port.unwrap_or(0) != 0 {
                    errs.push(FieldError::forbidden(format!("spec.ports[{i}].nodePort"), "may not be used when `type` is 'ClusterIP'"));
                }
            }
        }
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

/// The cluster IP fields: valid addresses (or "None", alone), clusterIP the first of clusterIPs.
fn validate_cluster_ips(spec: &ServiceSpec) -> Vec<FieldError> {
    let mut errs = vec![];
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            if ips.len() > 1 {
                errs.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), ip.as_str(), "must be empty when the first value is 'None'"));
            }
            continue;
        }
        if ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), ip.as_str(), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
        }
    }
    if let (Some(ip), Some(first)) = (spec.cluster_ip.as_deref().filter(|s| !s.is_empty()), ips.first()) {
        if ip != first {
            errs.push(FieldError::invalid("spec.clusterIPs", serde_json::json!(ips), "first value must match `clusterIP`"));
        }
    }
    errs
}
