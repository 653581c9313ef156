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

/// autoscaling/v1 HorizontalPodAutoscaler ⇄ autoscaling/v2, as upstream converts it: the CPU
/// utilization target (and current value) is the v2 Resource metric `cpu` of type Utilization;
/// what v1 has no field for travels in annotations — the other metrics
/// (`autoscaling.alpha.kubernetes.io/metrics`), the current metrics (`…/current-metrics`), the
/// conditions (`…/conditions`), each in v1's older metric shapes, and the behavior
/// (`…/behavior`) — so a v1 client's update keeps them.
pub struct HpaV1;

const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// A JSON object of the fields of `pairs` ((name, value)) that have a value.
fn fields(pairs: &[(&str, Option<&Value>)]) -> Value {
    Value::Object(pairs.iter().filter_map(|(k, v)| v.filter(|v| !v.is_null()).map(|v| (k.to_string(), v.clone()))).collect())
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && !m.pointer("/resource/target/averageUtilization").unwrap_or(&Value::Null).is_null()
}

/// A v2 MetricSpec in v1's shape.
fn v1_metric(m: &Value) -> Value {
    let t = m["type"].as_str().unwrap_or("");
    let mut out = json!({"type": t});
    let (key, body) = match t {
        "Resource" | "ContainerResource" => {
            let key = if t == "Resource" { "resource" } else { "containerResource" };
            let r = &m[key];
            (
                key,
                fields(&[
                    ("name", r.get("name")),
                    ("container", r.get("container")),
                    ("targetAverageUtilization", r.pointer("/target/averageUtilization")),
                    ("targetAverageValue", r.pointer("/target/averageValue")),
                ]),
            )
        }
        _ => match v1_named_metric(t, m, "target") {
            Some(kb) => kb,
            None => return out,
        },
    };
    out[key] = body;
    out
}

/// The Pods, Object or External part of a v2 MetricSpec (`side` "target") or MetricStatus
/// ("current") in v1's shape, whose field names carry the side (`targetValue`,
/// `currentAverageValue`, ...).
fn v1_named_metric(t: &str, m: &Value, side: &str) -> Option<(&'static str, Value)> {
    let (value, average) = (format!("{side}Value"), format!("{side}AverageValue"));
    let (value_at, average_at) = (format!("/{side}/value"), format!("/{side}/averageValue"));
    Some(match t {
        "Pods" => {
            let p = &m["pods"];
            ("pods", fields(&[("metricName", p.pointer("/metric/name")), (&average, p.pointer(&average_at)), ("selector", p.pointer("/metric/selector"))]))
        }
        "Object" => {
            let o = &m["object"];
            (
                "object",
                fields(&[
                    ("target", o.get("describedObject")),
                    ("metricName", o.pointer("/metric/name")),
                    (&value, o.pointer(&value_at)),
                    ("selector", o.pointer("/metric/selector")),
                    ("averageValue", o.pointer(&average_at)),
                ]),
            )
        }
        "External" => {
            let x = &m["external"];
            (
                "external",
                fields(&[
                    ("metricName", x.pointer("/metric/name")),
                    ("metricSelector", x.pointer("/metric/selector")),
                    (&value, x.pointer(&value_at)),
                    (&average, x.pointer(&average_at)),
                ]),
            )
        }
        _ => return None,
    })
}

/// A v1-shaped MetricSpec in v2's.
fn v2_metric(m: &Value) -> Value {
    let t = m["type"].as_str().unwrap_or("");
    let mut out = json!({"type": t});
    let (key, body) = match t {
        "Resource" | "ContainerResource" => {
            let key = if t == "Resource" { "resource" } else { "containerResource" };
            let r = &m[key];
            let utilization = r.get("targetAverageUtilization").filter(|v| !v.is_null());
            let kind = json!(if utilization.is_some() { "Utilization" } else { "AverageValue" });
            let target = fields(&[("type", Some(&kind)), ("averageUtilization", utilization), ("averageValue", r.get("targetAverageValue"))]);
            (key, fields(&[("name", r.get("name")), ("container", r.get("container")), ("target", Some(&target))]))
        }
        "Pods" => {
            let p = &m["pods"];
            let target = fields(&[("type", Some(&json!("AverageValue"))), ("averageValue", p.get("targetAverageValue"))]);
            let metric = fields(&[("name", p.get("metricName")), ("selector", p.get("selector"))]);
            ("pods", json!({"metric": metric, "target": target}))
        }
        "Object" => {
            let o = &m["object"];
            let average = o.get("averageValue").filter(|v| !v.is_null());
            let kind = json!(if average.is_some() { "AverageValue" } else { "Value" });
            let target = fields(&[("type", Some(&kind)), ("value", o.get("targetValue")), ("averageValue", average)]);
            let metric = fields(&[("name", o.get("metricName")), ("selector", o.get("selector"))]);
            ("object", fields(&[("describedObject", o.get("target")), ("metric", Some(&metric)), ("target", Some(&target))]))
        }
        "External" => {
            let x = &m["external"];
            let value = x.get("targetValue").filter(|v| !v.is_null());
            let kind = json!(if value.is_some() { "Value" } else { "AverageValue" });
            let target = fields(&[("type", Some(&kind)), ("value", value), ("averageValue", x.get("targetAverageValue"))]);
            let metric = fields(&[("name", x.get("metricName")), ("selector", x.get("metricSelector"))]);
            ("external", json!({"metric": metric, "target": target}))
        }
        _ => return out,
    };
    out[key] = body;
    out
}

