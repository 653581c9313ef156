//! What a Service holds and how it gets it, as upstream's service REST storage (alloc.go): on
//! create, the IP family fields are settled (ipFamilyPolicy, ipFamilies from the cluster's
//! service CIDRs), cluster IPs are allocated (requested ones honoured if free and in range,
//! others picked), then node ports (NodePort and LoadBalancer services; ports of the same port
//! number share one, as TCP and UDP of DNS) and the health check node port (LoadBalancer with
//! externalTrafficPolicy Local). On update only what is new is allocated; what the old object
//! held and the new one does not is released once the update is stored. On delete everything
//! goes back. A failed write gives back what was taken for it ([`Held`]). The generic verbs call
//! this through [`Allocators`]; the address book and the port record live in `book.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use serde_json::Value;

use super::cidr::{Cidr, Family};
use super::ip_allocator::{self, AllocError, Owner};
use super::ports::{PortAllocator, PortError, Want};
use super::ServiceNetwork;
use crate::api::Api;
use crate::status::{go_raw, ApiError, FieldError};

/// What a write took and must give back when it does not happen (or what an object held and
/// must give back when it goes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub ips: Vec<IpAddr>,
    pub ports: Vec<i32>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.ports.is_empty()
    }

    /// What `svc` holds: its cluster IPs, node ports and health check node port.
    pub fn of(svc: &Service) -> Held {
        let Some(spec) = &svc.spec else { return Held::default() };
        let ips = spec.cluster_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
        let mut ports: BTreeSet<i32> = spec.ports.iter().flatten().filter_map(|p| p.node_port).filter(|p| *p != 0).collect();
        ports.extend(spec.health_check_node_port.filter(|p| *p != 0));
        Held { ips, ports: ports.into_iter().collect() }
    }

    /// What `self` has that `other` has not.
    fn minus(&self, other: &Held) -> Held {
        Held {
            ips: self.ips.iter().filter(|ip| !other.ips.contains(ip)).copied().collect(),
            ports: self.ports.iter().filter(|p| !other.ports.contains(p)).copied().collect(),
        }
    }
}

/// The allocators of one server: the service network and the node port record.
pub struct Allocators {
    pub network: ServiceNetwork,
    pub ports: PortAllocator,
}

fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() != Some("ExternalName") && spec.cluster_ip.as_deref() != Some("None")
}

