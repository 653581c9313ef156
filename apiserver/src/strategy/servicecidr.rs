//! ServiceCIDRs and IPAddresses (networking.k8s.io/v1), the objects of cluster IP allocation:
//! a ServiceCIDR names one or two ranges (one per family; the spec may only grow from one to
//! two), an IPAddress is named by the canonical form of its IP and points at what holds it
//! (spec.parentRef, immutable). The `kubectl get` columns are upstream's (CIDRS; PARENTREF).

use jiff::Timestamp;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::services::cidr::{Cidr, CidrError, Family};
use crate::status::FieldError;
use crate::table::age;

pub struct ServiceCIDRs;

impl Kind for ServiceCIDRs {
    type Object = ServiceCIDR;

    fn prepare_for_create(&self, c: &mut ServiceCIDR) {
        c.status = None;
    }

    fn validate(&self, c: &ServiceCIDR) -> Vec<FieldError> {
        let cidrs = c.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default();
        let mut errs = vec![];
        match cidrs.len() {
            0 => errs.push(FieldError::required("spec.cidrs", "at least one CIDR required")),
            1 | 2 => {}
            _ => errs.push(FieldError::too_many("spec.cidrs", cidrs.len(), 2)),
        }
        let mut families = vec![];
        for (i, s) in cidrs.iter().enumerate() {
            match Cidr::parse(s) {
                Ok(c) => families.push(c.family()),
                Err(CidrError::HostBits { network, .. }) => {
                    errs.push(FieldError::invalid(format!("spec.cidrs[{i}]"), s.as_str(), format!("must be in canonical form (\"{network}\")")))
                }
                Err(e) => errs.push(FieldError::invalid(format!("spec.cidrs[{i}]"), s.as_str(), e.to_string())),
            }
        }
        if families.len() == 2 && families[0] == families[1] {
            errs.push(FieldError::invalid(
                "spec.cidrs",
                json!(cidrs),
                "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
            ));
        }
        errs
    }

    fn validate_update(&self, new: &ServiceCIDR, old: &ServiceCIDR) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let (n, o) = (new.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default(), old.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default());
        // single-stack to dual-stack is the one change allowed
        let upgrade = o.len() == 1 && n.len() == 2 && n[0] == o[0];
        if n != o && !upgrade {
            errs.push(FieldError::invalid("spec.cidrs", json!(n), "field is immutable"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, col("CIDRs", "string", "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \"2001:db8::/64\") from which to assign service cluster IPs. Max of two CIDRs is allowed, one of each IP family. The network address of each CIDR, the address that ends in -0 (for IPv4) or ends in ::0 (for IPv6), will be reserved for the IP family and can not be assigned to any Service."), AGE_COLUMN]
    }

    fn cells(&self, c: &ServiceCIDR, now: Timestamp) -> Vec<Value> {
        let cidrs = c.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default().join(",");
        vec![json!(c.metadata.name.clone().unwrap_or_default()), json!(cidrs), json!(age(c.metadata.creation_timestamp.as_ref(), now))]
    }
}

/// An IPAddress's name: an IP in canonical form (`10.0.0.1`, `2001:db8::1`).
fn ip_name(name: &str) -> Vec<String> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.to_string() == name => vec![],
        Ok(ip) => vec![format!("must be a canonical format IP address (\"{ip}\")")],
        Err(_) => vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()],
    }
}

pub struct IPAddresses;

impl Kind for IPAddresses {
    type Object = IPAddress;

    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        ip_name
    }

    fn validate(&self, a: &IPAddress) -> Vec<FieldError> {
        let mut errs = vec![];
        let Some(spec) = &a.spec else { return vec![FieldError::required("spec.parentRef", "")] };
        let r = &spec.parent_ref;
        if r.resource.is_empty() {
            errs.push(FieldError::required("spec.parentRef.resource", ""));
        }
        if r.name.is_empty() {
            errs.push(FieldError::required("spec.parentRef.name", ""));
        }
        if let Some(family) = a.metadata.labels.as_ref().and_then(|l| l.get(crate::services::book::LABEL_FAMILY)) {
            let actual = a.metadata.name.as_deref().and_then(|n| n.parse().ok()).map(|ip| Family::of(&ip).as_str());
            if actual.is_some_and(|f| f != family) {
                errs.push(FieldError::invalid(
                    format!("metadata.labels[{}]", crate::services::book::LABEL_FAMILY),
                    family.as_str(),
                    "does not match the address's IP family",
                ));
            }
        }
        errs
    }

    fn validate_update(&self, new: &IPAddress, old: &IPAddress) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.spec != old.spec {
            errs.push(FieldError::invalid(
                "spec.parentRef",
                serde_json::to_value(new.spec.as_ref().map(|s| &s.parent_ref)).unwrap_or_default(),
                "field is immutable",
            ));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("ParentRef", "string", "ParentRef references the resource that an IPAddress is attached to. An IPAddress must reference a parent object."),
        ]
    }

    fn cells(&self, a: &IPAddress, _now: Timestamp) -> Vec<Value> {
        let parent = match &a.spec {
            Some(s) => {
                let r = &s.parent_ref;
                let group = r.group.as_deref().unwrap_or("");
                let mut out = if group.is_empty() { r.resource.to_lowercase() } else { format!("{}.{}", r.resource, group).to_lowercase() };
                if let Some(ns) = r.namespace.as_deref().filter(|n| !n.is_empty()) {
                    out.push('/');
                    out.push_str(ns);
                }
                out.push('/');
                out.push_str(&r.name);
                out
            }
            None => "<none>".to_string(),
        };
        vec![json!(a.metadata.name.clone().unwrap_or_default()), json!(parent)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_address_names_are_canonical_ips() {
        assert!(ip_name("10.43.0.1").is_empty());
        assert!(ip_name("fd00::1").is_empty());
        assert_eq!(ip_name("fd00:0::1"), ["must be a canonical format IP address (\"fd00::1\")"]);
        assert!(!ip_name("web").is_empty());
    }

    #[test]
    fn the_parentref_column_reads_as_upstreams() {
        let a: IPAddress = serde_json::from_value(json!({
            "metadata": {"name": "10.43.0.1"},
            "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "kubernetes"}}
        }))
        .unwrap();
        assert_eq!(IPAddresses.cells(&a, Timestamp::now())[1], json!("services/default/kubernetes"));
    }
}