/// A v2 MetricStatus in v1's shape.
fn v1_metric_status(m: &Value) -> Value {
    let t = m["type"].as_str().unwrap_or("");
    let mut out = json!({"type": t});
    let (key, body) = match t {
        "Resource" | "ContainerResource" => {
            let key = if t == "Resource" { "resource" } else { "containerResource" };
            let r = &m[key];
            let value = r.pointer("/current/averageValue").cloned().unwrap_or(json!("0"));
            (
                key,
                fields(&[
                    ("name", r.get("name")),
                    ("container", r.get("container")),
                    ("currentAverageUtilization", r.pointer("/current/averageUtilization")),
                    ("currentAverageValue", Some(&value)),
                ]),
            )
        }
        _ => match v1_named_metric(t, m, "current") {
            Some(kb) => kb,
            None => return out,
        },
    };
    out[key] = body;
    out
}

/// A v1-shaped MetricStatus in v2's.
fn v2_metric_status(m: &Value) -> Value {
    let t = m["type"].as_str().unwrap_or("");
    let mut out = json!({"type": t});
    let (key, body) = match t {
        "Resource" | "ContainerResource" => {
            let key = if t == "Resource" { "resource" } else { "containerResource" };
            let r = &m[key];
            let current = fields(&[("averageUtilization", r.get("currentAverageUtilization")), ("averageValue", r.get("currentAverageValue"))]);
            (key, fields(&[("name", r.get("name")), ("container", r.get("container")), ("current", Some(&current))]))
        }
        "Pods" => {
            let p = &m["pods"];
            let metric = fields(&[("name", p.get("metricName")), ("selector", p.get("selector"))]);
            ("pods", json!({"metric": metric, "current": fields(&[("averageValue", p.get("currentAverageValue"))])}))
        }
        "Object" => {
            let o = &m["object"];
            let metric = fields(&[("name", o.get("metricName")), ("selector", o.get("selector"))]);
            let current = fields(&[("value", o.get("currentValue")), ("averageValue", o.get("averageValue"))]);
            ("object", fields(&[("describedObject", o.get("target")), ("metric", Some(&metric)), ("current", Some(&current))]))
        }
        "External" => {
            let x = &m["external"];
            let metric = fields(&[("name", x.get("metricName")), ("selector", x.get("metricSelector"))]);
            let current = fields(&[("value", x.get("currentValue")), ("averageValue", x.get("currentAverageValue"))]);
            ("external", json!({"metric": metric, "current": current}))
        }
        _ => return out,
    };
    out[key] = body;
    out
}

/// Takes annotation `key` out of `obj`, parsed as JSON (None when absent or not JSON).
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let annotations = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)?;
    let text = annotations.remove(key)?;
    if annotations.is_empty() {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("annotations");
        }
    }
    serde_json::from_str(text.as_str()?).ok()
}

