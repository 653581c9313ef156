//! What the autoscaler reads through the API besides its informers: the pods' resource metrics
//! (metrics.k8s.io/v1beta1 PodMetrics, summed over a pod's containers or of one container, in
//! milli-units, with upstream's errors), and the scale subresource of any kind that has one
//! (found through discovery, as upstream's REST mapper: the group's preferred version).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use super::replicas::{PodMetric, PodMetrics};

/// The message of an API error as upstream's clients print it (the Status message).
pub fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn metrics_api() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// The milli-value of a quantity string (0 when it does not parse).
fn milli(q: &Value) -> Option<i64> {
    q.as_str().and_then(|s| berth_names::quantity::Quantity::parse(s).ok()).map(|q| q.milli_value())
}

fn timestamp(item: &DynamicObject) -> Timestamp {
    item.data["timestamp"].as_str().and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One pod's metric from a PodMetrics item: the sum over its containers (None when one lacks
/// the resource or it has none), or `container`'s (an error when the pod has no such container).
fn pod_metric(item: &DynamicObject, resource: &str, container: Option<&str>) -> Result<Option<PodMetric>, String> {
    let at = timestamp(item);
    let window =
        item.data["window"].as_str().and_then(|w| berth_names::duration::parse_nanos(w).ok()).map(SignedDuration::from_nanos).unwrap_or(SignedDuration::ZERO);
    let containers = item.data["containers"].as_array().cloned().unwrap_or_default();
    let value = match container {
        Some(want) => {
            let Some(c) = containers.iter().find(|c| c["name"] == want) else {
                let ns = item.metadata.namespace.clone().unwrap_or_default();
                let name = item.metadata.name.clone().unwrap_or_default();
                return Err(format!("container {want} not present in metrics for pod {ns}/{name}"));
            };
            milli(&c["usage"][resource])
        }
        None if containers.is_empty() => None,
        None => containers.iter().map(|c| milli(&c["usage"][resource])).sum::<Option<i64>>(),
    };
    Ok(value.map(|value| PodMetric { value, at, window }))
}

/// The resource metrics of the pods `selector` (label selector text) picks in `namespace`,
/// and the time of the first.
pub async fn resource_metrics(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<(PodMetrics, Timestamp), String> {
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), namespace, &metrics_api());
    let list =
        api.list(&ListParams::default().labels(selector)).await.map_err(|e| format!("unable to fetch metrics from resource metrics API: {}", message(&e)))?;
    if list.items.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = PodMetrics::new();
    for item in &list.items {
        if let Some(m) = pod_metric(item, resource, container).map_err(|e| format!("failed to get container metrics: {e}"))? {
            out.insert(item.metadata.name.clone().unwrap_or_default(), m);
        }
    }
    Ok((out, timestamp(&list.items[0])))
}

/// Group, kind → the resource serving it (the group's preferred version), as discovered.
#[derive(Default)]
pub struct Mapper {
    known: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Mapper {
    /// The resource of `kind` in `group` (asked of discovery the first time, and again after a miss).
    pub async fn resource(&self, client: &kube::Client, group: &str, kind: &str) -> Result<ApiResource, String> {
        let key = (group.to_string(), kind.to_string());
        if let Some(r) = self.known.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(r.clone());
        }
        let no_match = || format!("no matches for kind \"{kind}\" in group \"{group}\"");
        let found = kube::discovery::oneshot::group(client, group).await.map_err(|_| no_match())?;
        let (ar, _) = found.recommended_kind(kind).ok_or_else(no_match)?;
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(key, ar.clone());
        Ok(ar)
    }

    /// Forgets what is known of `group`/`kind` (its scale could not be read).
    pub fn forget(&self, group: &str, kind: &str) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(&(group.to_string(), kind.to_string()));
    }
}

/// The Scale of `name` in `namespace`, of resource `ar`.
pub async fn get_scale(client: &kube::Client, ar: &ApiResource, namespace: &str, name: &str) -> Result<Scale, String> {
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), namespace, ar);
    api.get_scale(name).await.map_err(|e| message(&e))
}

/// Writes `scale` (an update: it fails when the object changed since it was read).
pub async fn update_scale(client: &kube::Client, ar: &ApiResource, namespace: &str, scale: &Scale) -> Result<Scale, String> {
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), namespace, ar);
    let name = scale.metadata.name.clone().unwrap_or_default();
    api.replace_scale(&name, &PostParams::default(), scale).await.map_err(|e| message(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(containers: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
            "metadata": {"name": "p", "namespace": "ns"},
            "timestamp": "2026-01-01T00:00:00Z", "window": "15.002s", "containers": containers,
        }))
        .expect("item")
    }

    #[test]
    fn pod_metrics_sum_containers_in_milli_units() {
        let i = item(json!([{"name": "a", "usage": {"cpu": "100500000n", "memory": "1Ki"}}, {"name": "b", "usage": {"cpu": "20m", "memory": "1Ki"}}]));
        let m = pod_metric(&i, "cpu", None).expect("ok").expect("a metric");
        assert_eq!((m.value, m.window), (121, SignedDuration::from_millis(15_002)), "100.5m rounds up to 101m");
        assert_eq!(pod_metric(&i, "memory", Some("b")).expect("ok").map(|m| m.value), Some(1_024_000));
        assert_eq!(pod_metric(&i, "cpu", Some("c")), Err("container c not present in metrics for pod ns/p".to_string()));
        assert_eq!(pod_metric(&item(json!([{"name": "a", "usage": {"memory": "1Ki"}}])), "cpu", None), Ok(None), "a container without the resource");
        assert_eq!(pod_metric(&item(json!([])), "cpu", None), Ok(None));
    }
}
