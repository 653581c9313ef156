//! Object metadata as the generic verbs handle it on JSON objects: reading and setting fields,
//! the resource version from the store's mod revision, generated names, timestamps, the checks
//! of metadata every kind shares (name grammar, namespace, labels, annotations), and detecting
//! fields the kind's type does not have (for `fieldValidation`).

use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::{check_name, FieldError};

/// `metadata.<field>` as a string.
pub fn get<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// Sets `metadata.<field>` (creating metadata when missing); Null removes it.
pub fn set(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if value.is_null() {
            m.remove(field);
        } else {
            m.insert(field.to_string(), value);
        }
    }
}

pub fn name(obj: &Value) -> &str {
    get(obj, "name").unwrap_or("")
}

/// The time now as the API writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A new UID.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `generateName` plus five random characters from upstream's alphabet (no vowels, no confusables).
pub fn generate_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = if base.len() > 58 { &base[..58] } else { base };
    let bytes = uuid::Uuid::new_v4();
    let suffix: String = bytes.as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    format!("{base}{suffix}")
}

/// Field errors of the metadata every kind shares.
pub fn validate(res: &Resource, obj: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let name = name(obj);
    if let Some(g) = get(obj, "generateName").filter(|g| !g.is_empty()) {
        // The prefix is checked as a name would be, allowing the trailing '-' generated names get.
        let trimmed = g.trim_end_matches('-');
        if !trimmed.is_empty() && !res.strategy.name_grammar()(trimmed).is_empty() {
            errs.extend(check_name("metadata.generateName", g, res.strategy.name_grammar()));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        errs.extend(check_name("metadata.name", name, res.strategy.name_grammar()));
    }
    if res.namespaced {
        errs.extend(check_name("metadata.namespace", get(obj, "namespace").unwrap_or(""), berth_names::dns1123_label));
    } else if get(obj, "namespace").is_some_and(|n| !n.is_empty()) {
        errs.push(FieldError::forbidden("metadata.namespace", "not allowed on this type"));
    }
    let labels: Option<std::collections::BTreeMap<String, String>> = obj.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok());
    errs.extend(crate::strategy::validate_labels("metadata.labels", labels.as_ref()));
    let mut total = 0;
    for (k, v) in obj.pointer("/metadata/annotations").and_then(Value::as_object).into_iter().flatten() {
        errs.extend(berth_names::qualified_name(k).into_iter().map(|r| FieldError::invalid("metadata.annotations", k.as_str(), r)));
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        errs.push(FieldError::invalid("metadata.annotations", "", format!("Too long: must have at most {} bytes", 256 * 1024)));
    }
    errs
}

/// Removes empty maps and lists from the metadata, as upstream's typed objects drop them when
/// encoding (`omitempty`): a patch that sets `annotations: {}` leaves no `annotations`.
pub fn drop_empty(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
            let empty = match m.get(field) {
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                m.remove(field);
            }
        }
    }
}

/// Paths of the fields in `input` that `known` (the same object through the kind's type) lost.
pub fn unknown_fields(input: &Value, known: &Value) -> Vec<String> {
    let mut out = vec![];
    walk(input, known, String::new(), &mut out);
    out
}

fn walk(input: &Value, known: &Value, path: String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match k.get(key) {
                    Some(kv) => walk(v, kv, p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                walk(iv, kv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_the_ones_the_type_dropped() {
        let input = json!({"spec": {"replicas": 1, "foo": 2, "containers": [{"name": "a", "bar": 1}]}, "x": null});
        let known = json!({"spec": {"replicas": 1, "containers": [{"name": "a"}]}});
        assert_eq!(unknown_fields(&input, &known), vec!["spec.containers[0].bar".to_string(), "spec.foo".to_string()]);
    }

    #[test]
    fn generated_names_keep_the_base() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
    }
}