fn put_annotation(obj: &mut Value, key: &str, value: &Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if let Some(a) = annotations.as_object_mut() {
        a.insert(key.to_string(), json!(value.to_string()));
    }
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
        let other_metrics = take_annotation(&mut obj, METRICS_ANNOTATION);
        let current_metrics = take_annotation(&mut obj, CURRENT_METRICS_ANNOTATION);
        let conditions = take_annotation(&mut obj, CONDITIONS_ANNOTATION);
        let behavior = take_annotation(&mut obj, BEHAVIOR_ANNOTATION);
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            let mut metrics: Vec<Value> = other_metrics.as_ref().and_then(Value::as_array).into_iter().flatten().map(v2_metric).collect();
            if let Some(pct) = spec.remove("targetCPUUtilizationPercentage").filter(|p| !p.is_null()) {
                metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}));
            }
            if !metrics.is_empty() {
                spec.insert("metrics".into(), Value::Array(metrics));
            }
            if let Some(b) = behavior {
                spec.insert("behavior".into(), b);
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            let pct = status.remove("currentCPUUtilizationPercentage").filter(|p| !p.is_null());
            match (current_metrics.as_ref().and_then(Value::as_array), pct) {
                // the annotation has more than the percentage
                (Some(all), _) => {
                    status.insert("currentMetrics".into(), Value::Array(all.iter().map(v2_metric_status).collect()));
                }
                (None, Some(pct)) => {
                    status.insert("currentMetrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}]));
                }
                (None, None) => {}
            }
            if let Some(c) = conditions {
                status.insert("conditions".into(), c);
            }
            status.entry("desiredReplicas").or_insert(json!(0));
        }
        obj
    }
    fn served(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut().filter(|m| m.contains_key("apiVersion")) {
            m.insert("apiVersion".into(), json!("autoscaling/v1"));
        }
        let mut annotations: Vec<(&str, Value)> = vec![];
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            let metrics = spec.remove("metrics").and_then(|m| m.as_array().cloned()).unwrap_or_default();
            // the first cpu Resource metric gives the percentage (when it is a utilization)
            if let Some(cpu) = metrics.iter().find(|m| m["type"] == "Resource" && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")) {
                if let Some(p) = cpu.pointer("/resource/target/averageUtilization").filter(|p| !p.is_null()) {
                    spec.insert("targetCPUUtilizationPercentage".into(), p.clone());
                }
            }
            let others: Vec<Value> = metrics.iter().filter(|m| !is_cpu_utilization(m)).map(v1_metric).collect();
            if !others.is_empty() {
                annotations.push((METRICS_ANNOTATION, Value::Array(others)));
            }
            if let Some(b) = spec.remove("behavior").filter(|b| !b.is_null()) {
                annotations.push((BEHAVIOR_ANNOTATION, b));
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            let current = status.remove("currentMetrics").and_then(|m| m.as_array().cloned()).unwrap_or_default();
            let pct = current
                .iter()
                .filter(|m| m["type"] == "Resource" && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .filter_map(|m| m.pointer("/resource/current/averageUtilization").filter(|p| !p.is_null()).cloned())
                .next_back();
            if let Some(p) = pct {
                status.insert("currentCPUUtilizationPercentage".into(), p);
            }
            if !current.is_empty() {
                annotations.push((CURRENT_METRICS_ANNOTATION, Value::Array(current.iter().map(v1_metric_status).collect())));
            }
            if let Some(c) = status.remove("conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
                annotations.push((CONDITIONS_ANNOTATION, c));
            }
        }
        for (k, v) in annotations {
            put_annotation(&mut obj, k, &v);
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
    fn hpa_v1_keeps_what_it_has_no_field_for_in_annotations() {
        let v2 = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {"mine": "x"}},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10, "selectPolicy": "Max", "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "22m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "message": "m"}]}
        });
        let v1 = HpaV1.served(v2.clone());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(v1["spec"].get("metrics").is_none() && v1["spec"].get("behavior").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 45);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["mine"], "x");
        let others: Value = serde_json::from_str(a[METRICS_ANNOTATION].as_str().unwrap_or("")).expect("metrics annotation");
        assert_eq!(others[0], json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}));
        assert_eq!(others[1], json!({"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "10"}}));
        let current: Value = serde_json::from_str(a[CURRENT_METRICS_ANNOTATION].as_str().unwrap_or("")).expect("current annotation");
        assert_eq!(current[0], json!({"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 45, "currentAverageValue": "22m"}}));
        assert!(a[CONDITIONS_ANNOTATION].as_str().is_some_and(|c| c.contains("ReadyForNewScale")));
        // and back: a v1 client's update keeps every metric, the behavior and the status
        let mut again = HpaV1.stored(v1);
        assert_eq!(again["metadata"]["annotations"], json!({"mine": "x"}));
        assert_eq!(again["spec"]["behavior"], v2["spec"]["behavior"]);
        assert_eq!(again["status"], v2["status"]);
        let metrics = again["spec"]["metrics"].as_array_mut().map(std::mem::take).unwrap_or_default();
        let want = v2["spec"]["metrics"].as_array().cloned().unwrap_or_default();
        assert_eq!(metrics.len(), 3);
        for m in &want {
            assert!(metrics.contains(m), "{m} missing from {metrics:?}");
        }
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
