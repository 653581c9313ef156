//! The stores behind the allocators: the IPAddress objects as the address book (claimed through
//! the API's own create, so the store's create-if-absent decides; looked up in the IPAddress
//! watch cache; released by deleting the object), the ServiceCIDR objects as the ranges, and
//! the node port record (upstream's `ranges/servicenodeports` key) as a compare-and-swap cell of
//! the store.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use berth_store::{Store, StoreError};
use serde_json::json;

use super::cidr::{Cidr, Family};
use super::ip_allocator::{AddressBook, ClaimError, Owner};
use super::ports::RangeStore;
use crate::api::Api;
use crate::meta;
use crate::rest::WriteOptions;

/// The label naming an IPAddress's family, and the one naming who manages it (upstream's).
pub const LABEL_FAMILY: &str = "ipaddress.kubernetes.io/ip-family";
pub const LABEL_MANAGED_BY: &str = "ipaddress.kubernetes.io/managed-by";
/// The manager of IPAddresses allocated to Services.
pub const MANAGER: &str = "ipallocator.k8s.io";

/// The IPAddress object of `ip` allocated to the Service `owner`.
pub fn ip_address(ip: &IpAddr, family: Family, owner: &Owner) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": ip.to_string(), "labels": {LABEL_FAMILY: family.as_str(), LABEL_MANAGED_BY: MANAGER}},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": owner.namespace, "name": owner.name}}
    })
}

/// The API as an address book.
pub struct ApiBook<'a>(pub &'a Api);

#[async_trait]
impl AddressBook for ApiBook<'_> {
    fn is_taken(&self, ip: &IpAddr) -> bool {
        let Ok(res) = self.0.resource("networking.k8s.io", "ipaddresses") else { return false };
        let Ok(cache) = self.0.cache(&res) else { return false };
        cache.get(&res.key(self.0.store_prefix(), None, &ip.to_string())).is_some()
    }

    async fn claim(&self, ip: &IpAddr, family: Family, owner: &Owner) -> Result<(), ClaimError> {
        let res = self.0.resource("networking.k8s.io", "ipaddresses").map_err(|e| ClaimError::Other(e.message))?;
        match self.0.create(&res, None, ip_address(ip, family, owner), &WriteOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Err(ClaimError::Taken),
            Err(e) => Err(ClaimError::Other(e.message)),
        }
    }

    async fn release(&self, ip: &IpAddr) -> Result<(), ClaimError> {
        release_ip(self.0, ip).await.map_err(|e| ClaimError::Other(e.to_string()))
    }
}

/// Deletes the IPAddress of `ip` (nothing when there is none).
pub async fn release_ip(api: &Api, ip: &IpAddr) -> Result<(), StoreError> {
    let Ok(res) = api.resource("networking.k8s.io", "ipaddresses") else { return Ok(()) };
    match api.store.delete(&res.key(api.store_prefix(), None, &ip.to_string()), None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The CIDRs of the ServiceCIDR objects that are not being deleted.
pub fn service_cidrs(api: &Api) -> Vec<Cidr> {
    let Ok(res) = api.resource("networking.k8s.io", "servicecidrs") else { return vec![] };
    let Ok(cache) = api.cache(&res) else { return vec![] };
    let (objects, _) = cache.snapshot(&res.prefix(api.store_prefix()));
    let mut out = vec![];
    for o in objects {
        let Ok(v) = o.value() else { continue };
        if meta::get(&v, "deletionTimestamp").is_some() {
            continue;
        }
        for c in v.pointer("/spec/cidrs").and_then(|c| c.as_array()).into_iter().flatten().filter_map(|c| c.as_str()) {
            if let Ok(cidr) = Cidr::parse(c) {
                out.push(cidr);
            }
        }
    }
    out
}

/// The node port record in the store.
pub struct StoreRange {
    pub store: Arc<dyn Store>,
    pub key: String,
}

#[async_trait]
impl RangeStore for StoreRange {
    async fn load(&self) -> Result<Option<(Vec<u8>, i64)>, String> {
        match self.store.get(&self.key, None).await {
            Ok(kv) => Ok(kv.map(|kv| (kv.value.to_vec(), kv.mod_revision))),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn save(&self, record: Vec<u8>, revision: Option<i64>) -> Result<bool, String> {
        let result = match revision {
            None => self.store.create(&self.key, record.into(), None).await,
            Some(rev) => self.store.update(&self.key, record.into(), rev, None).await,
        };
        match result {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// All stored objects of a resource, read from the store at its latest revision (not from a
/// watch cache, which may lag: the repair loops compare two kinds and must not see one older
/// than the other).
pub async fn list_stored(api: &Api, group: &str, plural: &str) -> Result<Vec<serde_json::Value>, String> {
    let res = api.resource(group, plural).map_err(|e| e.message)?;
    let list = api.store.list(&res.prefix(api.store_prefix()), berth_store::ListOptions::default()).await.map_err(|e| e.to_string())?;
    list.kvs.iter().map(crate::cache::decode_kv).collect()
}
