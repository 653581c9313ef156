//! Server-side apply (`application/apply-patch+yaml`), a first cut: the applied configuration is
//! merged into the live object (maps by key, lists with a merge key element by element, other
//! lists replaced), the fields the same field manager applied before and no longer applies are
//! removed, and the manager's field set is recorded in `metadata.managedFields` (FieldsV1, as
//! upstream writes it). An absent object is created. Not yet: conflicts between managers (every
//! apply behaves as with `--force-conflicts`) and field sets of non-apply writers.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{Subresource, WriteOptions, Written};
use crate::api::Api;
use crate::meta;
use crate::patch::{self, list_merge, ListMerge, PatchType};
use crate::resources::Resource;
use crate::status::ApiError;

/// The field set (FieldsV1) of an applied configuration.
pub(crate) fn field_set(obj: &Value) -> Value {
    let mut top = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    let mut md = v.clone();
                    if let Some(mm) = md.as_object_mut() {
                        for skip in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"] {
                            mm.remove(skip);
                        }
                    }
                    if md.as_object().is_some_and(|m| !m.is_empty()) {
                        top.insert("f:metadata".into(), fields_of(&md, None));
                    }
                }
                _ => {
                    top.insert(format!("f:{k}"), fields_of_field(None, k, v));
                }
            }
        }
    }
    Value::Object(top)
}

fn fields_of(v: &Value, parent: Option<&str>) -> Value {
    let mut out = Map::new();
    if let Some(m) = v.as_object() {
        for (k, child) in m {
            out.insert(format!("f:{k}"), fields_of_field(parent, k, child));
        }
    }
    Value::Object(out)
}

fn fields_of_field(parent: Option<&str>, name: &str, v: &Value) -> Value {
    match v {
        Value::Object(_) => fields_of(v, Some(name)),
        Value::Array(items) => match list_merge(parent, name) {
            ListMerge::Key(key) => {
                let mut out = Map::new();
                for item in items {
                    if let Some(k) = item.get(key) {
                        let mut child = fields_of(item, Some(name));
                        if let Some(c) = child.as_object_mut() {
                            c.insert(".".into(), json!({}));
                        }
                        out.insert(format!("k:{}", json!({ key: k })), child);
                    }
                }
                Value::Object(out)
            }
            ListMerge::Set => Value::Object(items.iter().map(|i| (format!("v:{i}"), json!({}))).collect()),
            ListMerge::Replace => json!({}),
        },
        _ => json!({}),
    }
}

/// Removes from `obj` what `old` names and `new` does not.
fn prune(obj: &mut Value, old: &Value, new: &Value) {
    let (Some(old), Some(o)) = (old.as_object(), obj.as_object_mut()) else { return };
    for (k, old_child) in old {
        let new_child = new.get(k);
        if let Some(field) = k.strip_prefix("f:") {
            match new_child {
                None => {
                    o.remove(field);
                }
                Some(nc) => {
                    if let Some(child) = o.get_mut(field) {
                        match child {
                            Value::Array(items) => prune_list(items, old_child, nc),
                            _ => prune(child, old_child, nc),
                        }
                    }
                }
            }
        }
    }
}

fn prune_list(items: &mut Vec<Value>, old: &Value, new: &Value) {
    let Some(old) = old.as_object() else { return };
    for (k, old_child) in old {
        if let Some(key) = k.strip_prefix("k:") {
            let Ok(Value::Object(want)) = serde_json::from_str::<Value>(key) else { continue };
            let matches = |i: &Value| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv));
            match new.get(k) {
                None => items.retain(|i| !matches(i)),
                Some(nc) => {
                    for i in items.iter_mut().filter(|i| matches(i)) {
                        prune(i, old_child, nc);
                    }
                }
            }
        } else if let Some(v) = k.strip_prefix("v:") {
            if new.get(k).is_none() {
                if let Ok(val) = serde_json::from_str::<Value>(v) {
                    items.retain(|i| *i != val);
                }
            }
        }
    }
}

/// The managed-fields entry of one apply.
fn entry(res: &Resource, manager: &str, set: Value) -> Value {
    json!({"manager": manager, "operation": "Apply", "apiVersion": res.api_version(), "time": meta::now(), "fieldsType": "FieldsV1", "fieldsV1": set})
}

fn with_entry(obj: &mut Value, res: &Resource, manager: &str, set: Value) {
    let mut entries: Vec<Value> = obj.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let mine = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";
    if entries.iter().any(|e| mine(e) && e["fieldsV1"] == set) {
        // The same fields again: keep the entry (and its time), so a no-op apply writes nothing.
        return;
    }
    entries.retain(|e| !mine(e));
    entries.push(entry(res, manager, set));
    meta::set(obj, "managedFields", Value::Array(entries));
}

impl Api {
    /// Server-side apply of `applied` by `manager` to the object `name`.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        self: &Arc<Self>,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        applied: &Value,
        manager: &str,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if manager.is_empty() {
            return Err(ApiError::bad_request("fieldManager is required for apply requests"));
        }
        if !applied.is_object() {
            return Err(ApiError::bad_request("the applied configuration must be an object"));
        }
        let body_name = meta::name(applied);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
        }
        let set = field_set(applied);
        let key = res.key(&self.store_prefix, ns, name);
        if self.store.get(&key, None).await.map_err(|e| super::store_error(res, name, e))?.is_none() {
            let mut obj = applied.clone();
            meta::set(&mut obj, "name", json!(name));
            with_entry(&mut obj, res, manager, set.clone());
            match self.create(res, ns, obj, opts).await {
                Err(e) if e.code == 409 => {}
                other => return other,
            }
        }
        let write_sub = if sub == Subresource::Scale { Subresource::Main } else { sub };
        self.guaranteed_update(res, ns, name, write_sub, opts, |current| {
            let mut base = current.clone();
            meta::set(&mut base, "resourceVersion", Value::Null);
            let old = current
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .and_then(|es| es.iter().find(|e| e["manager"] == manager && e["operation"] == "Apply"))
                .map(|e| e["fieldsV1"].clone())
                .unwrap_or(json!({}));
            let mut merged = patch::apply(PatchType::Strategic, &base, applied).map_err(ApiError::bad_request)?;
            meta::set(&mut merged, "resourceVersion", Value::Null);
            prune(&mut merged, &old, &set);
            with_entry(&mut merged, res, manager, set.clone());
            Ok(merged)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sets_name_keyed_elements_and_pruning_removes_what_was_dropped() {
        let a1 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}});
        let s1 = field_set(&a1);
        assert!(s1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:env"]["k:{\"name\":\"B\"}"].is_object(), "{s1}");
        assert!(s1["f:metadata"]["f:labels"]["f:b"].is_object());
        let a2 = json!({"metadata": {"name": "web", "labels": {"a": "1"}}, "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "y", "env": [{"name": "A", "value": "1"}]}]}}}});
        let s2 = field_set(&a2);
        let mut live = patch::apply(PatchType::Strategic, &a1, &a2).unwrap();
        prune(&mut live, &s1, &s2);
        assert_eq!(live["metadata"]["labels"], json!({"a": "1"}));
        assert!(live["spec"].get("replicas").is_none(), "replicas no longer applied: removed");
        let c = &live["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "y");
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
    }
}
