//! pods/eviction honours PodDisruptionBudgets, as upstream's eviction REST does: a pod that is
//! finished, pending or already being deleted goes at once; otherwise the one budget selecting
//! it (more than one is an error) must allow a disruption. An allowed eviction takes one from
//! the budget's `disruptionsAllowed` and notes the pod in `disruptedPods` (written first, with a
//! compare-and-swap retry) before the pod is deleted; a budget the disruption controller has not
//! processed yet, or with no disruption left, refuses with 429 TooManyRequests, which `kubectl
//! drain` retries. An unhealthy (not Ready) pod may go without taking a disruption when the
//! budget is healthy (`unhealthyPodEvictionPolicy: IfHealthyBudget`) or always (`AlwaysAllow`).

use std::sync::Arc;

use berth_store::StoreError;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::{store_error, to_bytes};
use crate::api::Api;
use crate::cache::decode_kv;
use crate::selector::LabelSelector;
use crate::status::ApiError;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn too_many_requests(cause: String) -> ApiError {
    ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: REFUSED.into(),
        details: Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]})),
    }
}

fn int(v: &Value, path: &str) -> i64 {
    v.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether a budget's selector selects pods with `labels` (policy/v1: an empty selector selects
/// every pod of the namespace, none selects nothing).
fn selects(pdb: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector") else { return false };
    match serde_json::from_value(sel.clone()).map(|s| LabelSelector::from_api(&s)) {
        Ok(Ok(s)) => s.matches(labels),
        _ => false,
    }
}

impl Api {
    /// Lets the eviction of `pod` go ahead (taking a disruption from its budget), or refuses it.
    pub(super) async fn admit_eviction(self: &Arc<Self>, ns: &str, pod: &Value) -> Result<(), ApiError> {
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed" | "Pending") || pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
            return Ok(());
        }
        let labels: std::collections::BTreeMap<String, String> =
            pod.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok()).unwrap_or_default();
        let budgets: Vec<Value> =
            crate::admission::cached(self, "policy", "poddisruptionbudgets", Some(ns)).into_iter().filter(|p| selects(p, &labels)).collect();
        let budget = match budgets.as_slice() {
            [] => return Ok(()),
            [one] => one,
            _ => {
                return Err(ApiError {
                    code: 500,
                    reason: "InternalError",
                    message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
                    details: None,
                })
            }
        };
        let name = budget.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let ready =
            pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let res = self.resource("policy", "poddisruptionbudgets")?;
        let key = res.key(&self.store_prefix, Some(ns), &name);
        for _ in 0..16 {
            let Some(kv) = self.store.get(&key, None).await.map_err(|e| store_error(&res, &name, e))? else { return Ok(()) };
            let mut pdb = decode_kv(&kv).map_err(ApiError::internal)?;
            if int(&pdb, "/status/observedGeneration") < int(&pdb, "/metadata/generation") {
                return Err(too_many_requests(format!("The disruption budget {name} is still being processed by the server.")));
            }
            let (healthy, desired) = (int(&pdb, "/status/currentHealthy"), int(&pdb, "/status/desiredHealthy"));
            if !ready {
                let policy = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str).unwrap_or("IfHealthyBudget");
                if policy == "AlwaysAllow" || (healthy >= desired && desired > 0) {
                    return Ok(());
                }
            }
            let allowed = int(&pdb, "/status/disruptionsAllowed");
            if allowed < 0 {
                return Err(ApiError { code: 403, reason: "Forbidden", message: "pdb disruptions allowed is negative".into(), details: None });
            }
            if allowed == 0 {
                return Err(too_many_requests(format!("The disruption budget {name} needs {desired} healthy pods and has {healthy} currently")));
            }
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            let disrupted = pdb["status"].as_object_mut().map(|s| s.entry("disruptedPods").or_insert_with(|| json!({})));
            if let Some(map) = disrupted.and_then(Value::as_object_mut) {
                map.insert(pod_name.clone(), json!(Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
            }
            match self.store.update(&key, to_bytes(&pdb)?, kv.mod_revision, res.ttl).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(&res, &name, e)),
            }
        }
        Err(ApiError::conflict(&res, &name))
    }
}
