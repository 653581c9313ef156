//! Structural schemas (a CRD version's `openAPIV3Schema`, as JSON): validation of a custom
//! resource against one with upstream's messages (`spec.replicas in body must be of type
//! integer: "string"`), pruning of the fields it does not declare, defaults, and the structural
//! checks a schema must pass to be accepted in a CRD. Paths are upstream's field paths
//! (`spec.list[0].name`); the object's root `apiVersion`, `kind` and `metadata` are the API's and
//! never pruned here.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::status::FieldError;

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The JSON type of a value, as the schema names it.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integral(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match want {
        "integer" => is_integral(v),
        "number" => v.is_number(),
        other => type_of(v) == other,
    }
}

/// A number as Go's `%v` prints a float64 (100, 1.5).
fn num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn name_of(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

/// The field errors of `v` (at `path`) under `schema`.
pub fn validate(schema: &Value, v: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    check(schema, v, path, &mut errs);
    errs
}

fn check(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() && flag(schema, "nullable") {
        return;
    }
    let name = name_of(path);
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(is_integral(v) || v.is_string()) {
            let t = type_of(v);
            errs.push(FieldError::invalid(path, t, format!("{name} in body must be of type integer,string: {:?}", t)));
            return;
        }
    } else if let Some(want) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(want, v) {
            let t = type_of(v);
            errs.push(FieldError::invalid(path, t, format!("{name} in body must be of type {want}: {t:?}")));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.iter().any(|a| same(a, v)) {
            let values = allowed.iter().map(|a| a.as_str().map(String::from).unwrap_or_else(|| a.to_string())).collect();
            errs.push(FieldError::not_supported_of(path, v.clone(), values));
        }
    }
    match v {
        Value::Number(n) => numeric(schema, n.as_f64().unwrap_or(0.0), v, path, errs),
        Value::String(s) => string(schema, s, path, errs),
        Value::Array(items) => array(schema, items, path, errs),
        Value::Object(m) => object(schema, m, path, errs),
        _ => {}
    }
    for sub in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        check(sub, v, path, errs);
    }
}

/// JSON equality with numbers compared by value (1 and 1.0 are the same).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn numeric(schema: &Value, f: f64, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let name = name_of(path);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if flag(schema, "exclusiveMinimum") && f <= min {
            errs.push(FieldError::invalid(path, v.clone(), format!("{name} in body should be greater than {}", num(min))));
        } else if f < min {
            errs.push(FieldError::invalid(path, v.clone(), format!("{name} in body should be greater than or equal to {}", num(min))));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if flag(schema, "exclusiveMaximum") && f >= max {
            errs.push(FieldError::invalid(path, v.clone(), format!("{name} in body should be less than {}", num(max))));
        } else if f > max {
            errs.push(FieldError::invalid(path, v.clone(), format!("{name} in body should be less than or equal to {}", num(max))));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0) {
        let q = f / m;
        if (q - q.round()).abs() > 1e-9 {
            errs.push(FieldError::invalid(path, v.clone(), format!("{name} in body should be a multiple of {}", num(m))));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let ok = match format {
            "int32" => is_integral(v) && f >= f64::from(i32::MIN) && f <= f64::from(i32::MAX),
            "int64" => is_integral(v),
            "float" => f.abs() <= f64::from(f32::MAX),
            _ => true,
        };
        if !ok {
            errs.push(FieldError::invalid(path, v.clone(), format!("{name} in body must be of type {format}: {:?}", v.to_string())));
        }
    }
}

fn string(schema: &Value, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let name = name_of(path);
    let chars = s.chars().count() as i64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_i64) {
        if chars > max {
            errs.push(FieldError::too_long(path, max));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_i64) {
        if chars < min {
            errs.push(FieldError::invalid(path, s, format!("{name} in body should be at least {min} chars long")));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s)) {
            errs.push(FieldError::invalid(path, s, format!("{name} in body should match '{pattern}'")));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        if !format_ok(format, s) {
            errs.push(FieldError::invalid(path, s, format!("{name} in body must be of type {format}: {s:?}")));
        }
    }
}

fn regex_of(cell: &'static OnceLock<Option<regex::Regex>>, pattern: &str) -> Option<&'static regex::Regex> {
    cell.get_or_init(|| regex::Regex::new(pattern).ok()).as_ref()
}

/// Whether `s` is of string format `format` (formats Berth does not know pass).
pub fn format_ok(format: &str, s: &str) -> bool {
    static UUID: OnceLock<Option<regex::Regex>> = OnceLock::new();
    static DATE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    static DURATION: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let matches = |cell, pattern| regex_of(cell, pattern).is_none_or(|re| re.is_match(s));
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => matches(&DATE, r"^\d{4}-\d{2}-\d{2}$") && s.parse::<jiff::civil::Date>().is_ok(),
        "uuid" => matches(&UUID, r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()),
        "hostname" => berth_names::dns1123_subdomain(s).is_empty(),
        "duration" => matches(&DURATION, r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        "int-or-string" => true,
        _ => true,
    }
}

fn array(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let name = name_of(path);
    if let Some(min) = schema.get("minItems").and_then(Value::as_i64) {
        if (items.len() as i64) < min {
            errs.push(FieldError::invalid(path, items.len(), format!("{name} in body should have at least {min} items")));
        }
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_i64) {
        if items.len() as i64 > max {
            errs.push(FieldError::too_many(path, items.len(), max));
        }
    }
    let set = flag(schema, "uniqueItems") || schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
    if set {
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|earlier| same(earlier, item)) {
                errs.push(FieldError::duplicate(format!("{path}[{i}]"), item.clone()));
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errs);
        }
    }
}

