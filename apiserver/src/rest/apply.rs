//! Server-side apply (`application/apply-patch+yaml`), a first cut: the applied configuration is
//! merged into the live object (maps by key, lists with a merge key element by element, other
//! lists replaced), the fields the same field manager applied before and no longer applies are
//! removed, and the manager's field set is recorded in `metadata.managedFields` (FieldsV1, as
//! upstream writes it). An absent object is created. Fields another applier owns and this apply
//! would change (an applier's or an updater's, see `managed.rs`) are a 409 conflict, or with
//! `force=true` change owner.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{Subresource, WriteOptions, Written};
use crate::api::Api;
use crate::meta;
use crate::patch::{self, key_values, ListMerge, ListRules, PatchType};
use crate::resources::Resource;
use crate::status::ApiError;

/// The field set (FieldsV1) of an applied configuration, lists keyed as `rules` say.
pub(crate) fn field_set(obj: &Value, rules: &dyn ListRules) -> Value {
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
                        top.insert("f:metadata".into(), fields_of(&md, &mut vec!["metadata".into()], rules));
                    }
                }
                _ => {
                    top.insert(format!("f:{k}"), fields_of_field(&mut vec![], k, v, rules));
                }
            }
        }
    }
    Value::Object(top)
}

/// The fields of the map `v` at `path`.
fn fields_of(v: &Value, path: &mut Vec<String>, rules: &dyn ListRules) -> Value {
    let mut out = Map::new();
    if let Some(m) = v.as_object() {
        for (k, child) in m {
            out.insert(format!("f:{k}"), fields_of_field(path, k, child, rules));
        }
    }
    Value::Object(out)
}

/// The fields under field `name` (value `v`) of the map at `path`.
pub(crate) fn fields_of_field(path: &mut Vec<String>, name: &str, v: &Value, rules: &dyn ListRules) -> Value {
    match v {
        Value::Object(_) => {
            path.push(name.to_string());
            let out = fields_of(v, path, rules);
            path.pop();
            out
        }
        Value::Array(items) => match rules.list_merge(path, name) {
            ListMerge::Keys(keys) => {
                let mut out = Map::new();
                path.push(name.to_string());
                for item in items {
                    if let Some(values) = key_values(item, keys) {
                        let mut child = fields_of(item, path, rules);
                        if let Some(c) = child.as_object_mut() {
                            c.insert(".".into(), json!({}));
                        }
                        let key: Map<String, Value> = keys.iter().zip(values).map(|(k, v)| (k.to_string(), v.clone())).collect();
                        out.insert(format!("k:{}", Value::Object(key)), child);
                    }
                }
                path.pop();
                Value::Object(out)
            }
            ListMerge::Set => Value::Object(items.iter().map(|i| (format!("v:{i}"), json!({}))).collect()),
            ListMerge::Replace => json!({}),
        },
        _ => json!({}),
    }
}

/// Removes from `obj` what `old` names and neither `new` nor `others` (what the other managers
/// own) does: a field another manager still owns part of loses only the rest.
fn prune(obj: &mut Value, old: &Value, new: &Value, others: &Value) {
    let (Some(old), Some(o)) = (old.as_object(), obj.as_object_mut()) else { return };
    let none = json!({});
    for (k, old_child) in old {
        let Some(field) = k.strip_prefix("f:") else { continue };
        let (new_child, other_child) = (new.get(k), others.get(k));
        if new_child.is_none() && other_child.is_none() {
            o.remove(field);
            continue;
        }
        if let Some(child) = o.get_mut(field) {
            let (nc, oc) = (new_child.unwrap_or(&none), other_child.unwrap_or(&none));
            match child {
                Value::Array(items) => prune_list(items, old_child, nc, oc),
                _ => prune(child, old_child, nc, oc),
            }
        }
    }
}

