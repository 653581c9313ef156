//! PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902) through the json-patch
//! crate, and strategic merge patch written here — maps merge, lists with a patch merge key
//! (containers by name, ports by containerPort/port, env, volumes, ...) merge element-wise,
//! primitive sets union, and the directives kubectl sends: `$patch: replace|delete|merge`,
//! `$setElementOrder/FIELD`, `$deleteFromPrimitiveList/FIELD`, `$retainKeys`.
//!
//! How a list merges comes from [`ListRules`]: for the built-in kinds the patch strategies of
//! their Go types ([`BuiltinLists`]), for custom resources the `x-kubernetes-list-type` and
//! `x-kubernetes-list-map-keys` of their schema (server-side apply merges with the same rules).

use serde_json::{Map, Value};

/// The patch types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

/// A failed JSON patch operation in the words of upstream's JSON patch library.
fn json_patch_error(ops: &json_patch::Patch, e: &json_patch::PatchError) -> String {
    use json_patch::{PatchErrorKind, PatchOperation};
    let path = e.path.to_string();
    let op = match ops.0.get(e.operation) {
        Some(PatchOperation::Add(_)) => "add",
        Some(PatchOperation::Remove(_)) => "remove",
        Some(PatchOperation::Replace(_)) => "replace",
        Some(PatchOperation::Move(_)) => "move",
        Some(PatchOperation::Copy(_)) => "copy",
        Some(PatchOperation::Test(_)) | None => "test",
    };
    match e.kind {
        PatchErrorKind::TestFailed => format!("testing value {path} failed: test failed"),
        PatchErrorKind::InvalidFromPointer => format!("{op} operation does not apply: doc is missing from path: {path}: missing value"),
        PatchErrorKind::CannotMoveInsideItself => format!("{op} operation does not apply: cannot move {path} inside itself"),
        _ => format!("{op} operation does not apply: doc is missing path: {path}: missing value"),
    }
}

/// Applies `patch` (already parsed) to `original`, lists merging as the built-in kinds' do.
pub fn apply(kind: PatchType, original: &Value, patch: &Value) -> Result<Value, String> {
    apply_with(kind, original, patch, &BuiltinLists)
}

/// Applies `patch` to `original`, lists merging as `rules` say.
pub fn apply_with(kind: PatchType, original: &Value, patch: &Value, rules: &dyn ListRules) -> Result<Value, String> {
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("merge patch must be a JSON object".into());
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| format!("the JSON patch is not valid: {e}"))?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| json_patch_error(&ops, &e))?;
            Ok(doc)
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err("strategic merge patch must be a JSON object".into());
            }
            Ok(merge_map(original, patch, &mut vec![], rules)?.unwrap_or(Value::Null))
        }
    }
}

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// Atomic: the patch's list replaces the list.
    Replace,
    /// A map keyed by these fields of its elements: elements merge one by one.
    Keys(&'static [&'static str]),
    /// A set of primitives: union.
    Set,
}

/// Where the merge strategies of a kind's lists come from.
pub trait ListRules: Send + Sync {
    /// The strategy of list `field` in the map at `path` (field names from the root; a list's
    /// elements are at the list's path).
    fn list_merge(&self, path: &[String], field: &str) -> ListMerge;
}

/// The built-in kinds' lists (the patchStrategy/patchMergeKey tags of their Go types).
pub struct BuiltinLists;

impl ListRules for BuiltinLists {
    fn list_merge(&self, path: &[String], field: &str) -> ListMerge {
        list_merge(path.last().map(String::as_str), field)
    }
}

/// The patch strategy of the built-in kinds' list `field` whose parent field is `parent`.
pub fn list_merge(parent: Option<&str>, field: &str) -> ListMerge {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" | "secrets" => {
            ListMerge::Keys(&["name"])
        }
        "ports" => match parent {
            Some("containers" | "initContainers" | "ephemeralContainers") => ListMerge::Keys(&["containerPort"]),
            _ => ListMerge::Keys(&["port"]),
        },
        "volumeMounts" => ListMerge::Keys(&["mountPath"]),
        "volumeDevices" => ListMerge::Keys(&["devicePath"]),
        "hostAliases" | "podIPs" | "hostIPs" => ListMerge::Keys(&["ip"]),
        "conditions" | "addresses" => ListMerge::Keys(&["type"]),
        "ownerReferences" => ListMerge::Keys(&["uid"]),
        "taints" => ListMerge::Keys(&["key"]),
        "topologySpreadConstraints" => ListMerge::Keys(&["topologyKey"]),
        "finalizers" => ListMerge::Set,
        _ => ListMerge::Replace,
    }
}

