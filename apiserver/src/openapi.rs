//! OpenAPI v3: the index of group versions and, per group version, the schemas of its kinds
//! (k8s-openapi's, under upstream's names, with `x-kubernetes-group-version-kind`, for
//! `kubectl explain`) and the PATCH operation of each resource with its group-version-kind and
//! the `fieldValidation` parameter — which tells kubectl 1.27+ that the server validates fields
//! (so it sends fieldValidation=Strict instead of validating against a schema itself). The PATCH
//! operations name no request body: without the patch merge keys in the schemas, kubectl must
//! compute strategic merge patches from its compiled-in types, which it does when OpenAPI does
//! not offer them. Documents are built once and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use crate::discovery::GIT_VERSION;
use crate::resources::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The media type of /openapi/v2 in protobuf.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// /openapi/v2 in protobuf (gnostic's Document, what kubectl asks for): the JSON document below,
/// encoded by `protobuf::openapi_v2`.
pub fn v2(reg: &Registry) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    // built-in kinds only: one document with the resource metrics API, one without
    static BUILTIN: [OnceLock<Arc<Vec<u8>>>; 2] = [OnceLock::new(), OnceLock::new()];
    let bytes = if reg.all().iter().any(|r| r.custom) {
        Arc::new(crate::protobuf::openapi_v2::document(&v2_json(reg)))
    } else {
        BUILTIN[usize::from(with_resource_metrics(reg))].get_or_init(|| Arc::new(crate::protobuf::openapi_v2::document(&v2_json(reg)))).clone()
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(V2_PROTOBUF))], bytes.to_vec()).into_response()
}

/// /openapi/v2 as JSON: a swagger 2.0 document with the definitions of every served group
/// version's v3 document (references rewritten to `#/definitions/`, `nullable` dropped, which
/// v2 does not have), the patch strategies of list fields (`x-kubernetes-patch-merge-key`,
/// `x-kubernetes-patch-strategy`: those the server's strategic merge patch follows, so that
/// kubectl computes the patches the server applies) and the PATCH operations. Built once while
/// only built-in kinds are served; with custom resources, on every request.
pub fn v2_json(reg: &Registry) -> Arc<Value> {
    static BUILTIN: [OnceLock<Arc<Value>>; 2] = [OnceLock::new(), OnceLock::new()];
    if reg.all().iter().any(|r| r.custom) {
        return Arc::new(build_v2(reg));
    }
    BUILTIN[usize::from(with_resource_metrics(reg))].get_or_init(|| Arc::new(build_v2(reg))).clone()
}

/// Whether a table serves the resource metrics API (its documents differ by that).
fn with_resource_metrics(reg: &Registry) -> bool {
    reg.all().iter().any(|r| r.resource_metrics)
}

fn build_v2(reg: &Registry) -> Value {
    let mut definitions = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let Some(doc) = group_version(reg, &gv_path(g, v)) else { continue };
            if let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object) {
                for (name, schema) in schemas {
                    definitions.entry(name.clone()).or_insert_with(|| to_v2(schema.clone()));
                }
            }
            if let Some(p) = doc.get("paths").and_then(Value::as_object) {
                for (path, item) in p {
                    paths.insert(path.clone(), v2_path_item(item));
                }
            }
        }
    }
    patch_strategies(&mut definitions);
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": paths, "definitions": definitions})
}

/// A v3 path item in v2's form: parameters say their type directly.
fn v2_path_item(item: &Value) -> Value {
    let mut item = item.clone();
    if let Some(ops) = item.as_object_mut() {
        for op in ops.values_mut() {
            for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(schema) = p.as_object_mut().and_then(|m| m.remove("schema")) {
                    for (k, v) in schema.as_object().into_iter().flatten() {
                        p[k.as_str()] = v.clone();
                    }
                }
            }
        }
    }
    item
}