fn prune_list(items: &mut Vec<Value>, old: &Value, new: &Value, others: &Value) {
    let Some(old) = old.as_object() else { return };
    let none = json!({});
    for (k, old_child) in old {
        if let Some(key) = k.strip_prefix("k:") {
            let Ok(Value::Object(want)) = serde_json::from_str::<Value>(key) else { continue };
            let matches = |i: &Value| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv));
            match (new.get(k), others.get(k)) {
                (None, None) => items.retain(|i| !matches(i)),
                (nc, oc) => {
                    for i in items.iter_mut().filter(|i| matches(i)) {
                        prune(i, old_child, nc.unwrap_or(&none), oc.unwrap_or(&none));
                    }
                }
            }
        } else if let Some(v) = k.strip_prefix("v:") {
            if new.get(k).is_none() && others.get(k).is_none() {
                if let Ok(val) = serde_json::from_str::<Value>(v) {
                    items.retain(|i| *i != val);
                }
            }
        }
    }
}

/// The leaves both field sets name where the applied value differs from the live one: their
/// printed paths (`.spec.replicas`, `.spec.containers[name="web"].image`) and set paths.
fn conflicting<'a>(
    mine: &Value,
    theirs: &Value,
    applied: Option<&'a Value>,
    live: Option<&'a Value>,
    printed: String,
    keys: &mut Vec<String>,
    out: &mut Vec<(String, Vec<String>)>,
) {
    let (Some(m), Some(t)) = (mine.as_object(), theirs.as_object()) else { return };
    let leaf = |v: &serde_json::Map<String, Value>| v.keys().all(|k| k == ".");
    if leaf(m) || leaf(t) {
        if applied != live {
            out.push((if printed.is_empty() { ".".into() } else { printed }, keys.clone()));
        }
        return;
    }
    for (k, mv) in m {
        let Some(tv) = t.get(k) else { continue };
        let (child_applied, child_live, child_printed) = if let Some(f) = k.strip_prefix("f:") {
            (applied.and_then(|a| a.get(f)), live.and_then(|l| l.get(f)), format!("{printed}.{f}"))
        } else if let Some(sel) = k.strip_prefix("k:") {
            let want: serde_json::Map<String, Value> = serde_json::from_str(sel).unwrap_or_default();
            fn find<'b>(list: Option<&'b Value>, want: &serde_json::Map<String, Value>) -> Option<&'b Value> {
                list.and_then(Value::as_array).and_then(|l| l.iter().find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv))))
            }
            let shown = want.iter().map(|(wk, wv)| format!("{wk}={wv}")).collect::<Vec<_>>().join(",");
            (find(applied, &want), find(live, &want), format!("{printed}[{shown}]"))
        } else {
            continue;
        };
        keys.push(k.clone());
        conflicting(mv, tv, child_applied, child_live, child_printed, keys, out);
        keys.pop();
    }
}

/// Removes the subtree at `path` (set keys) from a field set, and the parents it leaves empty
/// (an empty map there would read as owning the parent as a whole).
fn remove_path(set: &mut Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    let Some(m) = set.as_object_mut() else { return false };
    let now_empty = if rest.is_empty() {
        m.remove(first);
        m.is_empty()
    } else {
        let Some(child) = m.get_mut(first) else { return false };
        if remove_path(child, rest) {
            m.remove(first);
        }
        m.is_empty()
    };
    now_empty
}