fn object(schema: &Value, m: &Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    let name = name_of(path);
    for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !m.contains_key(req) {
            errs.push(FieldError::required(child(path, req), ""));
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_i64) {
        if m.len() as i64 > max {
            errs.push(FieldError::too_many(path, m.len(), max));
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_i64) {
        if (m.len() as i64) < min {
            errs.push(FieldError::invalid(path, m.len(), format!("{name} in body should have at least {min} properties")));
        }
    }
    if flag(schema, "x-kubernetes-embedded-resource") {
        for field in ["apiVersion", "kind"] {
            if m.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(child(path, field), "must not be empty"));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in m {
        match props.and_then(|p| p.get(k)) {
            Some(s) => check(s, v, &child(path, k), errs),
            None => {
                if let Some(s) = additional {
                    check(s, v, &child(path, k), errs);
                }
            }
        }
    }
}

/// Removes from `v` every field `schema` does not declare (below `x-kubernetes-preserve-unknown-fields`
/// only undeclared fields of declared properties go). `root`: `v` is a whole object, whose
/// apiVersion, kind and metadata stay.
pub fn prune(schema: &Value, v: &mut Value, root: bool) {
    let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            m.retain(|k, _| {
                (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                    || props.is_some_and(|p| p.contains_key(k))
                    || preserve
                    || additional.is_some_and(|a| a.is_object() || a.as_bool() == Some(true))
            });
            for (k, child) in m.iter_mut() {
                if embedded && !root && k == "metadata" {
                    continue;
                }
                match props.and_then(|p| p.get(k)) {
                    Some(s) => prune(s, child, false),
                    None => {
                        if let Some(a) = additional.filter(|a| a.is_object()) {
                            prune(a, child, false);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    prune(s, item, false);
                }
            }
        }
        _ => {}
    }
}

/// Fills the defaults of `schema` into `v`: absent properties (and nulls of non-nullable ones)
/// with a `default` get it, then the defaults below are filled too.
pub fn default(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    let Some(d) = s.get("default") else { continue };
                    let absent = match m.get(k) {
                        None => true,
                        Some(Value::Null) => !flag(s, "nullable"),
                        Some(_) => false,
                    };
                    if absent {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(s) = props.get(k) {
                        default(s, child);
                    }
                }
            } else if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    default(a, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    default(s, item);
                }
            }
        }
        _ => {}
    }
}

