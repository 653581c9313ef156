//! Endpoints (core/v1) and EndpointSlices (discovery.k8s.io/v1): address and port validation,
//! and the ENDPOINTS / ADDRESSTYPE / PORTS columns (at most three entries, then "+ N more...").

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Up to three entries joined by commas, "+ N more..." for the rest; `none` when empty.
fn first_three(list: Vec<String>, none: &str) -> String {
    match list.len() {
        0 => none.into(),
        n if n > 3 => format!("{} + {} more...", list[..3].join(","), n - 3),
        _ => list.join(","),
    }
}

fn join_host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn validate_port(path: &str, port: i32, protocol: Option<&str>) -> Vec<FieldError> {
    let mut errs = vec![];
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(format!("{path}.port"), port, "must be between 1 and 65535, inclusive"));
    }
    match protocol {
        Some(p) if !PROTOCOLS.contains(&p) => errs.push(FieldError::not_supported(format!("{path}.protocol"), p, PROTOCOLS)),
        None => errs.push(FieldError::required(format!("{path}.protocol"), "")),
        _ => {}
    }
    errs
}

pub struct EndpointsKind;

impl Kind for EndpointsKind {
    type Object = Endpoints;

    fn default(&self, e: &mut Endpoints) {
        for p in e.subsets.iter_mut().flatten().flat_map(|s| s.ports.iter_mut().flatten()) {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
    }

    fn validate(&self, e: &Endpoints) -> Vec<FieldError> {
        let mut errs = vec![];
        for (i, s) in e.subsets.iter().flatten().enumerate() {
            let addrs = s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten());
            for (j, a) in addrs.enumerate() {
                if a.ip.parse::<std::net::IpAddr>().is_err() {
                    errs.push(FieldError::invalid(format!("subsets[{i}].addresses[{j}].ip"), a.ip.as_str(), "must be a valid IP address"));
                }
            }
            for (j, p) in s.ports.iter().flatten().enumerate() {
                errs.extend(validate_port(&format!("subsets[{i}].ports[{j}]"), p.port, p.protocol.as_deref()));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("Endpoints", "string", "The set of all endpoints is the union of all subsets."), AGE_COLUMN]
    }

    fn cells(&self, e: &Endpoints, now: Timestamp) -> Vec<Value> {
        let mut list = vec![];
        for s in e.subsets.iter().flatten() {
            let addrs = s.addresses.as_deref().unwrap_or_default();
            match s.ports.as_deref() {
                None | Some([]) => list.extend(addrs.iter().map(|a| a.ip.clone())),
                Some(ports) => {
                    for p in ports {
                        list.extend(addrs.iter().map(|a| join_host_port(&a.ip, p.port)));
                    }
                }
            }
        }
        vec![json!(e.metadata.name.clone().unwrap_or_default()), json!(first_three(list, "<none>")), json!(age(e.metadata.creation_timestamp.as_ref(), now))]
    }
}

pub struct EndpointSlices;

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

impl Kind for EndpointSlices {
    type Object = EndpointSlice;

    fn default(&self, s: &mut EndpointSlice) {
        for p in s.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
            p.name.get_or_insert_with(String::new);
        }
    }

    fn validate(&self, s: &EndpointSlice) -> Vec<FieldError> {
        let mut errs = vec![];
        if !ADDRESS_TYPES.contains(&s.address_type.as_str()) {
            errs.push(FieldError::not_supported("addressType", s.address_type.as_str(), ADDRESS_TYPES));
        }
        for (i, e) in s.endpoints.iter().enumerate() {
            if e.addresses.is_empty() {
                errs.push(FieldError::required(format!("endpoints[{i}].addresses"), "must contain at least 1 address"));
            }
            for (j, a) in e.addresses.iter().enumerate() {
                let ok = match s.address_type.as_str() {
                    "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => berth_names::dns1123_subdomain(a).is_empty(),
                };
                if !ok {
                    errs.push(FieldError::invalid(format!("endpoints[{i}].addresses[{j}]"), a.as_str(), format!("must be a valid {} address", s.address_type)));
                }
            }
        }
        for (i, p) in s.ports.iter().flatten().enumerate() {
            if let Some(port) = p.port {
                errs.extend(validate_port(&format!("ports[{i}]"), port, p.protocol.as_deref()));
            }
        }
        errs
    }

    fn validate_update(&self, new: &EndpointSlice, old: &EndpointSlice) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.address_type != old.address_type {
            errs.push(FieldError::invalid("addressType", new.address_type.as_str(), "field is immutable"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
            col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
            AGE_COLUMN,
        ]
    }

    fn cells(&self, s: &EndpointSlice, now: Timestamp) -> Vec<Value> {
        let ports = s.ports.iter().flatten().map(|p| p.port.map(|n| n.to_string()).or_else(|| p.name.clone()).unwrap_or_else(|| "*".into())).collect();
        let endpoints = s.endpoints.iter().flat_map(|e| e.addresses.iter().cloned()).collect();
        vec![
            json!(s.metadata.name.clone().unwrap_or_default()),
            json!(s.address_type),
            json!(first_three(ports, "<unset>")),
            json!(first_three(endpoints, "<unset>")),
            json!(age(s.metadata.creation_timestamp.as_ref(), now)),
        ]
    }
}
