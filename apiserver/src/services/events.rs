//! Warning events of the repair loops about the object they found wrong (a Service whose IP is
//! not allocated, an IPAddress that leaked), written as core/v1 Events through the API, as
//! upstream's repair controllers record them. Failing to write one is only logged.

use serde_json::{json, Value};

use crate::api::Api;
use crate::meta;
use crate::rest::WriteOptions;

/// Records a Warning `reason` with `message` about `obj` (a stored object) from `component`.
pub async fn warn(api: &Api, component: &str, obj: &Value, reason: &str, message: &str) {
    let Ok(res) = api.resource("", "events") else { return };
    let name = meta::name(obj).to_string();
    let namespace = meta::get(obj, "namespace").filter(|n| !n.is_empty()).unwrap_or("default").to_string();
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", now.as_nanosecond()), "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion").cloned().unwrap_or(Value::Null),
            "kind": obj.get("kind").cloned().unwrap_or(Value::Null),
            "name": name,
            "namespace": meta::get(obj, "namespace"),
            "uid": meta::get(obj, "uid"),
        },
        "reason": reason, "message": message, "type": "Warning",
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    });
    if let Err(e) = api.create(&res, Some(&namespace), event, &WriteOptions::default()).await {
        tracing::debug!(reason, error = %e.message, "recording an event");
    }
}