/// The errors that keep `schema` (at field path `path`) from being structural, as upstream
/// reports them for `spec.versions[i].schema.openAPIV3Schema`.
pub fn structural_errors(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    match schema.get("type").and_then(Value::as_str) {
        None if !flag(schema, "x-kubernetes-preserve-unknown-fields") => {
            errs.push(FieldError::required(format!("{path}.type"), "must not be empty at the root"))
        }
        Some(t) if t != "object" => errs.push(FieldError::invalid(format!("{path}.type"), t, "must be object at the root")),
        _ => {}
    }
    node(schema, path, &mut errs);
    errs
}

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

fn node(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let t = schema.get("type").and_then(Value::as_str);
    if let Some(t) = t.filter(|t| !TYPES.contains(t)) {
        errs.push(FieldError::not_supported(format!("{path}.type"), t, TYPES));
    }
    if flag(schema, "x-kubernetes-int-or-string") && t.is_some() {
        errs.push(FieldError::invalid(format!("{path}.type"), t.unwrap_or(""), "must be empty if x-kubernetes-int-or-string is true"));
    }
    let exempt = |s: &Value| flag(s, "x-kubernetes-int-or-string") || flag(s, "x-kubernetes-preserve-unknown-fields");
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, s) in props.into_iter().flatten() {
        let p = format!("{path}.properties[{k}]");
        if s.get("type").is_none() && !exempt(s) {
            errs.push(FieldError::required(format!("{p}.type"), "must not be empty for specified object fields"));
        }
        node(s, &p, errs);
    }
    if let Some(a) = schema.get("additionalProperties") {
        if props.is_some_and(|p| !p.is_empty()) && (a.is_object() || a.as_bool() == Some(true)) {
            errs.push(FieldError::forbidden(format!("{path}.additionalProperties"), "additionalProperties and properties are mutual exclusive"));
        }
        if a.is_object() {
            let p = format!("{path}.additionalProperties");
            if a.get("type").is_none() && !exempt(a) {
                errs.push(FieldError::required(format!("{p}.type"), "must not be empty for specified object fields"));
            }
            node(a, &p, errs);
        }
    }
    match schema.get("items") {
        Some(items) if items.is_object() => {
            let p = format!("{path}.items");
            if items.get("type").is_none() && !exempt(items) {
                errs.push(FieldError::required(format!("{p}.type"), "must not be empty for specified array items"));
            }
            node(items, &p, errs);
        }
        Some(_) => errs.push(FieldError::forbidden(format!("{path}.items"), "items must be a schema object and not an array")),
        None if t == Some("array") => errs.push(FieldError::required(format!("{path}.items"), "must be specified")),
        None => {}
    }
    if let Some(d) = schema.get("default") {
        let mut pruned = d.clone();
        prune(schema, &mut pruned, false);
        if pruned != *d {
            errs.push(FieldError::invalid(format!("{path}.default"), crate::status::go_raw(d.to_string()), "must not have unknown fields"));
        }
        for e in validate(schema, d, "") {
            errs.push(FieldError { field: format!("{path}.default{}", if e.field.is_empty() { String::new() } else { format!(".{}", e.field) }), ..e });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                "image": {"type": "string", "maxLength": 10, "minLength": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "ratio": {"type": "number", "exclusiveMaximum": true, "maximum": 1},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "port": {"x-kubernetes-int-or-string": true},
                "when": {"type": "string", "format": "date-time"},
                "size": {"type": "integer", "format": "int32"},
                "note": {"type": "string", "nullable": true},
                "tags": {"type": "array", "maxItems": 2, "uniqueItems": true, "items": {"type": "string"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string", "default": "x"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}}
            }},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
        }})
    }

    fn messages(v: Value) -> Vec<String> {
        validate(&schema(), &v, "").iter().map(ToString::to_string).collect()
    }

    #[test]
    fn types_ranges_and_formats_fail_in_upstream_words() {
        let errs = messages(json!({"spec": {"cronSpec": "* * * * */5", "replicas": "string"}}));
        assert_eq!(errs, vec![r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#]);
        let errs = messages(
            json!({"spec": {"cronSpec": "* * * * */5", "replicas": 0, "ratio": 1, "mode": "medium", "image": "", "when": "yesterday", "size": 3000000000u64}}),
        );
        assert!(errs.contains(&"spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1".to_string()), "{errs:?}");
        assert!(errs.contains(&r#"spec.mode: Unsupported value: "medium": supported values: "fast", "slow""#.to_string()), "{errs:?}");
        assert!(errs.contains(&r#"spec.image: Invalid value: "": spec.image in body should be at least 1 chars long"#.to_string()), "{errs:?}");
        assert!(errs.contains(&r#"spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday""#.to_string()), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("spec.size: Invalid value: 3000000000: spec.size in body must be of type int32")), "{errs:?}");
        let errs = messages(json!({"spec": {"cronSpec": "bad", "image": "a-very-long-image", "tags": ["a", "a", "b"]}}));
        assert!(errs.iter().any(|e| e.starts_with(r#"spec.cronSpec: Invalid value: "bad": spec.cronSpec in body should match '"#)), "{errs:?}");
        assert!(errs.contains(&"spec.image: Too long: may not be more than 10 bytes".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.tags: Too many: 3: must have at most 2 items".to_string()), "{errs:?}");
        assert!(errs.contains(&r#"spec.tags[1]: Duplicate value: "a""#.to_string()), "{errs:?}");
    }

    #[test]
    fn required_nullable_int_or_string_and_maps() {
        assert_eq!(messages(json!({"spec": {}})), vec!["spec.cronSpec: Required value"]);
        assert!(messages(json!({"spec": {"cronSpec": "* * * * *", "note": null, "port": "http", "labels": {"a": "b"}}})).is_empty());
        assert!(messages(json!({"spec": {"cronSpec": "* * * * *", "port": 80}})).is_empty());
        let errs = messages(json!({"spec": {"cronSpec": "* * * * *", "port": true, "labels": {"a": 1}}}));
        assert!(errs.iter().any(|e| e.starts_with("spec.labels.a: Invalid value: \"integer\"")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("spec.port: Invalid value: \"boolean\"")), "{errs:?}");
        let errs = messages(json!({"spec": {"cronSpec": "* * * * *", "template": {"spec": {}}}}));
        assert_eq!(errs, vec!["spec.template.apiVersion: Required value: must not be empty", "spec.template.kind: Required value: must not be empty"]);
    }

    #[test]
    fn pruning_drops_undeclared_fields_but_keeps_preserved_and_embedded_metadata() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "extra": 1,
            "spec": {"cronSpec": "*", "foo": 1, "raw": {"anything": {"x": 1}}, "labels": {"k": "v"},
                "items": [{"name": "a", "junk": true}],
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}, "other": 2}}});
        prune(&schema(), &mut v, true);
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"cronSpec": "*", "raw": {"anything": {"x": 1}}, "labels": {"k": "v"}, "items": [{"name": "a"}],
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}}})
        );
    }

    #[test]
    fn defaults_fill_absent_fields_at_every_level() {
        let mut v = json!({"spec": {"cronSpec": "*", "items": [{}, {"name": "b"}]}});
        default(&schema(), &mut v);
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["items"], json!([{"name": "x"}, {"name": "b"}]));
    }

    #[test]
    fn schemas_must_be_structural() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let errs: Vec<String> =
            structural_errors(&json!({"properties": {"spec": {"properties": {"list": {"type": "array"}}}}}), p).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            vec![
                format!("{p}.type: Required value: must not be empty at the root"),
                format!("{p}.properties[spec].type: Required value: must not be empty for specified object fields"),
                format!("{p}.properties[spec].properties[list].items: Required value: must be specified"),
            ]
        );
        assert!(structural_errors(&schema(), p).is_empty());
    }
}