fn needs_node_ports(spec: &ServiceSpec) -> bool {
    match spec.type_.as_deref() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

fn needs_health_check_port(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer") && spec.external_traffic_policy.as_deref() == Some("Local")
}

fn decode(obj: &Value) -> Result<Service, ApiError> {
    serde_json::from_value(obj.clone()).map_err(ApiError::internal)
}

fn encode(svc: &Service, obj: &mut Value) -> Result<(), ApiError> {
    *obj = serde_json::to_value(svc).map_err(ApiError::internal)?;
    Ok(())
}

impl Allocators {
    /// The CIDRs cluster IPs come from: the flag's and those of the ServiceCIDR objects.
    fn cidrs(&self, api: &Api) -> Vec<Cidr> {
        let mut out = self.network.cidrs.clone();
        for c in super::book::service_cidrs(api) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// The families of the cluster (the flag's CIDRs), primary first.
    fn families(&self) -> Vec<Family> {
        self.network.cidrs.iter().map(|c| c.family()).collect()
    }

    /// Allocates what a new Service needs, writing it into `obj`.
    pub async fn on_create(&self, api: &Api, obj: &mut Value, dry_run: bool) -> Result<Held, ApiError> {
        let mut svc = decode(obj)?;
        let held = self.allocate(api, &mut svc, &Held::default(), dry_run).await?;
        encode(&svc, obj)?;
        Ok(held)
    }

    /// Allocates what an updated Service needs and did not hold before: (taken now, to give
    /// back once the update is stored).
    pub async fn on_update(&self, api: &Api, new: &mut Value, old: &Value, dry_run: bool) -> Result<(Held, Held), ApiError> {
        let mut svc = decode(new)?;
        let before = Held::of(&decode(old)?);
        let taken = self.allocate(api, &mut svc, &before, dry_run).await?;
        encode(&svc, new)?;
        let after = Held::of(&svc);
        Ok((taken, before.minus(&after)))
    }

    /// Gives back what `held` names (a failed write's allocations, a deleted Service's).
    pub async fn release(&self, api: &Api, held: &Held) {
        for ip in &held.ips {
            if let Err(e) = super::book::release_ip(api, ip).await {
                tracing::warn!(%ip, error = %e, "releasing a cluster IP");
            }
        }
        if let Err(e) = self.ports.release(&held.ports).await {
            tracing::warn!(ports = ?held.ports, error = %e, "releasing node ports");
        }
    }

    /// Releases what the Service `obj` held (it is gone from the store).
    pub async fn on_delete(&self, api: &Api, obj: &Value) {
        if let Ok(svc) = decode(obj) {
            self.release(api, &Held::of(&svc)).await;
        }
    }

    async fn allocate(&self, api: &Api, svc: &mut Service, before: &Held, dry_run: bool) -> Result<Held, ApiError> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let owner = Owner { namespace: svc.metadata.namespace.clone().unwrap_or_default(), name: name.clone() };
        let has_selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty());
        let Some(spec) = svc.spec.as_mut() else { return Ok(Held::default()) };
        let invalid = |errs: Vec<FieldError>| ApiError::invalid_kind("Service", "", &name, &errs);
        init_ip_families(spec, has_selector, &self.families()).map_err(invalid)?;
        let mut taken = Held::default();
        let result = self.allocate_ips(api, spec, before, &owner, dry_run, &mut taken).await;
        let result = match result {
            Ok(()) => self.allocate_node_ports(spec, before, dry_run, &mut taken).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(taken),
            Err(e) => {
                if !dry_run {
                    self.release(api, &taken).await;
                }
                Err(match e {
                    Failure::Fields(errs) => invalid(errs),
                    Failure::Api(e) => e,
                })
            }
        }
    }

    async fn allocate_ips(&self, api: &Api, spec: &mut ServiceSpec, before: &Held, owner: &Owner, dry_run: bool, taken: &mut Held) -> Result<(), Failure> {
        if !needs_cluster_ip(spec) {
            return Ok(());
        }
        let cidrs = self.cidrs(api);
        let families: Vec<Family> = spec.ip_families.iter().flatten().filter_map(|f| Family::parse(f)).collect();
        let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        let requested = ips.clone();
        let book = super::book::ApiBook(api);
        for (i, family) in families.iter().enumerate() {
            match ips.get(i).filter(|ip| !ip.is_empty()).cloned() {
                Some(ip) => {
                    // unparsable addresses are validation's to report
                    let Ok(addr) = ip.parse::<IpAddr>() else { continue };
                    if before.ips.contains(&addr) {
                        continue;
                    }
                    match ip_allocator::allocate(&book, &cidrs, &addr, owner, dry_run).await {
                        Ok(()) if dry_run => {}
                        Ok(()) => taken.ips.push(addr),
                        Err(e) => {
                            let list = requested.iter().map(|s| berth_names::go_quote(s)).collect::<Vec<_>>().join(", ");
                            return Err(Failure::Fields(vec![FieldError::invalid(
                                "spec.clusterIPs",
                                go_raw(format!("[]string{{{list}}}")),
                                format!("failed to allocate IP {ip}: {e}"),
                            )]));
                        }
                    }
                }
                None => {
                    let addr = ip_allocator::allocate_next(&book, &cidrs, *family, owner, dry_run)
                        .await
                        .map_err(|e: AllocError| Failure::Api(ApiError::internal(format!("failed to allocate a serviceIP: {e}"))))?;
                    if !dry_run {
                        taken.ips.push(addr);
                    }
                    if i < ips.len() {
                        ips[i] = addr.to_string();
                    } else {
                        ips.push(addr.to_string());
                    }
                }
            }
        }
        spec.cluster_ip = ips.first().cloned();
        spec.cluster_ips = Some(ips);
        Ok(())
    }

    async fn allocate_node_ports(&self, spec: &mut ServiceSpec, before: &Held, dry_run: bool, taken: &mut Held) -> Result<(), Failure> {
        let all = needs_node_ports(spec);
        let ports = spec.ports.get_or_insert_with(Vec::new);
        // the first node port asked for per port number: ports of one number share it
        let mut by_number: BTreeMap<i32, i32> = BTreeMap::new();
        for p in ports.iter() {
            if let Some(np) = p.node_port.filter(|n| *n != 0) {
                by_number.entry(p.port).or_insert(np);
            }
        }
        // (index of the port or None for the health check port, what to allocate)
        let mut wants: Vec<(Option<usize>, Want)> = vec![];
        let mut any_for: BTreeMap<i32, usize> = BTreeMap::new();
        let mut asked: BTreeSet<i32> = BTreeSet::new();
        for (i, p) in ports.iter_mut().enumerate() {
            match p.node_port.filter(|n| *n != 0) {
                Some(np) => {
                    let shared = by_number.get(&p.port) == Some(&np) && asked.contains(&np);
                    if !before.ports.contains(&np) && !shared {
                        wants.push((Some(i), Want::Port(np)));
                        asked.insert(np);
                    }
                }
                None if !all => {}
                None => match by_number.get(&p.port) {
                    Some(np) => p.node_port = Some(*np),
                    None => {
                        if let std::collections::btree_map::Entry::Vacant(e) = any_for.entry(p.port) {
                            e.insert(wants.len());
                            wants.push((Some(i), Want::Any));
                        }
                    }
                },
            }
        }
        if needs_health_check_port(spec) {
            match spec.health_check_node_port.filter(|n| *n != 0) {
                Some(np) if before.ports.contains(&np) => {}
                Some(np) => wants.push((None, Want::Port(np))),
                None => wants.push((None, Want::Any)),
            }
        }
        if wants.is_empty() {
            return Ok(());
        }
        let request: Vec<Want> = wants.iter().map(|(_, w)| *w).collect();
        let got = self.ports.allocate(&request, dry_run).await.map_err(|(i, e)| {
            let (index, want) = wants[i];
            match (want, e) {
                (Want::Port(np), e @ (PortError::Allocated | PortError::NotInRange(_))) => {
                    let field = match index {
                        Some(i) => format!("spec.ports[{i}].nodePort"),
                        None => "spec.healthCheckNodePort".to_string(),
                    };
                    Failure::Fields(vec![FieldError::invalid(field, np, e.to_string())])
                }
                (_, e) => Failure::Api(ApiError::internal(format!("failed to allocate a nodePort: {e}"))),
            }
        })?;
        if !dry_run {
            taken.ports.extend(got.iter().copied());
        }
        let ports = spec.ports.get_or_insert_with(Vec::new);
        for ((index, want), port) in wants.iter().zip(got) {
            match (index, want) {
                (Some(i), Want::Any) => {
                    let number = ports[*i].port;
                    for p in ports.iter_mut().filter(|p| p.port == number && p.node_port.unwrap_or(0) == 0) {
                        p.node_port = Some(port);
                    }
                }
                (None, _) => spec.health_check_node_port = Some(port),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Api {
    /// The allocators writes of `res` go through (Services), if any.
    pub(crate) fn allocations(&self, res: &crate::resources::Resource) -> Option<&Allocators> {
        (res.group.is_empty() && res.plural == "services" && !res.custom).then_some(&*self.services)
    }
}

/// A failed allocation: field errors (422) or another error.
enum Failure {
    Fields(Vec<FieldError>),
    Api(ApiError),
}

/// Settles ipFamilyPolicy and ipFamilies as upstream's initIPFamilyFields for a cluster serving
/// `cluster` (primary first): from the cluster IPs asked for, the policy (SingleStack unless
/// two families are asked for; RequireDualStack for headless Services without a selector), and
/// the cluster's families. ExternalName Services have none.
pub fn init_ip_families(spec: &mut ServiceSpec, has_selector: bool, cluster: &[Family]) -> Result<(), Vec<FieldError>> {
    if spec.type_.as_deref() == Some("ExternalName") {
        spec.ip_families = None;
        spec.ip_family_policy = None;
        return Ok(());
    }
    // clusterIP and clusterIPs[0] are the same field
    match (spec.cluster_ip.as_deref().filter(|s| !s.is_empty()), spec.cluster_ips.as_ref().filter(|l| !l.is_empty())) {
        (Some(ip), None) => spec.cluster_ips = Some(vec![ip.to_string()]),
        (None, Some(list)) => spec.cluster_ip = list.first().cloned(),
        _ => {}
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let headless_selectorless = headless && !has_selector;
    let dual_cluster = cluster.len() > 1;
    let primary = cluster.first().copied().unwrap_or(Family::IPv4);
    let mut errs = vec![];
    let mut families: Vec<Family> = vec![];
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        match Family::parse(f) {
            Some(fam) if !headless && !cluster.contains(&fam) => {
                errs.push(FieldError::invalid(format!("spec.ipFamilies[{i}]"), f.as_str(), "not configured on this cluster"))
            }
            Some(fam) => families.push(fam),
            None => errs.push(FieldError::not_supported(format!("spec.ipFamilies[{i}]"), f.as_str(), &["IPv4", "IPv6"])),
        }
    }
    if !headless {
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
            let Ok(addr) = ip.parse::<IpAddr>() else { continue };
            let fam = Family::of(&addr);
            match families.get(i) {
                Some(f) if *f != fam => errs.push(FieldError::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    f.as_str(),
                    format!("does not match IP family of `clusterIPs[{i}]`: {}", fam.as_str()),
                )),
                Some(_) => {}
                None => families.push(fam),
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let policy = match spec.ip_family_policy.clone() {
        Some(p) => p,
        None if families.len() == 2 || headless_selectorless => "RequireDualStack".to_string(),
        None => "SingleStack".to_string(),
    };
    match policy.as_str() {
        "SingleStack" if families.len() > 1 => {
            return Err(vec![FieldError::invalid(
                "spec.ipFamilyPolicy",
                policy.as_str(),
                "must be RequireDualStack or PreferDualStack when multiple IP families are specified",
            )])
        }
        "RequireDualStack" if !dual_cluster && !headless_selectorless => {
            return Err(vec![FieldError::invalid("spec.ipFamilyPolicy", policy.as_str(), "this cluster is not configured for dual-stack services")])
        }
        "SingleStack" | "PreferDualStack" | "RequireDualStack" => {}
        other => return Err(vec![FieldError::not_supported("spec.ipFamilyPolicy", other, &["PreferDualStack", "RequireDualStack", "SingleStack"])]),
    }
    if families.is_empty() {
        families.push(primary);
    }
    if policy != "SingleStack" && families.len() < 2 && (dual_cluster || headless_selectorless) {
        families.push(families[0].other());
    }
    spec.ip_family_policy = Some(policy);
    spec.ip_families = Some(families.iter().map(|f| f.as_str().to_string()).collect());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ip: Option<&str>, policy: Option<&str>, families: &[&str]) -> ServiceSpec {
        ServiceSpec {
            cluster_ip: ip.map(String::from),
            ip_family_policy: policy.map(String::from),
            ip_families: (!families.is_empty()).then(|| families.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn single_stack_ipv4_is_the_default() {
        let mut s = spec(None, None, &[]);
        init_ip_families(&mut s, true, &[Family::IPv4]).unwrap();
        assert_eq!(s.ip_family_policy.as_deref(), Some("SingleStack"));
        assert_eq!(s.ip_families, Some(vec!["IPv4".to_string()]));
    }

    #[test]
    fn dual_stack_policies_on_single_and_dual_stack_clusters() {
        let mut s = spec(None, Some("PreferDualStack"), &[]);
        init_ip_families(&mut s, true, &[Family::IPv4]).unwrap();
        assert_eq!(s.ip_families, Some(vec!["IPv4".to_string()]));
        let mut s = spec(None, Some("PreferDualStack"), &[]);
        init_ip_families(&mut s, true, &[Family::IPv4, Family::IPv6]).unwrap();
        assert_eq!(s.ip_families, Some(vec!["IPv4".to_string(), "IPv6".to_string()]));
        let mut s = spec(None, Some("RequireDualStack"), &[]);
        let errs = init_ip_families(&mut s, true, &[Family::IPv4]).unwrap_err();
        assert_eq!(errs[0].detail, "this cluster is not configured for dual-stack services");
        let mut s = spec(None, None, &["IPv6"]);
        let errs = init_ip_families(&mut s, true, &[Family::IPv4]).unwrap_err();
        assert_eq!((errs[0].field.as_str(), errs[0].detail.as_str()), ("spec.ipFamilies[0]", "not configured on this cluster"));
    }

    #[test]
    fn headless_services_without_selector_require_dual_stack() {
        let mut s = spec(Some("None"), None, &[]);
        init_ip_families(&mut s, false, &[Family::IPv4]).unwrap();
        assert_eq!(s.ip_family_policy.as_deref(), Some("RequireDualStack"));
        assert_eq!(s.ip_families, Some(vec!["IPv4".to_string(), "IPv6".to_string()]));
        assert_eq!(s.cluster_ips, Some(vec!["None".to_string()]));
    }

    #[test]
    fn families_follow_requested_cluster_ips() {
        let mut s = spec(Some("10.43.0.5"), None, &[]);
        init_ip_families(&mut s, true, &[Family::IPv4, Family::IPv6]).unwrap();
        assert_eq!(s.ip_families, Some(vec!["IPv4".to_string()]));
        assert_eq!(s.cluster_ips, Some(vec!["10.43.0.5".to_string()]));
    }

    #[test]
    fn held_lists_ips_node_ports_and_the_health_check_port() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "spec": {"clusterIPs": ["10.43.0.9"], "healthCheckNodePort": 31000,
                     "ports": [{"port": 53, "protocol": "TCP", "nodePort": 30053}, {"port": 53, "protocol": "UDP", "nodePort": 30053}]}
        }))
        .unwrap();
        let held = Held::of(&svc);
        assert_eq!(held.ips, vec!["10.43.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(held.ports, vec![30053, 31000]);
    }
}
