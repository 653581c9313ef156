//! Field ownership of non-apply writers (create, update, patch, the status subresource), as
//! upstream's field manager keeps it in `metadata.managedFields`: a writer's `Update` entry owns
//! the fields it set or changed, which it takes from every other manager; fields that went away
//! leave every set. Entries change only when ownership does, so a no-op write stays a no-op.
//! Field sets are FieldsV1 trees (`f:name`, `k:{key}` for list elements by merge key, `v:value`
//! for set members, `.` for an element itself; `{}` marks an owned leaf).

use serde_json::{json, Map, Value};

use crate::meta;
use crate::patch::ListRules;
use crate::rest::apply::fields_of_field;

/// Which part of an object a write owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything but status (and identity: apiVersion, kind, name, namespace, server-owned metadata).
    Main,
    /// Only status.
    Status,
}

const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// The field set of `obj` within `scope`, lists keyed as `rules` say.
pub fn field_set(obj: &Value, scope: Scope, rules: &dyn ListRules) -> Value {
    let mut top = Map::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        let keep = match scope {
            Scope::Status => k == "status",
            Scope::Main => !matches!(k.as_str(), "apiVersion" | "kind" | "status"),
        };
        if !keep {
            continue;
        }
        let mut v = v.clone();
        if k == "metadata" {
            if let Some(m) = v.as_object_mut() {
                m.retain(|mk, _| !SERVER_METADATA.contains(&mk.as_str()));
            }
            if v.as_object().is_none_or(|m| m.is_empty()) {
                continue;
            }
        }
        top.insert(format!("f:{k}"), fields_of_field(&mut vec![], k, &v, rules));
    }
    Value::Object(top)
}

fn is_leaf(v: &Value) -> bool {
    v.as_object().is_none_or(|m| m.is_empty())
}

/// The value a set key selects in `v` (a field, a list element by key, a set member).
fn select<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let v = v?;
    if let Some(f) = key.strip_prefix("f:") {
        return v.get(f);
    }
    if let Some(sel) = key.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(sel).ok()?;
        return v.as_array()?.iter().find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)));
    }
    if let Some(val) = key.strip_prefix("v:") {
        let want: Value = serde_json::from_str(val).ok()?;
        return v.as_array()?.iter().find(|i| **i == want);
    }
    None
}

/// The leaves of `set` (the set of `new`) whose value in `new` differs from the one in `old`.
pub fn changed(set: &Value, new: Option<&Value>, old: Option<&Value>) -> Value {
    let mut out = Map::new();
    for (k, child) in set.as_object().into_iter().flatten() {
        if k == "." {
            if old.is_none() {
                out.insert(k.clone(), json!({}));
            }
            continue;
        }
        let (n, o) = (select(new, k), select(old, k));
        if is_leaf(child) {
            if n != o {
                out.insert(k.clone(), json!({}));
            }
        } else {
            let c = changed(child, n, o);
            if !is_leaf(&c) {
                out.insert(k.clone(), c);
            }
        }
    }
    Value::Object(out)
}

/// `a` without what `b` owns (a leaf in `b` takes the whole subtree); empty parents go.
pub fn subtract(a: &Value, b: &Value) -> Value {
    let mut out = Map::new();
    for (k, av) in a.as_object().into_iter().flatten() {
        match b.get(k) {
            None => {
                out.insert(k.clone(), av.clone());
            }
            Some(bv) if is_leaf(bv) => {}
            Some(bv) if is_leaf(av) => {
                // a owns k whole, b owns parts of it: a keeps the rest (k as a leaf).
                let _ = bv;
                out.insert(k.clone(), av.clone());
            }
            Some(bv) => {
                let rest = subtract(av, bv);
                if !is_leaf(&rest) {
                    out.insert(k.clone(), rest);
                }
            }
        }
    }
    Value::Object(out)
}

