//! The resource metrics API (metrics.k8s.io/v1beta1: NodeMetrics, PodMetrics), what
//! metrics-server serves, inside the apiserver: every `--metric-resolution` the scraper
//! ([`scrape`]) reads each node's kubelet /metrics/resource over HTTPS with the apiserver's
//! kubelet client certificate, [`decode`]s it and keeps the last two points of every node and
//! container ([`points`]); [`serve`] answers get and list from them, with the labels (and
//! label selectors) of the Node and Pod objects. Nothing is stored: the two resources are in
//! the resource table (discovery, RBAC, OpenAPI) with `resource_metrics` set, and the REST
//! layer hands their requests here.

pub mod decode;
pub mod points;
mod scrape;
pub(crate) mod serve;
pub mod types;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::resources::Resource;
use crate::strategy::Typed;

/// metrics-server's default `--metric-resolution` (as its deployment manifest sets it).
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(15);

/// The group of the resource metrics API.
pub const GROUP: &str = "metrics.k8s.io";
const VERBS: &[&str] = &["get", "list"];

/// The scraper's state: its resolution and the points it keeps.
pub struct ResourceMetrics {
    pub resolution: Duration,
    pub(crate) points: RwLock<points::Points>,
}

impl ResourceMetrics {
    pub fn new(resolution: Duration) -> Arc<ResourceMetrics> {
        Arc::new(ResourceMetrics { resolution, points: RwLock::new(points::Points::new(resolution)) })
    }
}

fn resource(kind: &'static str, plural: &'static str, namespaced: bool, strategy: Box<dyn crate::strategy::Strategy>) -> Resource {
    Resource {
        group: GROUP,
        version: "v1beta1",
        kind,
        plural,
        singular: "",
        short_names: &[],
        categories: &[],
        namespaced,
        verbs: VERBS,
        storage: plural,
        status: false,
        scale: None,
        actions: &[],
        ttl: None,
        return_deleted: false,
        view: None,
        deprecation: None,
        custom: false,
        terminating: false,
        review: false,
        approval: false,
        finalize: false,
        resource_metrics: true,
        strategy,
    }
}

/// The two resources of metrics.k8s.io/v1beta1, in discovery order.
pub fn resources() -> Vec<Resource> {
    vec![
        resource("NodeMetrics", "nodes", false, Box::new(Typed(types::NodeMetricsKind))),
        resource("PodMetrics", "pods", true, Box::new(Typed(types::PodMetricsKind))),
    ]
}

/// The ClusterRole metrics-server's installation brings (k3s ships it too): reading the
/// resource metrics, aggregated into `view`, `edit` and `admin`.
pub fn cluster_roles() -> Vec<serde_json::Value> {
    vec![serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "system:aggregated-metrics-reader",
            "labels": {
                "k8s-app": "metrics-server",
                "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                "rbac.authorization.k8s.io/aggregate-to-view": "true",
            },
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": [{"apiGroups": [GROUP], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}],
    })]
}

/// Starts the scraper of `api` (which has resource metrics).
pub(crate) fn spawn(api: &Arc<crate::api::Api>) {
    if let Some(m) = api.resource_metrics.clone() {
        scrape::spawn(api, m);
    }
}
