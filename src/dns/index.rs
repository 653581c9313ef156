//! The cluster's Services and EndpointSlices as the DNS answers from them: each Service with
//! its ready endpoints (merged from its slices, deduplicated), by namespace and name, and the
//! reverse map from cluster IPs and endpoint addresses to names. Kept current by the watches
//! (`super::watch`), one change at a time; read by every query under a read lock (a lookup is
//! two hash probes). Only what DNS needs is kept, not the objects.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::name::dashed;

/// (namespace, name) of an object.
pub type Key = (String, String);

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A port of a Service or of an EndpointSlice: name ("" when unnamed), protocol (lower-cased,
/// as it appears in an SRV name) and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// How a Service's name resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// To its cluster IPs.
    ClusterIp(Vec<IpAddr>),
    /// To its ready endpoints (clusterIP None).
    Headless,
    /// To a CNAME (type ExternalName).
    ExternalName(Name),
}

/// What DNS needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub kind: Kind,
    pub ports: Vec<Port>,
}

/// The Service's key and what DNS needs of it; None for an object without a name.
pub fn service_info(svc: &Service) -> Option<(Key, ServiceInfo)> {
    let key = (svc.metadata.namespace.clone()?, svc.metadata.name.clone()?);
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let mut target = Name::from_ascii(spec.external_name.as_deref().unwrap_or_default()).ok()?;
        target.set_fqdn(true);
        Kind::ExternalName(target)
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let ips = match spec.cluster_ips.as_ref().filter(|ips| !ips.is_empty()) {
            Some(ips) => ips.clone(),
            None => spec.cluster_ip.into_iter().collect(),
        };
        Kind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Port {
                name: p.name.unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some((key, ServiceInfo { kind, ports }))
}

/// What DNS needs of an EndpointSlice: its Service, its ready endpoints (addresses and
/// hostname) and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub service: String,
    /// Each ready address with its endpoint's hostname.
    pub endpoints: Vec<(IpAddr, Option<String>)>,
    pub ports: Arc<[Port]>,
}

/// The slice's key (namespace, slice name) and what DNS needs of it; None for a slice of no
/// Service. Endpoints whose `ready` condition is false are left out (an unset one is ready, as
/// the API says consumers should take it); FQDN slices carry no addresses.
pub fn slice_info(slice: &EndpointSlice) -> Option<(Key, SliceInfo)> {
    let key = (slice.metadata.namespace.clone()?, slice.metadata.name.clone()?);
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let endpoints = if slice.address_type == "FQDN" {
        vec![]
    } else {
        slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| {
                let host = e.hostname.clone().filter(|h| !h.is_empty());
                e.addresses.iter().filter_map(move |a| Some((a.parse().ok()?, host.clone())))
            })
            .collect()
    };
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    Some((key, SliceInfo { service, endpoints, ports }))
}

/// A ready endpoint of a Service, for one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// Its label under the Service: the hostname, else the dashed address.
    pub host: String,
    /// `<host>.<svc>.<ns>.svc.<zone>.` (shared with the reverse map)
    pub fqdn: Arc<Name>,
    /// The ports of the slice it is in.
    pub ports: Arc<[Port]>,
}

/// A Service as DNS answers for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<svc>.<ns>.svc.<zone>.` (shared with the reverse map)
    pub fqdn: Arc<Name>,
    pub kind: Kind,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
}

/// The names an address stands for: Services whose cluster IP it is, endpoints that have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reverse {
    pub services: Vec<Arc<Name>>,
    pub endpoints: Vec<Arc<Name>>,
}

/// The records of the zone, and what they are made from.
#[derive(Debug)]
pub struct Records {
    /// The zone, as text with its trailing dot (`cluster.local.`).
    zone: String,
    services: HashMap<Key, ServiceInfo>,
    slices: HashMap<Key, SliceInfo>,
    /// Each Service's slices by name.
    slices_of: HashMap<Key, BTreeSet<String>>,
    /// namespace → service name → entry.
    entries: HashMap<String, HashMap<String, Entry>>,
    reverse: HashMap<IpAddr, Reverse>,
}

impl Records {
    /// Empty records of `zone` (e.g. `cluster.local`).
    pub fn new(zone: &str) -> Records {
        Records {
            zone: format!("{}.", zone.trim_end_matches('.')),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            entries: HashMap::new(),
            reverse: HashMap::new(),
        }
    }

