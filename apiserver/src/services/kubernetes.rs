//! The `kubernetes` Service in `default` and the endpoints of the apiservers behind it, as
//! upstream's kubernetes-service controller and lease endpoint reconciler: the Service (cluster
//! IP the first address of the service range, port `https` 443 to the apiserver's port, labels
//! component=apiserver and provider=kubernetes) is made at start and put back when changed; each
//! server keeps a lease key `masterleases/<its address>` with a short TTL, renewed every
//! interval, and writes the Endpoints and EndpointSlice `kubernetes` with the addresses of all
//! live leases. A server that stops removes its lease, one that dies has it expire. The
//! EndpointSlice and Endpoints controllers leave this selectorless Service alone.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::Instrument;

use crate::api::Api;
use crate::rest::{Subresource, WriteOptions};
use crate::status::ApiError;

/// How often the Service and the endpoints are reconciled and the lease renewed (upstream's 10 s).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How long a lease lives without renewal (upstream's master endpoint reconcile TTL).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// The `kubernetes` Service this server wants, for the API listening on `port`.
pub fn service(cluster_ip: Option<IpAddr>, port: u16) -> Value {
    let mut spec = json!({
        "type": "ClusterIP", "sessionAffinity": "None",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]
    });
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip.to_string());
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": spec
    })
}

/// Creates the `kubernetes` Service if it is missing, or puts its ports and type back.
pub async fn ensure_service(api: &Api) -> Result<(), ApiError> {
    let res = api.resource("", "services")?;
    let port = api.config.endpoint.map(|(_, p)| p).unwrap_or(6443);
    let want = service(api.services.network.kubernetes_ip(), port);
    match api.get(&res, Some("default"), "kubernetes", None).await {
        Err(e) if e.code == 404 => match api.create(&res, Some("default"), want, &WriteOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
        Ok(current) => {
            let same = current.pointer("/spec/ports") == want.pointer("/spec/ports") && current.pointer("/spec/type") == want.pointer("/spec/type");
            if same {
                return Ok(());
            }
            let mut fixed = current.clone();
            fixed["spec"]["ports"] = want["spec"]["ports"].clone();
            fixed["spec"]["type"] = json!("ClusterIP");
            api.update(&res, Some("default"), "kubernetes", fixed, Subresource::Main, &WriteOptions::default()).await.map(|_| ())
        }
    }
}

fn lease_key(api: &Api, ip: &IpAddr) -> String {
    format!("{}masterleases/{ip}", api.store_prefix())
}

/// Writes (or renews) this server's lease.
async fn renew_lease(api: &Api, ip: &IpAddr) -> Result<(), berth_store::StoreError> {
    let key = lease_key(api, ip);
    let value = bytes::Bytes::from(json!({"ip": ip.to_string()}).to_string());
    match api.store.get(&key, None).await? {
        Some(kv) => api.store.update(&key, value, kv.mod_revision, Some(LEASE_TTL)).await.map(|_| ()),
        None => api.store.create(&key, value, Some(LEASE_TTL)).await.map(|_| ()),
    }
}

/// The addresses of the live leases, sorted.
async fn leased(api: &Api) -> Result<Vec<IpAddr>, berth_store::StoreError> {
    let prefix = format!("{}masterleases/", api.store_prefix());
    let list = api.store.list(&prefix, Default::default()).await?;
    let mut ips: Vec<IpAddr> = list.kvs.iter().filter_map(|kv| kv.key.strip_prefix(&prefix)?.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The Endpoints `kubernetes` for `ips` on `port`.
pub fn endpoints(ips: &[IpAddr], port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{
            "addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
        }]
    })
}

/// The EndpointSlice `kubernetes` for `ips` on `port` (as upstream's endpoints adapter makes it).
pub fn endpoint_slice(ips: &[IpAddr], port: u16) -> Value {
    let v6 = !ips.is_empty() && ips.iter().all(|ip| ip.is_ipv6());
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    })
}

/// Makes the object `want` (Endpoints or EndpointSlice `kubernetes`) stored, comparing `fields`.
async fn put(api: &Api, group: &str, plural: &str, want: Value, fields: &[&str]) -> Result<(), ApiError> {
    let res = api.resource(group, plural)?;
    match api.get(&res, Some("default"), "kubernetes", None).await {
        Err(e) if e.code == 404 => api.create(&res, Some("default"), want, &WriteOptions::default()).await.map(|_| ()),
        Err(e) => Err(e),
        Ok(current) => {
            let labels_ok = want["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| current.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v));
            if labels_ok && fields.iter().all(|f| current.get(*f) == want.get(*f)) {
                return Ok(());
            }
            let mut fixed = current.clone();
            for f in fields {
                fixed[*f] = want[*f].clone();
            }
            for (k, v) in want["metadata"]["labels"].as_object().into_iter().flatten() {
                if !fixed["metadata"]["labels"].is_object() {
                    fixed["metadata"]["labels"] = json!({});
                }
                fixed["metadata"]["labels"][k] = v.clone();
            }
            api.update(&res, Some("default"), "kubernetes", fixed, Subresource::Main, &WriteOptions::default()).await.map(|_| ())
        }
    }
}

/// Writes the endpoints for the live leases (never none: with no lease listed, nothing changes).
async fn reconcile_endpoints(api: &Api, port: u16) -> Result<(), String> {
    let ips = leased(api).await.map_err(|e| e.to_string())?;
    if ips.is_empty() {
        return Err("no API server addresses listed in storage, refusing to erase all endpoints for the kubernetes Service".into());
    }
    put(api, "", "endpoints", endpoints(&ips, port), &["subsets"]).await.map_err(|e| e.message)?;
    put(api, "discovery.k8s.io", "endpointslices", endpoint_slice(&ips, port), &["addressType", "endpoints", "ports"]).await.map_err(|e| e.message)
}

/// One round: the Service, this server's lease, the endpoints.
pub async fn reconcile(api: &Api) {
    if let Err(e) = ensure_service(api).await {
        tracing::warn!(error = %e.message, "reconciling the kubernetes Service");
    }
    let Some((ip, port)) = api.config.endpoint else { return };
    if let Err(e) = renew_lease(api, &ip).await {
        tracing::warn!(error = %e, "renewing the apiserver endpoint lease");
    }
    if let Err(e) = reconcile_endpoints(api, port).await {
        tracing::warn!(error = %e, "reconciling the kubernetes endpoints");
    }
}

/// Reconciles every [`INTERVAL`] while the API lives.
pub fn spawn(api: &Arc<Api>) {
    let api = Arc::downgrade(api);
    tokio::spawn(
        async move {
            loop {
                let Some(api) = api.upgrade() else { return };
                reconcile(&api).await;
                drop(api);
                tokio::time::sleep(INTERVAL).await;
            }
        }
        .instrument(tracing::info_span!("kubernetes_service")),
    );
}

/// Removes this server's lease and rewrites the endpoints without it (a clean stop).
pub async fn remove_endpoint(api: &Api) {
    let Some((ip, port)) = api.config.endpoint else { return };
    let _ = api.store.delete(&lease_key(api, &ip), None).await;
    if let Err(e) = reconcile_endpoints(api, port).await {
        tracing::debug!(error = %e, "removing this apiserver from the kubernetes endpoints");
    }
}