/// Everything `a` or `b` owns.
pub fn union(a: &Value, b: &Value) -> Value {
    let mut out = a.as_object().cloned().unwrap_or_default();
    for (k, bv) in b.as_object().into_iter().flatten() {
        let merged = match out.get(k) {
            Some(av) if !is_leaf(av) && !is_leaf(bv) => union(av, bv),
            Some(av) if !is_leaf(av) => av.clone(),
            _ => bv.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

/// Records a write by `manager` that made `new` out of `old` (None: a create) in new's
/// managedFields.
pub fn record_update(new: &mut Value, old: Option<&Value>, manager: &str, api_version: &str, scope: Scope, rules: &dyn ListRules) {
    let new_set = field_set(new, scope, rules);
    let (took, gone) = match old {
        None => (new_set.clone(), json!({})),
        Some(o) => (changed(&new_set, Some(new), Some(o)), subtract(&field_set(o, scope, rules), &new_set)),
    };
    if is_leaf(&took) && is_leaf(&gone) {
        return;
    }
    let lost = union(&took, &gone);
    let subresource = if scope == Scope::Status { Some("status") } else { None };
    let mine = |e: &Value| e["manager"] == manager && e["operation"] == "Update" && e.get("subresource").and_then(Value::as_str) == subresource;
    let entries: Vec<Value> = new.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut mine_before = json!({});
    let mut out = vec![];
    for mut e in entries {
        if mine(&e) {
            mine_before = e["fieldsV1"].clone();
            continue;
        }
        let rest = subtract(&e["fieldsV1"], &lost);
        if is_leaf(&rest) {
            continue;
        }
        e["fieldsV1"] = rest;
        out.push(e);
    }
    let owned = union(&subtract(&mine_before, &gone), &took);
    if !is_leaf(&owned) {
        let mut entry =
            json!({"manager": manager, "operation": "Update", "apiVersion": api_version, "time": meta::now(), "fieldsType": "FieldsV1", "fieldsV1": owned});
        if let Some(s) = subresource {
            entry["subresource"] = json!(s);
        }
        out.push(entry);
    }
    meta::set(new, "managedFields", if out.is_empty() { Value::Null } else { Value::Array(out) });
}

/// The field manager of a request without `fieldManager`: the User-Agent up to its first '/'
/// (upstream's default), at most 128 characters.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    user_agent.split('/').next().unwrap_or("").chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_takes_what_it_changed_from_the_others() {
        let old = json!({"metadata": {"name": "d", "managedFields": [
            {"manager": "applier", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:paused": {}}}}
        ]}, "spec": {"replicas": 2, "paused": false}});
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        record_update(&mut new, Some(&old), "kubectl-scale", "apps/v1", Scope::Main, &crate::patch::BuiltinLists);
        let mf = new["metadata"]["managedFields"].as_array().unwrap().clone();
        assert_eq!(mf[0]["fieldsV1"], json!({"f:spec": {"f:paused": {}}}), "the applier lost replicas");
        assert_eq!(mf[1]["manager"], "kubectl-scale");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        // the same write again changes nothing: the entries (and their times) stay
        let again_old = new.clone();
        let mut again = new.clone();
        record_update(&mut again, Some(&again_old), "kubectl-scale", "apps/v1", Scope::Main, &crate::patch::BuiltinLists);
        assert_eq!(again, again_old);
    }

    #[test]
    fn a_create_owns_what_it_set_and_status_writes_own_only_status() {
        let mut obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        record_update(&mut obj, None, "kubectl-create", "v1", Scope::Main, &crate::patch::BuiltinLists);
        let set = &obj["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(set["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"], json!({}));
        assert!(set.get("f:status").is_none());
        let old = obj.clone();
        obj["status"]["phase"] = json!("Running");
        record_update(&mut obj, Some(&old), "kubelet", "v1", Scope::Status, &crate::patch::BuiltinLists);
        let kubelet = &obj["metadata"]["managedFields"][1];
        assert_eq!(kubelet["subresource"], "status");
        assert_eq!(kubelet["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
        assert_eq!(manager_from_user_agent("kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"), "kubectl");
    }
}
