//! The API core that every door calls: the store, the resource table and one watch cache per
//! resource, plus start-up (watch caches primed, the default namespaces and the system priority
//! classes created, the service address allocators, their repair loops and the `kubernetes`
//! Service started (`services`), terminating namespaces finalized, the stored CRDs' custom
//! resources served, the CRD controller and the legacy token controller started, then the
//! controllers admission relies on, and the resource metrics scraper when it is on). The table and the caches of
//! custom resources change at run time (`crd::controller`). The verbs themselves live in `rest/`;
//! HTTP is an adapter over them (`router`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_store::Store;
use serde_json::json;

use crate::cache::WatchCache;
use crate::resources::{Registry, Resource};
use crate::rest::WriteOptions;
use crate::status::ApiError;

/// Settings of the API core.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// The address clients reach the apiserver at (discovery's serverAddressByClientCIDRs).
    pub advertise_address: String,
    /// The cluster CA (PEM), published in every namespace as the `kube-root-ca.crt` ConfigMap.
    pub ca_pem: Option<String>,
    /// Token authenticators and the service account signing key.
    pub authn: crate::authn::Config,
    /// The cluster CA as the signer of CertificateSigningRequests. With it the API also approves
    /// node certificates and keeps kube-public/cluster-info (`crate::certificates`); without it
    /// (tests of the API alone) requests stay pending.
    pub signer: Option<Arc<crate::certificates::signer::Signer>>,
    /// The TLS client of kubelet connections (logs, exec, nodes/proxy), with the apiserver's
    /// kubelet client certificate (None: no client certificate).
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// The audit log (None: no auditing).
    pub audit: Option<Arc<crate::audit::Auditor>>,
    /// The service CIDRs and the node port range (`--service-cidr`, `--service-node-port-range`).
    pub service_network: crate::services::ServiceNetwork,
    /// This server's address and port in the `kubernetes` Service's endpoints (None: no
    /// endpoints are written, as for an API without a listener).
    pub endpoint: Option<(std::net::IpAddr, u16)>,
    /// Serve the resource metrics API (metrics.k8s.io), scraping the kubelets this often
    /// (metrics-server's `--metric-resolution`); None: not served.
    pub resource_metrics: Option<Duration>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bookmark_interval: Duration::from_secs(60),
            advertise_address: "127.0.0.1:6443".into(),
            ca_pem: None,
            authn: Default::default(),
            signer: None,
            kubelet_tls: None,
            audit: None,
            service_network: Default::default(),
            endpoint: None,
            resource_metrics: None,
        }
    }
}

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct Api {
    pub(crate) store: Arc<dyn Store>,
    /// The served table, swapped when CustomResourceDefinitions change.
    registry: RwLock<Arc<Registry>>,
    /// The watch caches by storage segment (those of custom resources come and go with their CRDs).
    caches: RwLock<HashMap<String, Arc<WatchCache>>>,
    /// What the CRD controller keeps between its passes.
    pub(crate) crds: tokio::sync::Mutex<crate::crd::controller::State>,
    pub(crate) config: ApiConfig,
    pub(crate) store_prefix: String,
    /// The admission plugins every write passes.
    pub(crate) admission: crate::admission::Chain,
    /// Who requests are from (`crate::authn`).
    pub(crate) authn: crate::authn::Authn,
    /// The revision of this server's last write per resource (the store goes through it).
    pub(crate) writes: Arc<crate::written::WriteTracking>,
    /// The cluster IP and node port allocators Service writes go through.
    pub(crate) services: Arc<crate::services::alloc::Allocators>,
    /// The resource metrics the API serves (`crate::metrics`), when it serves them.
    pub(crate) resource_metrics: Option<Arc<crate::metrics::ResourceMetrics>>,
}