    /// The Service `name` in `namespace`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Entry> {
        self.entries.get(namespace)?.get(name)
    }

    /// Whether any Service lives in `namespace` (the DNS's view of the namespaces that exist).
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.entries.contains_key(namespace)
    }

    /// The names `ip` stands for.
    pub fn reverse(&self, ip: &IpAddr) -> Option<&Reverse> {
        self.reverse.get(ip)
    }

    /// How many Services and endpoint addresses are indexed.
    pub fn counts(&self) -> (usize, usize) {
        let services = self.entries.values().map(HashMap::len).sum();
        let endpoints = self.entries.values().flat_map(HashMap::values).map(|e| e.endpoints.len()).sum();
        (services, endpoints)
    }

    pub fn apply_service(&mut self, svc: &Service) {
        if let Some((key, info)) = service_info(svc) {
            if self.services.get(&key) != Some(&info) {
                self.services.insert(key.clone(), info);
                self.rebuild(&key);
            }
        }
    }

    pub fn delete_service(&mut self, key: &Key) {
        if self.services.remove(key).is_some() {
            self.rebuild(key);
        }
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some((key, info)) = slice_info(slice) else {
            // a slice that lost its service label no longer counts
            if let (Some(ns), Some(name)) = (&slice.metadata.namespace, &slice.metadata.name) {
                self.delete_slice(&(ns.clone(), name.clone()));
            }
            return;
        };
        if self.slices.get(&key) == Some(&info) {
            return;
        }
        let owner = (key.0.clone(), info.service.clone());
        let old = self.slices.insert(key.clone(), info);
        if let Some(old) = old.filter(|o| o.service != owner.1) {
            self.unlink_slice(&key, &old.service);
        }
        self.slices_of.entry(owner.clone()).or_default().insert(key.1.clone());
        self.rebuild(&owner);
    }

    pub fn delete_slice(&mut self, key: &Key) {
        if let Some(old) = self.slices.remove(key) {
            self.unlink_slice(key, &old.service);
        }
    }

    fn unlink_slice(&mut self, key: &Key, service: &str) {
        let owner = (key.0.clone(), service.to_string());
        if let Some(set) = self.slices_of.get_mut(&owner) {
            set.remove(&key.1);
            if set.is_empty() {
                self.slices_of.remove(&owner);
            }
        }
        self.rebuild(&owner);
    }

    /// Replaces every Service by a complete list (a relist).
    pub fn replace_services(&mut self, list: &[Service]) {
        let keep: BTreeSet<Key> = list.iter().filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?))).collect();
        let gone: Vec<Key> = self.services.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for k in &gone {
            self.delete_service(k);
        }
        for s in list {
            self.apply_service(s);
        }
    }

    /// Replaces every EndpointSlice by a complete list (a relist).
    pub fn replace_slices(&mut self, list: &[EndpointSlice]) {
        let keep: BTreeSet<Key> = list.iter().filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?))).collect();
        let gone: Vec<Key> = self.slices.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for k in &gone {
            self.delete_slice(k);
        }
        for s in list {
            self.apply_slice(s);
        }
    }

    /// Makes the entry of Service `key` (and its reverse names) match its Service and slices.
    fn rebuild(&mut self, key: &Key) {
        let new = self.services.get(key).and_then(|info| self.build(key, info));
        let old = match self.entries.get_mut(&key.0) {
            Some(by_name) => by_name.remove(&key.1),
            None => None,
        };
        if let Some(old) = &old {
            self.unindex_reverse(old);
        }
        match new {
            Some(entry) => {
                self.index_reverse(&entry);
                self.entries.entry(key.0.clone()).or_default().insert(key.1.clone(), entry);
            }
            None => {
                if self.entries.get(&key.0).is_some_and(HashMap::is_empty) {
                    self.entries.remove(&key.0);
                }
            }
        }
    }

    fn build(&self, key: &Key, info: &ServiceInfo) -> Option<Entry> {
        let (ns, svc) = key;
        let fqdn = Arc::new(Name::from_ascii(format!("{svc}.{ns}.svc.{}", self.zone)).ok()?);
        let mut endpoints: Vec<Endpoint> = vec![];
        let mut seen = std::collections::HashSet::new();
        for slice in self.slices_of.get(key).into_iter().flatten().filter_map(|n| self.slices.get(&(ns.clone(), n.clone()))) {
            for (ip, hostname) in &slice.endpoints {
                let host = hostname.clone().unwrap_or_else(|| dashed(ip));
                if !seen.insert((*ip, host.clone())) {
                    continue;
                }
                let Ok(name) = Name::from_ascii(format!("{host}.{svc}.{ns}.svc.{}", self.zone)) else { continue };
                endpoints.push(Endpoint { ip: *ip, host, fqdn: Arc::new(name), ports: slice.ports.clone() });
            }
        }
        endpoints.shrink_to_fit();
        Some(Entry { fqdn, kind: info.kind.clone(), ports: info.ports.clone(), endpoints })
    }

    fn index_reverse(&mut self, e: &Entry) {
        if let Kind::ClusterIp(ips) = &e.kind {
            for ip in ips {
                self.reverse.entry(*ip).or_default().services.push(e.fqdn.clone());
            }
        }
        for ep in &e.endpoints {
            self.reverse.entry(ep.ip).or_default().endpoints.push(ep.fqdn.clone());
        }
    }

    fn unindex_reverse(&mut self, e: &Entry) {
        let mut touched = vec![];
        if let Kind::ClusterIp(ips) = &e.kind {
            for ip in ips {
                if let Some(r) = self.reverse.get_mut(ip) {
                    if let Some(i) = r.services.iter().position(|n| Arc::ptr_eq(n, &e.fqdn)) {
                        r.services.remove(i);
                    }
                    touched.push(*ip);
                }
            }
        }
        for ep in &e.endpoints {
            if let Some(r) = self.reverse.get_mut(&ep.ip) {
                if let Some(i) = r.endpoints.iter().position(|n| Arc::ptr_eq(n, &ep.fqdn)) {
                    r.endpoints.remove(i);
                }
                touched.push(ep.ip);
            }
        }
        for ip in touched {
            if self.reverse.get(&ip).is_some_and(|r| r.services.is_empty() && r.endpoints.is_empty()) {
                self.reverse.remove(&ip);
            }
        }
    }
}