/// The values of `keys` in a list element (None when one is missing).
pub fn key_values<'a>(item: &'a Value, keys: &[&str]) -> Option<Vec<&'a Value>> {
    keys.iter().map(|k| key_of(item, k)).collect()
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Merges patch map `patch` into `original`; None when the patch deletes the map.
fn merge_map(original: &Value, patch: &Value, path: &mut Vec<String>, rules: &dyn ListRules) -> Result<Option<Value>, String> {
    let Some(p) = patch.as_object() else { return Ok(Some(patch.clone())) };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Ok(Some(Value::Object(strip_directives(m))));
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    let mut out: Map<String, Value> = original.as_object().cloned().unwrap_or_default();
    let mut orders = vec![];
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            orders.push((field.to_string(), v.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(_) => {
                path.push(k.clone());
                let merged = merge_map(out.get(k).unwrap_or(&Value::Null), v, path, rules)?;
                path.pop();
                match merged {
                    Some(m) => out.insert(k.clone(), m),
                    None => out.remove(k),
                };
            }
            Value::Array(items) => {
                let how = rules.list_merge(path, k);
                let merged = merge_list(out.get(k), items, how, path, k, rules)?;
                out.insert(k.clone(), merged);
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (field, order) in orders {
        let how = rules.list_merge(path, &field);
        if let (Some(Value::Array(list)), Some(order)) = (out.get_mut(&field), order.as_array()) {
            reorder(list, order, how);
        }
    }
    Ok(Some(Value::Object(out)))
}

fn strip_directives(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter().filter(|(k, _)| !k.starts_with('$')).collect()
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.as_object().and_then(|m| m.get(key))
}

fn merge_list(original: Option<&Value>, patch: &[Value], how: ListMerge, path: &mut Vec<String>, field: &str, rules: &dyn ListRules) -> Result<Value, String> {
    if patch.iter().any(|i| key_of(i, "$patch").and_then(Value::as_str) == Some("replace")) {
        let items = patch.iter().filter(|i| key_of(i, "$patch").is_none()).cloned().collect();
        return Ok(Value::Array(items));
    }
    let orig: Vec<Value> = original.and_then(Value::as_array).cloned().unwrap_or_default();
    match how {
        ListMerge::Replace => {
            Ok(Value::Array(patch.iter().map(|i| i.as_object().map(|m| Value::Object(strip_directives(m.clone()))).unwrap_or(i.clone())).collect()))
        }
        ListMerge::Set => {
            let mut out = orig;
            for i in patch {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListMerge::Keys(keys) => {
            let mut out = orig;
            path.push(field.to_string());
            for item in patch {
                let Some(k) = key_values(item, keys) else {
                    path.pop();
                    let missing = keys.iter().find(|k| key_of(item, k).is_none()).unwrap_or(&"");
                    return Err(format!("map: {item} does not contain declared merge key: {missing}"));
                };
                let pos = out.iter().position(|o| key_values(o, keys).as_ref() == Some(&k));
                if key_of(item, "$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(pos) = pos {
                        out.remove(pos);
                    }
                    continue;
                }
                match pos {
                    Some(pos) => match merge_map(&out[pos], item, path, rules)? {
                        Some(m) => out[pos] = m,
                        None => {
                            out.remove(pos);
                        }
                    },
                    None => {
                        if let Some(m) = merge_map(&Value::Null, item, path, rules)? {
                            out.push(m);
                        }
                    }
                }
            }
            path.pop();
            Ok(Value::Array(out))
        }
    }
}

/// Orders `list` as `order` says (elements named there first, in that order; the rest after).
fn reorder(list: &mut Vec<Value>, order: &[Value], how: ListMerge) {
    let id = |v: &Value| -> Option<Vec<Value>> {
        match how {
            ListMerge::Keys(keys) => key_values(v, keys).map(|vs| vs.into_iter().cloned().collect()),
            _ => Some(vec![v.clone()]),
        }
    };
    let mut rest = std::mem::take(list);
    for o in order {
        let want = id(o);
        if let Some(pos) = rest.iter().position(|x| id(x) == want) {
            list.push(rest.remove(pos));
        }
    }
    list.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(orig: Value, patch: Value) -> Value {
        apply(PatchType::Strategic, &orig, &patch).unwrap()
    }

    #[test]
    fn containers_merge_by_name_and_ports_by_container_port() {
        let orig = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "b", "image": "y:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x:2", "ports": [{"containerPort": 443}], "env": [{"$patch": "delete", "name": "A"}]}]
        }}}});
        let got = smp(orig, patch);
        let cs = &got["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["name"], "b");
        assert_eq!(cs[1]["image"], "x:2");
        assert_eq!(cs[1]["ports"], json!([{"containerPort": 80}, {"containerPort": 443}]));
        assert_eq!(cs[1]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn maps_merge_nulls_delete_and_directives_apply() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}, "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch =
            json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]}, "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let got = smp(orig, patch);
        assert_eq!(got["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(got["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
        let got = smp(json!({"spec": {"ports": [{"port": 80, "name": "a"}]}}), json!({"spec": {"ports": [{"port": 80, "name": "b"}, {"port": 81}]}}));
        assert_eq!(got["spec"]["ports"], json!([{"port": 80, "name": "b"}, {"port": 81}]));
        let got = smp(json!({"data": {"a": "1"}}), json!({"data": {"$patch": "replace", "b": "2"}}));
        assert_eq!(got["data"], json!({"b": "2"}));
        let got = smp(json!({"args": ["a", "b"]}), json!({"args": ["c"]}));
        assert_eq!(got["args"], json!(["c"]));
    }

    #[test]
    fn merge_and_json_patches() {
        let got = apply(PatchType::Merge, &json!({"a": 1, "b": {"c": 2}}), &json!({"b": {"c": null, "d": 3}})).unwrap();
        assert_eq!(got, json!({"a": 1, "b": {"d": 3}}));
        let got = apply(PatchType::Json, &json!({"a": [1]}), &json!([{"op": "add", "path": "/a/-", "value": 2}])).unwrap();
        assert_eq!(got, json!({"a": [1, 2]}));
        assert!(apply(PatchType::Json, &json!({}), &json!([{"op": "remove", "path": "/x"}])).is_err());
    }
}
