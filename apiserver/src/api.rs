//! The API core that every door calls: the store, the resource table and one watch cache per
//! resource, plus start-up (watch caches primed, the default namespaces and the `kubernetes`
//! service and the system priority classes created, terminating namespaces finalized). The verbs themselves live in `rest/`;
//! HTTP is an adapter over them (`router`).

use std::collections::HashMap;
use std::sync::Arc;
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { bookmark_interval: Duration::from_secs(60), advertise_address: "127.0.0.1:6443".into() }
    }
}

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct Api {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Registry,
    pub(crate) caches: HashMap<String, Arc<WatchCache>>,
    pub(crate) config: ApiConfig,
    pub(crate) store_prefix: String,
}

impl Api {
    /// The API over `store`, its watch caches started and primed.
    pub async fn start(store: Arc<dyn Store>, config: ApiConfig) -> Result<Arc<Self>, ApiError> {
        let registry = Registry::builtin();
        let store_prefix = store.prefix().to_string();
        let mut caches = HashMap::new();
        // one cache per stored kind: a version served from another's storage shares its cache
        for r in registry.all().iter().filter(|r| r.view.is_none()) {
            let cache = WatchCache::new(r.clone(), &store_prefix);
            cache.start(store.clone());
            caches.insert(r.storage.to_string(), cache);
        }
        let api = Arc::new(Api { store, registry, caches, config, store_prefix });
        let now = api.store.current_revision().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        for cache in api.caches.values() {
            if !cache.wait_for(now, Duration::from_secs(30)).await {
                return Err(ApiError::unavailable(format!("the watch cache of {} did not start", cache.res.qualified())));
            }
        }
        api.bootstrap().await?;
        Ok(api)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn cache(&self, res: &Resource) -> Result<&Arc<WatchCache>, ApiError> {
        self.caches.get(res.storage).ok_or_else(|| ApiError::internal(format!("no watch cache for {}", res.qualified())))
    }

    pub(crate) fn resource(&self, group: &str, plural: &str) -> Result<Arc<Resource>, ApiError> {
        self.registry
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
        let services = self.resource("", "services")?;
        let kubernetes = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        });
        match self.create(&services, Some("default"), kubernetes, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError { code: 409, .. }) => {}
            Err(e) => return Err(e),
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
        self.finalize_terminating_namespaces().await;
        Ok(())
    }
}