/// Which kinds the watches have listed completely at least once.
#[derive(Debug, Clone, Copy)]
pub enum Listed {
    Services,
    Slices,
}

/// The records behind a lock, with their sync state and the zone's serial (the Unix time of
/// the last change, as CoreDNS's).
#[derive(Debug)]
pub struct Index {
    records: RwLock<Records>,
    services_listed: AtomicBool,
    slices_listed: AtomicBool,
    serial: AtomicU32,
}

impl Index {
    pub fn new(zone: &str) -> Arc<Index> {
        Arc::new(Index {
            records: RwLock::new(Records::new(zone)),
            services_listed: AtomicBool::new(false),
            slices_listed: AtomicBool::new(false),
            serial: AtomicU32::new(now_secs()),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the records (a short critical section: one object's worth of work).
    pub fn update(&self, change: impl FnOnce(&mut Records)) {
        change(&mut self.records.write().unwrap_or_else(|e| e.into_inner()));
        self.serial.store(now_secs(), Ordering::Relaxed);
    }

    pub fn mark_listed(&self, which: Listed) {
        match which {
            Listed::Services => self.services_listed.store(true, Ordering::Release),
            Listed::Slices => self.slices_listed.store(true, Ordering::Release),
        }
    }

    /// Both kinds have been listed: an unknown name is known not to exist.
    pub fn synced(&self) -> bool {
        self.services_listed.load(Ordering::Acquire) && self.slices_listed.load(Ordering::Acquire)
    }

    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Relaxed)
    }
}

fn now_secs() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    pub fn slice(ns: &str, name: &str, service: &str, endpoints: serde_json::Value, ports: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports
        }))
        .unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn services_and_slices_make_entries_and_reverse_names() {
        let mut r = Records::new("cluster.local");
        r.apply_service(&svc(json!({"metadata": {"namespace": "shop", "name": "web"}, "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"], "ports": [{"name": "http", "port": 80}]}})));
        r.apply_service(&svc(json!({"metadata": {"namespace": "shop", "name": "db"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})));
        r.apply_service(&svc(json!({"metadata": {"namespace": "shop", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.com"}})));
        let eps = json!([
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "conditions": {"ready": false}},
            {"addresses": ["10.42.0.7"]}
        ]);
        r.apply_slice(&slice("shop", "db-abc", "db", eps, json!([{"name": "pg", "port": 5432, "protocol": "TCP"}])));
        let web = r.service("shop", "web").unwrap();
        assert_eq!(web.kind, Kind::ClusterIp(vec!["10.43.0.20".parse().unwrap()]));
        assert_eq!(*web.fqdn, name("web.shop.svc.cluster.local."));
        assert_eq!(web.ports, [Port { name: "http".into(), protocol: "tcp".into(), port: 80 }]);
        let db = r.service("shop", "db").unwrap();
        assert_eq!(db.kind, Kind::Headless);
        let hosts: Vec<_> = db.endpoints.iter().map(|e| (e.ip.to_string(), e.host.as_str())).collect();
        assert_eq!(hosts, [("10.42.0.5".to_string(), "db-0"), ("10.42.0.7".to_string(), "10-42-0-7")], "not-ready endpoints are left out");
        assert_eq!(*db.endpoints[0].fqdn, name("db-0.db.shop.svc.cluster.local."));
        assert_eq!(r.service("shop", "ext").unwrap().kind, Kind::ExternalName(name("www.example.com.")));
        assert_eq!(r.reverse(&"10.43.0.20".parse().unwrap()).unwrap().services, [Arc::new(name("web.shop.svc.cluster.local."))]);
        assert_eq!(r.reverse(&"10.42.0.5".parse().unwrap()).unwrap().endpoints, [Arc::new(name("db-0.db.shop.svc.cluster.local."))]);
        assert!(r.has_namespace("shop") && !r.has_namespace("default"));

        // the endpoint goes not-ready: it leaves the entry and the reverse map
        let eps = json!([{"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": false}}, {"addresses": ["10.42.0.7"]}]);
        r.apply_slice(&slice("shop", "db-abc", "db", eps, json!([])));
        assert_eq!(r.service("shop", "db").unwrap().endpoints.len(), 1);
        assert!(r.reverse(&"10.42.0.5".parse().unwrap()).is_none());

        // a relist without the slice and the web Service removes them
        let keep: Vec<Service> = ["db", "ext"]
            .iter()
            .map(|n| {
                let mut s = svc(json!({"metadata": {"namespace": "shop", "name": n}, "spec": {"clusterIP": "None"}}));
                if *n == "ext" {
                    s = svc(json!({"metadata": {"namespace": "shop", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.com"}}));
                }
                s
            })
            .collect();
        r.replace_services(&keep);
        r.replace_slices(&[]);
        assert!(r.service("shop", "web").is_none());
        assert!(r.service("shop", "db").unwrap().endpoints.is_empty());
        assert!(r.reverse(&"10.43.0.20".parse().unwrap()).is_none() && r.reverse(&"10.42.0.7".parse().unwrap()).is_none());
        r.delete_service(&("shop".into(), "db".into()));
        r.delete_service(&("shop".into(), "ext".into()));
        assert!(!r.has_namespace("shop"));
        assert_eq!(r.counts(), (0, 0));
    }

    #[test]
    fn endpoints_are_merged_across_slices_and_deduplicated() {
        let mut r = Records::new("cluster.local.");
        r.apply_service(&svc(json!({"metadata": {"namespace": "a", "name": "s"}, "spec": {"clusterIP": "None"}})));
        r.apply_slice(&slice("a", "s-1", "s", json!([{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]), json!([])));
        r.apply_slice(&slice("a", "s-2", "s", json!([{"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}]), json!([])));
        assert_eq!(r.service("a", "s").unwrap().endpoints.len(), 3);
        // a slice moved to another Service leaves the first
        r.apply_slice(&slice("a", "s-2", "other", json!([{"addresses": ["10.0.0.3"]}]), json!([])));
        assert_eq!(r.service("a", "s").unwrap().endpoints.len(), 2);
        // slices that arrive before their Service count once it does
        r.apply_service(&svc(json!({"metadata": {"namespace": "a", "name": "other"}, "spec": {"clusterIP": "None"}})));
        assert_eq!(r.service("a", "other").unwrap().endpoints.len(), 1);
    }
}
