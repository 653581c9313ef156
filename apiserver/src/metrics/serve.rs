//! Get and list of NodeMetrics and PodMetrics, as metrics-server answers them: the Node or
//! Pod objects (from the watch cache) chosen by name, namespace and the request's label and
//! field selectors, each with its usage from the kept points; those without usage are left
//! out of a list and NotFound on a get (`podmetrics.metrics.k8s.io "ns/name" not found`).
//! Items are sorted by namespace and name, carry their object's labels and a creation time of
//! now; quantities are CPU in nano-cores and memory in bytes (binary suffixes). JSON or a
//! Table (metrics-server's columns); no watch.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_names::quantity::{Format, Quantity};
use serde_json::{json, Map, Value};

use super::points::{PodUsage, Usage};
use super::ResourceMetrics;
use crate::api::Api;
use crate::content::{self, json_response};
use crate::resources::Resource;
use crate::rest::ListOptions;
use crate::status::ApiError;
use crate::table::{self, IncludeObject};

fn time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

fn usage_json(cpu_nanocores: u64, memory: u64) -> Value {
    json!({
        "cpu": Quantity::from_nanos(i128::from(cpu_nanocores)).canonical(Format::DecimalSi),
        "memory": Quantity::from_units(i64::try_from(memory).unwrap_or(i64::MAX)).canonical(Format::BinarySi),
    })
}

/// The metadata of a metrics item: the object's name, namespace and labels, created now.
fn metadata(obj: &Value) -> Value {
    let mut m = Map::new();
    for key in ["name", "namespace"] {
        if let Some(v) = obj.pointer(&format!("/metadata/{key}")) {
            m.insert(key.into(), v.clone());
        }
    }
    m.insert("creationTimestamp".into(), json!(crate::meta::now()));
    if let Some(l) = obj.pointer("/metadata/labels").filter(|l| l.as_object().is_some_and(|o| !o.is_empty())) {
        m.insert("labels".into(), l.clone());
    }
    Value::Object(m)
}

fn node_item(obj: &Value, u: &Usage) -> Value {
    json!({"metadata": metadata(obj), "timestamp": time(u.at_ns), "window": berth_names::duration::format_nanos(u.window_ns), "usage": usage_json(u.cpu_nanocores, u.memory)})
}

fn pod_item(obj: &Value, u: &PodUsage) -> Value {
    let containers: Vec<Value> = u.containers.iter().map(|(name, cpu, memory)| json!({"name": name, "usage": usage_json(*cpu, *memory)})).collect();
    json!({"metadata": metadata(obj), "timestamp": time(u.at_ns), "window": berth_names::duration::format_nanos(u.window_ns), "containers": containers})
}

/// The metrics item of a Node or Pod object, if it has usage.
fn item(m: &ResourceMetrics, res: &Resource, obj: &Value) -> Option<Value> {
    let points = m.points.read().unwrap_or_else(|e| e.into_inner());
    let name = crate::meta::name(obj);
    if res.namespaced {
        let ns = crate::meta::get(obj, "namespace").unwrap_or("");
        points.pod(ns, name).map(|u| pod_item(obj, &u))
    } else {
        points.node(name).map(|u| node_item(obj, &u))
    }
}

/// NotFound as metrics-server says it (`nodemetrics.metrics.k8s.io "n1" not found`).
fn not_found(res: &Resource, ns: Option<&str>, name: &str) -> ApiError {
    let kind = if res.namespaced { "podmetrics" } else { "nodemetrics" };
    let shown = match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    ApiError {
        code: 404,
        reason: "NotFound",
        message: format!("{kind}.{} \"{shown}\" not found", super::GROUP),
        details: Some(json!({"name": shown, "group": super::GROUP, "kind": kind})),
    }
}

/// Answers a request for NodeMetrics or PodMetrics.
pub(crate) async fn answer(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: Option<&str>,
    method: &Method,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if *method != Method::GET {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(ApiError::method_not_allowed("watch"));
    }
    let metrics = api.resource_metrics.clone().ok_or_else(ApiError::path_not_found)?;
    let objects = api.resource("", if res.namespaced { "pods" } else { "nodes" })?;
    let table = match content::wants_table(headers) {
        true => Some(IncludeObject::parse(params.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?),
        false => None,
    };
    let typed = |mut v: Value| {
        v["kind"] = json!(res.kind);
        v["apiVersion"] = json!(res.api_version());
        v
    };
    if let Some(name) = name {
        let obj = api.get(&objects, ns, name, Some("0")).await?;
        let item = item(&metrics, res, &obj).ok_or_else(|| not_found(res, ns, name))?;
        return Ok(match table {
            Some(include) => json_response(StatusCode::OK, &table::table(res, &[typed(item)], json!({"resourceVersion": ""}), include, true)),
            None => json_response(StatusCode::OK, &typed(item)),
        });
    }
    let mut opts = ListOptions::new(res, params.get("labelSelector").map(String::as_str), params.get("fieldSelector").map(String::as_str))?;
    opts.resource_version = Some("0".into());
    let (objs, _) = api.list(&objects, ns, &opts).await?;
    let mut items: Vec<Value> = objs.iter().filter_map(|o| item(&metrics, res, o)).collect();
    let key = |v: &Value| (v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string(), crate::meta::name(v).to_string());
    items.sort_by_key(key);
    if let Some(include) = table {
        let typed: Vec<Value> = items.into_iter().map(typed).collect();
        return Ok(json_response(StatusCode::OK, &table::table(res, &typed, json!({"resourceVersion": ""}), include, true)));
    }
    Ok(json_response(StatusCode::OK, &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {}, "items": items})))
}
