//! The cluster IP repair loop (upstream's ipallocator-repair-controller): every Service's
//! cluster IPs must have an IPAddress naming it (missing ones are made, wrong references put
//! right, IPs outside every service CIDR reported), and every IPAddress the allocator made must
//! belong to a Service that lists it (leaked ones are deleted once older than a minute, the time
//! a Service create may hold an address before the Service is stored). Level-triggered: each
//! pass reads the store and acts on what differs; a pass runs at start and every few
//! seconds after.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::book::{self, LABEL_MANAGED_BY, MANAGER};
use super::cidr::Family;
use super::events;
use super::ip_allocator::Owner;
use crate::api::Api;
use crate::meta;
use crate::rest::WriteOptions;

const COMPONENT: &str = "ipallocator-repair-controller";
const PERIOD: Duration = Duration::from_secs(10);
/// How long an IPAddress may exist without its Service (upstream's 60 s request timeout).
const GRACE: Duration = Duration::from_secs(60);

pub fn spawn(api: &Arc<Api>) {
    let api = Arc::downgrade(api);
    tokio::spawn(
        async move {
            loop {
                let Some(api) = api.upgrade() else { return };
                if let Err(e) = pass(&api).await {
                    tracing::warn!(error = %e, "cluster IP repair");
                }
                drop(api);
                tokio::time::sleep(PERIOD).await;
            }
        }
        .instrument(tracing::info_span!("repair_cluster_ips")),
    );
}

fn cluster_ips(svc: &Value) -> Vec<String> {
    svc.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter(|s| *s != "None")
        .map(String::from)
        .collect()
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// One repair pass.
pub async fn pass(api: &Api) -> Result<(), String> {
    // Services first: every IPAddress of a listed Service was made before it, so is listed too
    let services = book::list_stored(api, "", "services").await?;
    let addresses = book::list_stored(api, "networking.k8s.io", "ipaddresses").await?;
    let by_ip: HashMap<String, &Value> = addresses.iter().map(|a| (meta::name(a).to_string(), a)).collect();
    let by_service: HashMap<String, &Value> = services.iter().map(|s| (key(meta::get(s, "namespace").unwrap_or(""), meta::name(s)), s)).collect();
    let mut cidrs = api.services.network.cidrs.clone();
    cidrs.extend(book::service_cidrs(api));
    let res = api.resource("networking.k8s.io", "ipaddresses").map_err(|e| e.message)?;
    for svc in &services {
        let (ns, name) = (meta::get(svc, "namespace").unwrap_or("").to_string(), meta::name(svc).to_string());
        let owner = Owner { namespace: ns.clone(), name: name.clone() };
        for ip in cluster_ips(svc) {
            let Ok(addr) = ip.parse::<IpAddr>() else {
                events::warn(api, COMPONENT, svc, "ClusterIPNotValid", &format!("Cluster IP {ip} is not a valid IP; please recreate Service")).await;
                continue;
            };
            let family = Family::of(&addr);
            if !cidrs.iter().any(|c| c.contains(&addr)) {
                let msg = format!("Cluster IP [{}]: {ip} is not within any configured Service CIDR; please recreate service", family.as_str());
                events::warn(api, COMPONENT, svc, "ClusterIPOutOfRange", &msg).await;
                continue;
            }
            match by_ip.get(&ip) {
                None => {
                    let msg = format!("Cluster IP [{}]: {ip} is not allocated; repairing", family.as_str());
                    events::warn(api, COMPONENT, svc, "ClusterIPNotAllocated", &msg).await;
                    tracing::warn!(service = %key(&ns, &name), %ip, "cluster IP not allocated; repairing");
                    create(api, &res, &addr, family, &owner).await;
                }
                Some(a) => {
                    let (rns, rname) = parent(a);
                    if a.pointer("/spec/parentRef/resource").and_then(Value::as_str) != Some("services") {
                        let msg = format!("the ClusterIP [{}]: {ip} for Service {ns}/{name} has a wrong reference; repairing", family.as_str());
                        events::warn(api, COMPONENT, svc, "ClusterIPNotAllocated", &msg).await;
                        recreate(api, &res, &addr, family, &owner).await;
                    } else if (rns.as_str(), rname.as_str()) != (ns.as_str(), name.as_str()) {
                        match by_service.get(&key(&rns, &rname)) {
                            Some(other) if cluster_ips(other).contains(&ip) => {
                                let msg = format!("Cluster IP [{}]:{ip} was assigned to multiple services; please recreate service", family.as_str());
                                events::warn(api, COMPONENT, svc, "ClusterIPAlreadyAllocated", &msg).await;
                            }
                            _ if older_than(a, GRACE) => {
                                let msg = format!("the ClusterIP [{}]: {ip} for Service {ns}/{name} has a wrong reference; repairing", family.as_str());
                                events::warn(api, COMPONENT, svc, "ClusterIPNotAllocated", &msg).await;
                                recreate(api, &res, &addr, family, &owner).await;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    for a in &addresses {
        if a.pointer("/metadata/labels").and_then(|l| l.get(LABEL_MANAGED_BY)).and_then(Value::as_str) != Some(MANAGER) {
            continue;
        }
        let ip = meta::name(a).to_string();
        let Ok(addr) = ip.parse::<IpAddr>() else { continue };
        if a.pointer("/spec/parentRef/resource").and_then(Value::as_str) != Some("services") {
            let msg = format!("IPAddress {ip} appears to have been modified, not referencing a Service: cleaning up");
            events::warn(api, COMPONENT, a, "IPAddressNotAllocated", &msg).await;
            let _ = book::release_ip(api, &addr).await;
            continue;
        }
        let (rns, rname) = parent(a);
        let lists = by_service.get(&key(&rns, &rname)).map(|s| cluster_ips(s).contains(&ip));
        if lists == Some(true) || !older_than(a, GRACE) {
            continue;
        }
        let (reason, msg) = match lists {
            None => ("IPAddressNotAllocated", format!("IPAddress: {ip} for Service {rns}/{rname} appears to have leaked: cleaning up")),
            _ => ("IPAddressWrongReference", format!("IPAddress: {ip} for Service {rns}/{rname} has a wrong reference; cleaning up")),
        };
        tracing::warn!(%ip, service = %key(&rns, &rname), reason, "releasing a leaked cluster IP");
        events::warn(api, COMPONENT, a, reason, &msg).await;
        let _ = book::release_ip(api, &addr).await;
    }
    Ok(())
}

fn parent(a: &Value) -> (String, String) {
    let r = a.pointer("/spec/parentRef").cloned().unwrap_or_default();
    (r.get("namespace").and_then(Value::as_str).unwrap_or("").to_string(), r.get("name").and_then(Value::as_str).unwrap_or("").to_string())
}

fn older_than(obj: &Value, age: Duration) -> bool {
    let Some(created) = meta::get(obj, "creationTimestamp").and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { return true };
    jiff::Timestamp::now().duration_since(created).as_secs() >= age.as_secs() as i64
}

async fn create(api: &Api, res: &Arc<crate::resources::Resource>, ip: &IpAddr, family: Family, owner: &Owner) {
    if let Err(e) = api.create(res, None, book::ip_address(ip, family, owner), &WriteOptions::default()).await {
        tracing::warn!(%ip, error = %e.message, "repairing a cluster IP");
    }
}

async fn recreate(api: &Api, res: &Arc<crate::resources::Resource>, ip: &IpAddr, family: Family, owner: &Owner) {
    let _ = book::release_ip(api, ip).await;
    create(api, res, ip, family, owner).await;
}