/// 409 in upstream's words: `Apply failed with 1 conflict: conflict with "m" using apps/v1: .spec.replicas`.
fn conflict_error(res: &Resource, name: &str, conflicts: &[(String, String, Vec<String>)]) -> ApiError {
    let total: usize = conflicts.iter().map(|c| c.2.len()).sum();
    let mut causes = vec![];
    let mut parts = vec![];
    for (who, version, paths) in conflicts {
        for p in paths {
            causes.push(json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{who}\" using {version}"), "field": p}));
        }
        parts.push(match paths.as_slice() {
            [one] => format!("conflict with \"{who}\" using {version}: {one}"),
            many => format!("conflicts with \"{who}\" using {version}:\n{}", many.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")),
        });
    }
    let plural = if total == 1 { "" } else { "s" };
    let mut details = json!({"name": name, "kind": res.plural, "causes": causes});
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    ApiError { code: 409, reason: "Conflict", message: format!("Apply failed with {total} conflict{plural}: {}", parts.join("\n")), details: Some(details) }
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
        force: bool,
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
        let rules = res.strategy.list_rules();
        let set = field_set(applied, rules);
        // This apply records its own Apply entry: the inner create and update record none.
        let opts = &WriteOptions { field_manager: None, ..opts.clone() };
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
        self.guaranteed_update(res, ns, name, sub, opts, |current| {
            let mut base = current.clone();
            meta::set(&mut base, "resourceVersion", Value::Null);
            let old = current
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .and_then(|es| es.iter().find(|e| e["manager"] == manager && e["operation"] == "Apply"))
                .map(|e| e["fieldsV1"].clone())
                .unwrap_or(json!({}));
            let mut merged = patch::apply_with(PatchType::Strategic, &base, applied, rules).map_err(ApiError::bad_request)?;
            meta::set(&mut merged, "resourceVersion", Value::Null);
            // Fields another applier owns and this apply would change: a conflict, or with
            // force, theirs no more.
            let mut entries: Vec<Value> = merged.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut conflicts: Vec<(String, String, Vec<String>)> = vec![];
            for e in entries.iter_mut().filter(|e| !(e["operation"] == "Apply" && e["manager"] == manager)) {
                let mut paths = vec![];
                conflicting(&set, &e["fieldsV1"], Some(applied), Some(&base), String::new(), &mut vec![], &mut paths);
                if paths.is_empty() {
                    continue;
                }
                if force {
                    for p in &paths {
                        remove_path(&mut e["fieldsV1"], &p.1);
                    }
                    let emptied = e["fieldsV1"].as_object().is_some_and(|m| m.is_empty());
                    if emptied {
                        e["fieldsV1"] = json!({});
                    }
                } else {
                    let who = e["manager"].as_str().unwrap_or("").to_string();
                    let version = e["apiVersion"].as_str().unwrap_or("").to_string();
                    conflicts.push((who, version, paths.into_iter().map(|p| p.0).collect()));
                }
            }
            if !conflicts.is_empty() {
                return Err(conflict_error(res, name, &conflicts));
            }
            entries.retain(|e| e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));
            let others = entries
                .iter()
                .filter(|e| !(e["operation"] == "Apply" && e["manager"] == manager))
                .fold(json!({}), |all, e| crate::managed::union(&all, &e["fieldsV1"]));
            meta::set(&mut merged, "managedFields", Value::Array(entries));
            prune(&mut merged, &old, &set, &others);
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
        let s1 = field_set(&a1, &patch::BuiltinLists);
        assert!(s1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:env"]["k:{\"name\":\"B\"}"].is_object(), "{s1}");
        assert!(s1["f:metadata"]["f:labels"]["f:b"].is_object());
        let a2 = json!({"metadata": {"name": "web", "labels": {"a": "1"}}, "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "y", "env": [{"name": "A", "value": "1"}]}]}}}});
        let s2 = field_set(&a2, &patch::BuiltinLists);
        let mut live = patch::apply(PatchType::Strategic, &a1, &a2).unwrap();
        prune(&mut live, &s1, &s2, &json!({}));
        assert_eq!(live["metadata"]["labels"], json!({"a": "1"}));
        assert!(live["spec"].get("replicas").is_none(), "replicas no longer applied: removed");
        let c = &live["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "y");
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
    }

    #[test]
    fn conflicts_are_leaves_both_own_with_a_new_value_and_forced_ones_leave_no_empty_parents() {
        let mine = field_set(&json!({"data": {"a": "2", "b": "1"}}), &patch::BuiltinLists);
        let mut theirs = field_set(&json!({"data": {"a": "1", "b": "1"}}), &patch::BuiltinLists);
        let live = json!({"data": {"a": "1", "b": "1"}});
        let mut out = vec![];
        conflicting(&mine, &theirs, Some(&json!({"data": {"a": "2", "b": "1"}})), Some(&live), String::new(), &mut vec![], &mut out);
        assert_eq!(out, vec![(".data.a".to_string(), vec!["f:data".to_string(), "f:a".to_string()])]);
        remove_path(&mut theirs, &out[0].1);
        assert_eq!(theirs, json!({"f:data": {"f:b": {}}}));
        remove_path(&mut theirs, &["f:data".to_string(), "f:b".to_string()]);
        assert_eq!(theirs, json!({}));
    }
}
