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

/// /openapi/v2: an empty document in the protobuf form kubectl asks for. kubectl 1.27–1.29
/// `apply` fails without one; with it empty, kubectl computes strategic merge patches from its
/// compiled-in types (and leaves validation to the server, which says it does it in OpenAPI v3).
pub fn v2() -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    let ct = HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], Vec::<u8>::new()).into_response()
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

/// /openapi/v3/api/v1, /openapi/v3/apis/GROUP/VERSION (built on first use, then kept).
pub fn group_version(reg: &Registry, path: &str) -> Option<Arc<Value>> {
    static DOCS: OnceLock<Mutex<HashMap<String, Option<Arc<Value>>>>> = OnceLock::new();
    let docs = DOCS.get_or_init(Default::default);
    let key = path.trim_matches('/').to_string();
    if let Some(d) = docs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return d.clone();
    }
    let doc = build_group_version(reg, &key).map(Arc::new);
    docs.lock().unwrap_or_else(|e| e.into_inner()).insert(key, doc.clone());
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
        let reference = match r.view {
            Some(view) => view.schema(&mut gen),
            None => r.strategy.schema(&mut gen),
        };
        if let Some(name) = reference.get("$ref").and_then(Value::as_str).and_then(|s| s.rsplit('/').next()) {
            kinds.push((name.to_string(), json!([{"group": r.group, "kind": r.kind, "version": r.version}])));
        }
        let base = format!("/{}", gv_path(&g, &v));
        let item = if r.namespaced { format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural) } else { format!("{base}/{}/{{name}}", r.plural) };
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
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