/// Marks the list fields the server's strategic merge patch merges (`patch::list_merge`): by a
/// key the items have, or as a set of primitives; and the fields upstream's types clear with
/// `$retainKeys` (a Deployment's strategy, a pod's volumes).
fn patch_strategies(definitions: &mut serde_json::Map<String, Value>) {
    use crate::patch::{list_merge, ListMerge};
    let has_property = |defs: &serde_json::Map<String, Value>, reference: &str, key: &str| {
        let name = reference.trim_start_matches("#/definitions/");
        defs.get(name).and_then(|d| d.pointer(&format!("/properties/{key}"))).is_some()
    };
    // (definition, field, extensions to add)
    type Marks = Vec<(String, String, Vec<(&'static str, Value)>)>;
    let mut marks: Marks = vec![];
    for (name, def) in definitions.iter() {
        let short = name.rsplit('.').next().unwrap_or(name);
        let parent = matches!(short, "Container" | "EphemeralContainer").then_some("containers");
        for (field, prop) in def.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let mut ext = vec![];
            if prop.get("type").and_then(Value::as_str) == Some("array") {
                let items = &prop["items"];
                match list_merge(parent, field) {
                    ListMerge::Keys([k]) if items.get("$ref").and_then(Value::as_str).is_some_and(|r| has_property(definitions, r, k)) => {
                        let strategy = if short == "PodSpec" && field == "volumes" { "merge,retainKeys" } else { "merge" };
                        ext.push(("x-kubernetes-patch-merge-key", json!(k)));
                        ext.push(("x-kubernetes-patch-strategy", json!(strategy)));
                    }
                    ListMerge::Set if items.get("type").and_then(Value::as_str).is_some() => ext.push(("x-kubernetes-patch-strategy", json!("merge"))),
                    _ => {}
                }
            } else if short == "DeploymentSpec" && field == "strategy" {
                ext.push(("x-kubernetes-patch-strategy", json!("retainKeys")));
            }
            if !ext.is_empty() {
                marks.push((name.clone(), field.clone(), ext));
            }
        }
    }
    for (name, field, ext) in marks {
        if let Some(prop) = definitions.get_mut(&name).and_then(|d| d.pointer_mut(&format!("/properties/{field}"))).and_then(Value::as_object_mut) {
            for (k, v) in ext {
                prop.insert(k.to_string(), v);
            }
        }
    }
}

/// An OpenAPI v3 schema in its v2 form (a lone `allOf: [{$ref}]` becomes the `$ref`, as
/// upstream's v2 writes references with a description).
fn to_v2(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            let lone_ref = match m.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                Some([one]) => one.get("$ref").cloned(),
                _ => None,
            };
            if let Some(r) = lone_ref {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            to_v2_map(m)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(to_v2).collect()),
        other => other,
    }
}

fn to_v2_map(m: serde_json::Map<String, Value>) -> Value {
    Value::Object(
        m.into_iter()
            .filter(|(k, _)| k != "nullable")
            .map(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) => (k, Value::String(r.replace("#/components/schemas/", "#/definitions/"))),
                (_, v) => (k, to_v2(v)),
            })
            .collect(),
    )
}

/// /openapi/v3
pub fn index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let p = gv_path(g, v);
            let hash = group_version(reg, &p).map(|d| hash_of(&d.to_string())).unwrap_or_default();
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
        }
    }
    json!({ "paths": paths })
}

/// A hash of a document's text (FNV-1a), so clients cache it exactly as long as it is unchanged.
fn hash_of(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// /openapi/v3/api/v1, /openapi/v3/apis/GROUP/VERSION (built on first use, then kept; a group
/// version with custom resources is built on every request, since its CRDs may change).
pub fn group_version(reg: &Registry, path: &str) -> Option<Arc<Value>> {
    static DOCS: OnceLock<Mutex<HashMap<String, Option<Arc<Value>>>>> = OnceLock::new();
    let docs = DOCS.get_or_init(Default::default);
    let key = path.trim_matches('/').to_string();
    let custom = match key.split('/').collect::<Vec<_>>().as_slice() {
        ["apis", g, v] => reg.of(g, v).any(|r| r.custom),
        _ => false,
    };
    if custom {
        return build_group_version(reg, &key).map(Arc::new);
    }
    if let Some(d) = docs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return d.clone();
    }
    let doc = build_group_version(reg, &key).map(Arc::new);
    if doc.is_some() {
        docs.lock().unwrap_or_else(|e| e.into_inner()).insert(key, doc.clone());
    }
    doc
}

fn build_group_version(reg: &Registry, path: &str) -> Option<Value> {
    let (g, v) = match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut kinds = vec![];
    for r in reg.of(&g, &v) {
        let reference = match &r.view {
            Some(view) => view.schema(&mut gen),
            None => r.strategy.schema(&mut gen),
        };
        if let Some(name) = reference.get("$ref").and_then(Value::as_str).and_then(|s| s.rsplit('/').next()) {
            kinds.push((name.to_string(), json!([{"group": r.group, "kind": r.kind, "version": r.version}])));
        }
        let base = format!("/{}", gv_path(&g, &v));
        let item = if r.namespaced { format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural) } else { format!("{base}/{}/{{name}}", r.plural) };
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        if r.resource_metrics {
            // read-only: a GET, no PATCH
            let op = json!({
                "operationId": format!("read{}", r.kind),
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            });
            paths.insert(item, json!({ "get": op }));
            continue;
        }
        let op = json!({
            "operationId": format!("patch{}", r.kind),
            "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        });
        paths.insert(item, json!({ "patch": op }));
    }
    if paths.is_empty() {
        return None;
    }
    let mut schemas = gen.take_definitions(true);
    for (name, gvk) in kinds {
        if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": paths, "components": {"schemas": schemas}}))
}