impl Api {
    /// The API over `store`, its watch caches started and primed.
    pub async fn start(store: Arc<dyn Store>, config: ApiConfig) -> Result<Arc<Self>, ApiError> {
        let writes = Arc::new(crate::written::WriteTracking::new(store));
        let store: Arc<dyn Store> = writes.clone();
        let registry = Registry::builtin_with(config.resource_metrics.is_some());
        let authn = crate::authn::Authn::new(config.authn.clone()).map_err(ApiError::internal)?;
        let store_prefix = store.prefix().to_string();
        // Taken before the caches list: each cache's first list is at least this new, so waiting
        // for it needs no event (a quiet resource on etcd 3.4 may see none for minutes while
        // another server writes elsewhere).
        let now = store.current_revision().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        let mut caches = HashMap::new();
        // one cache per stored kind: a version served from another's storage shares its cache
        for r in registry.all().iter().filter(|r| r.view.is_none() && !r.review && !r.resource_metrics) {
            let cache = WatchCache::new(r.clone(), &store_prefix);
            cache.start(store.clone());
            caches.insert(r.storage.to_string(), cache);
        }
        let services = Arc::new(crate::services::allocators(config.service_network.clone(), store.clone()));
        let resource_metrics = config.resource_metrics.map(crate::metrics::ResourceMetrics::new);
        let api = Arc::new(Api {
            resource_metrics,
            services,
            store,
            registry: RwLock::new(Arc::new(registry)),
            caches: RwLock::new(caches),
            crds: Default::default(),
            config,
            store_prefix,
            admission: Default::default(),
            authn,
            writes,
        });
        let caches: Vec<Arc<WatchCache>> = api.caches.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for cache in caches {
            if !cache.wait_for(now, Duration::from_secs(30)).await {
                return Err(ApiError::unavailable(format!("the watch cache of {} did not start", cache.res.qualified())));
            }
        }
        // the custom resources of the stored CRDs are served before the first request
        crate::crd::controller::reconcile(&api).await;
        crate::crd::controller::spawn(&api);
        api.bootstrap().await?;
        crate::services::start(&api).await;
        crate::services::kubernetes::ensure_service(&api).await?;
        crate::services::kubernetes::spawn(&api);
        crate::authz::bootstrap::reconcile(&api).await?;
        crate::authz::aggregation::spawn(&api);
        crate::admission::spawn_controllers(&api);
        crate::authn::legacy::spawn(&api);
        crate::metrics::spawn(&api);
        if let Some(signer) = api.config.signer.clone() {
            crate::certificates::controller::spawn(&api, signer);
            if let Some(ca) = api.config.ca_pem.clone() {
                crate::certificates::cluster_info::spawn(&api, format!("https://{}", api.config.advertise_address), ca);
            }
        }
        Ok(api)
    }

    /// The cluster CA (PEM), when the API has one.
    pub fn ca_pem(&self) -> Option<&str> {
        self.config.ca_pem.as_deref()
    }

    /// The table served now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `registry` from now on.
    pub(crate) fn set_registry(&self, registry: Registry) {
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(registry);
    }

    pub(crate) fn cache(&self, res: &Resource) -> Result<Arc<WatchCache>, ApiError> {
        self.caches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(res.storage)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("no watch cache for {}", res.qualified())))
    }

    /// Starts (and keeps) a watch cache for `res`'s storage; None when there is one already.
    pub(crate) fn add_cache(&self, res: Arc<Resource>) -> Option<(Arc<WatchCache>, tokio::task::JoinHandle<()>)> {
        let mut caches = self.caches.write().unwrap_or_else(|e| e.into_inner());
        if caches.contains_key(res.storage) {
            return None;
        }
        let storage = res.storage;
        let cache = WatchCache::new(res, &self.store_prefix);
        let task = cache.start(self.store.clone());
        caches.insert(storage.to_string(), cache.clone());
        Some((cache, task))
    }

    /// Drops the watch cache of storage segment `storage`.
    pub(crate) fn remove_cache(&self, storage: &str) -> Option<Arc<WatchCache>> {
        self.caches.write().unwrap_or_else(|e| e.into_inner()).remove(storage)
    }

    pub(crate) fn store_prefix(&self) -> &str {
        &self.store_prefix
    }

    pub(crate) fn resource(&self, group: &str, plural: &str) -> Result<Arc<Resource>, ApiError> {
        self.registry()
            .all()
            .iter()
            .find(|r| r.group == group && r.plural == plural && r.view.is_none())
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("{plural} is not served")))
    }

    /// The objects every cluster starts with.
    async fn bootstrap(self: &Arc<Self>) -> Result<(), ApiError> {
        let namespaces = self.resource("", "namespaces")?;
        for ns in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(&namespaces, None, obj, &WriteOptions::default()).await {
                Ok(_) => tracing::info!(namespace = ns, "created"),
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        let classes = self.resource("scheduling.k8s.io", "priorityclasses")?;
        for (name, value, description) in crate::strategy::priorityclass::SYSTEM_PRIORITY_CLASSES {
            let obj =
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "description": description});
            match self.create(&classes, None, obj, &WriteOptions::default()).await {
                Ok(_) | Err(ApiError { code: 409, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
