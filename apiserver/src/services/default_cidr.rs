//! The default ServiceCIDR `kubernetes`: made at start from `--service-cidr` and marked Ready,
//! as upstream's kubernetes-service-cidr-controller. A stored one with other CIDRs is kept (its
//! spec is immutable) and the difference logged; allocation uses the flag's CIDRs as well.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::Api;
use crate::rest::{Subresource, WriteOptions};

/// The default ServiceCIDR's name.
pub const NAME: &str = "kubernetes";
const READY_MESSAGE: &str = "Kubernetes default Service CIDR is ready";

/// Creates the default ServiceCIDR if it is missing and sets its Ready condition.
pub async fn ensure(api: &Arc<Api>) {
    let Ok(res) = api.resource("networking.k8s.io", "servicecidrs") else { return };
    let cidrs: Vec<String> = api.services.network.cidrs.iter().map(|c| c.to_string()).collect();
    let obj = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": NAME}, "spec": {"cidrs": cidrs}});
    let current = match api.create(&res, None, obj, &WriteOptions::default()).await {
        Ok(w) => w.object,
        Err(e) if e.code == 409 => match api.get(&res, None, NAME, None).await {
            Ok(o) => o,
            Err(e) => return tracing::warn!(error = %e.message, "reading the default ServiceCIDR"),
        },
        Err(e) => return tracing::warn!(error = %e.message, "creating the default ServiceCIDR"),
    };
    let stored: Vec<String> =
        current.pointer("/spec/cidrs").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.as_str().map(String::from)).collect();
    if stored != cidrs {
        tracing::warn!(?stored, flag = ?cidrs, "the default ServiceCIDR differs from --service-cidr; both are used for allocation");
        return;
    }
    let ready =
        current.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    if ready {
        return;
    }
    let mut with_status = current.clone();
    with_status["status"] = json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "", "message": READY_MESSAGE,
        "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }]});
    if let Err(e) = api.update(&res, None, NAME, with_status, Subresource::Status, &WriteOptions::default()).await {
        tracing::warn!(error = %e.message, "marking the default ServiceCIDR ready");
    }
}
