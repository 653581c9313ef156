//! Versions served from another version's storage: autoscaling/v1 HorizontalPodAutoscalers over
//! the autoscaling/v2 objects, events.k8s.io/v1 Events over the core/v1 Events. A [`View`]
//! converts a request body to the stored form and a stored object to the served form; the REST
//! layer, the watch cache, selectors and Table output keep working on the stored form. Each
//! conversion is a field mapping on JSON, as upstream's conversion functions define it.

use serde_json::{json, Map, Value};

/// The conversion of a served version to and from the stored one.
pub trait View: Send + Sync {
    /// A request body (maybe partial, as in server-side apply) in the stored form.
    fn stored(&self, obj: Value) -> Value;
    /// A stored object in the served form.
    fn served(&self, obj: Value) -> Value;
    /// The apiVersion of the stored form.
    fn stored_api_version(&self) -> &str;
    /// Adds the served kind's OpenAPI schema to `gen`; the reference to it.
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value;
}

/// Moves `from` to `to` within a JSON object (nothing when `from` is absent).
fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.to_string(), v);
    }
}

/// events.k8s.io/v1 Event ⇄ core/v1 Event.
pub struct EventsV1;

const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

impl View for EventsV1 {
    fn stored_api_version(&self) -> &str {
        "v1"
    }
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value {
        gen.subschema_for::<k8s_openapi::api::events::v1::Event>().to_value()
    }
    fn stored(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!("v1"));
            for (served, stored) in EVENT_FIELDS {
                m.remove(*stored);
                rename(m, served, stored);
            }
            m.entry("involvedObject").or_insert_with(|| json!({}));
        }
        obj
    }
    fn served(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            if m.contains_key("apiVersion") {
                m.insert("apiVersion".into(), json!("events.k8s.io/v1"));
            }
            for (served, stored) in EVENT_FIELDS {
                rename(m, stored, served);
            }
        }
        obj
    }
}

/// autoscaling/v1 HorizontalPodAutoscaler ⇄ autoscaling/v2: the CPU utilization target is the
/// v2 Resource metric `cpu` of type Utilization.
pub struct HpaV1;

fn cpu_metric(metrics: Option<&Value>) -> Option<&Value> {
    metrics?.as_array()?.iter().find(|m| m["type"] == "Resource" && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
}

impl View for HpaV1 {
    fn stored_api_version(&self) -> &str {
        "autoscaling/v2"
    }
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value {
        gen.subschema_for::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>().to_value()
    }
    fn stored(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!("autoscaling/v2"));
        }
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(pct) = spec.remove("targetCPUUtilizationPercentage") {
                spec.insert(
                    "metrics".into(),
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}]),
                );
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            if let Some(pct) = status.remove("currentCPUUtilizationPercentage") {
                status.insert("currentMetrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}]));
            }
            status.entry("desiredReplicas").or_insert(json!(0));
        }
        obj
    }
    fn served(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut().filter(|m| m.contains_key("apiVersion")) {
            m.insert("apiVersion".into(), json!("autoscaling/v1"));
        }
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            let pct = cpu_metric(spec.get("metrics")).and_then(|m| m.pointer("/resource/target/averageUtilization")).cloned();
            spec.remove("metrics");
            spec.remove("behavior");
            if let Some(p) = pct {
                spec.insert("targetCPUUtilizationPercentage".into(), p);
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            let pct = cpu_metric(status.get("currentMetrics")).and_then(|m| m.pointer("/resource/current/averageUtilization")).cloned();
            status.remove("currentMetrics");
            status.remove("conditions");
            if let Some(p) = pct {
                status.insert("currentCPUUtilizationPercentage".into(), p);
            }
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_v1_cpu_target_is_the_v2_cpu_utilization_metric() {
        let v1 = json!({"spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 60}, "status": {"currentCPUUtilizationPercentage": 20}});
        let v2 = HpaV1.stored(v1.clone());
        assert_eq!(v2.pointer("/spec/metrics/0/resource/target/averageUtilization"), Some(&json!(60)));
        let back = HpaV1.served(v2);
        assert_eq!(back["spec"], v1["spec"]);
        assert_eq!(back["status"]["currentCPUUtilizationPercentage"], 20);
    }

    #[test]
    fn events_v1_fields_are_the_core_event_fields_renamed() {
        let e = json!({"regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reportingController": "berth", "type": "Normal"});
        let core = EventsV1.stored(e.clone());
        assert_eq!((core["involvedObject"]["name"].as_str(), core["message"].as_str()), (Some("p"), Some("hi")));
        let mut back = EventsV1.served(core);
        back.as_object_mut().map(|m| m.remove("apiVersion"));
        assert_eq!(back, e);
    }
}
