//! /openapi/v2 in protobuf: the swagger document as gnostic's `openapi.v2.Document` message,
//! the form kubectl fetches (media type
//! `application/com.github.proto-openapi.spec.v2.v1.0+protobuf`) for `kubectl explain
//! --output=plaintext-openapiv2` and for the patch metadata of `kubectl apply`.
//!
//! kubectl parses each definition with kube-openapi's `proto` package, whose versions differ in
//! what they accept; the schemas are written in the shape every version since 1.27 reads:
//! - an object with properties has no `type` (older parsers take `type: object` for a map);
//! - a map (`type: object`) always has an `additionalProperties` schema; an object with neither
//!   properties nor such a schema is written without a type (an arbitrary value);
//! - `x-kubernetes-int-or-string` is upstream's `type: string, format: int-or-string`;
//! - a reference carries nothing but `$ref` and a description;
//! - JSON-schema words gnostic has no field for (`anyOf`, `oneOf`, `not`) are left out.
//!
//! Extensions (`x-...`) are `NamedAny`s whose value is YAML text; JSON is YAML, so each value is
//! its JSON text, as kube-openapi reads it back with a YAML decoder.

use serde_json::{Map, Value};

use super::encode::varint;

/// One message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn key(&mut self, num: u32, wire: u64) {
        varint((u64::from(num) << 3) | wire, &mut self.0);
    }

    fn bytes(&mut self, num: u32, b: &[u8]) {
        self.key(num, 2);
        varint(b.len() as u64, &mut self.0);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, num: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(num, s.as_bytes());
        }
    }

    fn msg(&mut self, num: u32, m: Msg) {
        self.bytes(num, &m.0);
    }

    fn boolean(&mut self, num: u32, b: bool) {
        if b {
            self.key(num, 0);
            varint(1, &mut self.0);
        }
    }

    fn int64(&mut self, num: u32, v: i64) {
        if v != 0 {
            self.key(num, 0);
            varint(v as u64, &mut self.0);
        }
    }

    fn double(&mut self, num: u32, v: f64) {
        if v != 0.0 {
            self.key(num, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// `openapi.v2.Any` holding a value as YAML (its JSON text).
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &v.to_string());
    m
}

/// `openapi.v2.NamedAny`.
fn named_any(name: &str, v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, name);
    m.msg(2, any(v));
    m
}

/// The vendor extensions of a JSON object, in field `num`.
fn extensions(m: &mut Msg, num: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        m.msg(num, named_any(k, v));
    }
}

fn str_of<'a>(obj: &'a Map<String, Value>, k: &str) -> &'a str {
    obj.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `openapi.v2.Schema`.
fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(obj) = v.as_object() else { return m };
    let reference = str_of(obj, "$ref");
    if !reference.is_empty() {
        m.string(1, reference);
        m.string(4, str_of(obj, "description"));
        return m;
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let format = if int_or_string { "int-or-string" } else { str_of(obj, "format") };
    m.string(2, format);
    m.string(3, str_of(obj, "title"));
    m.string(4, str_of(obj, "description"));
    if let Some(d) = obj.get("default") {
        m.msg(5, any(d));
    }
    let f = |k: &str| obj.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let i = |k: &str| obj.get(k).and_then(Value::as_i64).unwrap_or(0);
    let b = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    m.double(6, f("multipleOf"));
    m.double(7, f("maximum"));
    m.boolean(8, b("exclusiveMaximum"));
    m.double(9, f("minimum"));
    m.boolean(10, b("exclusiveMinimum"));
    m.int64(11, i("maxLength"));
    m.int64(12, i("minLength"));
    m.string(13, str_of(obj, "pattern"));
    m.int64(14, i("maxItems"));
    m.int64(15, i("minItems"));
    m.boolean(16, b("uniqueItems"));
    m.int64(17, i("maxProperties"));
    m.int64(18, i("minProperties"));
    for r in obj.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        m.string(19, r);
    }
    for e in obj.get("enum").and_then(Value::as_array).into_iter().flatten() {
        m.msg(20, any(e));
    }
    let properties = obj.get("properties").and_then(Value::as_object);
    let map_of = obj.get("additionalProperties").filter(|a| a.is_object());
    let ty = if int_or_string {
        "string"
    } else {
        match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or(""),
            _ => "",
        }
    };
    if let Some(a) = map_of.filter(|_| properties.is_none()) {
        let mut item = Msg::default();
        item.msg(1, schema(a));
        m.msg(21, item);
    }
    let ty = match ty {
        "object" if properties.is_some() || map_of.is_none() => "",
        "array" if !obj.get("items").is_some_and(Value::is_object) => "",
        t => t,
    };
    if !ty.is_empty() {
        let mut t = Msg::default();
        t.string(1, ty);
        m.msg(22, t);
    }
    if let Some(items) = obj.get("items").filter(|v| v.is_object()).filter(|_| ty == "array") {
        let mut it = Msg::default();
        it.msg(1, schema(items));
        m.msg(23, it);
    }
    for a in obj.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        m.msg(24, schema(a));
    }
    if let Some(props) = properties {
        let mut p = Msg::default();
        for (name, s) in props {
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, schema(s));
            p.msg(1, named);
        }
        m.msg(25, p);
    }
    m.string(26, str_of(obj, "discriminator"));
    m.boolean(27, b("readOnly"));
    if let Some(e) = obj.get("example") {
        m.msg(30, any(e));
    }
    let ext: Map<String, Value> = obj.iter().filter(|(k, _)| k.as_str() != "x-kubernetes-int-or-string").map(|(k, v)| (k.clone(), v.clone())).collect();
    extensions(&mut m, 31, &ext);
    m
}

/// `openapi.v2.ParametersItem` for a query parameter (`{name, in, type|schema, ...}`).
fn parameter(p: &Value) -> Msg {
    let obj = p.as_object().cloned().unwrap_or_default();
    // v2 parameters say their type directly; v3 ones in a schema
    let word = |k: &str| obj.get(k).or_else(|| obj.get("schema").and_then(|s| s.get(k))).cloned();
    let ty = word("type").and_then(|t| t.as_str().map(String::from)).unwrap_or_else(|| "string".into());
    let unique = word("uniqueItems").and_then(|u| u.as_bool()).unwrap_or(false);
    let mut sub = Msg::default();
    sub.boolean(1, obj.get("required").and_then(Value::as_bool).unwrap_or(false));
    sub.string(2, str_of(&obj, "in"));
    sub.string(3, str_of(&obj, "description"));
    sub.string(4, str_of(&obj, "name"));
    sub.string(6, &ty);
    sub.boolean(20, unique);
    let mut non_body = Msg::default();
    let field = match str_of(&obj, "in") {
        "header" => 1,
        "formData" => 2,
        "path" => 4,
        _ => 3,
    };
    non_body.msg(field, sub);
    let mut param = Msg::default();
    param.msg(2, non_body);
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

/// `openapi.v2.Operation`.
fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(obj) = op.as_object() else { return m };
    m.string(3, str_of(obj, "description"));
    m.string(5, str_of(obj, "operationId"));
    for p in obj.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        m.msg(8, parameter(p));
    }
    let mut responses = Msg::default();
    for (code, r) in obj.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let mut response = Msg::default();
        response.string(1, r.get("description").and_then(Value::as_str).unwrap_or(""));
        let mut value = Msg::default();
        value.msg(1, response);
        let mut named = Msg::default();
        named.string(1, code);
        named.msg(2, value);
        responses.msg(1, named);
    }
    m.msg(9, responses);
    extensions(&mut m, 13, obj);
    m
}

/// The gnostic `Document` of a swagger 2.0 JSON document.
pub fn document(doc: &Value) -> Vec<u8> {
    let mut d = Msg::default();
    let empty = Map::new();
    let obj = doc.as_object().unwrap_or(&empty);
    d.string(1, str_of(obj, "swagger"));
    if let Some(info) = obj.get("info").and_then(Value::as_object) {
        let mut i = Msg::default();
        i.string(1, str_of(info, "title"));
        i.string(2, str_of(info, "version"));
        d.msg(2, i);
    }
    let mut paths = Msg::default();
    for (path, item) in obj.get("paths").and_then(Value::as_object).into_iter().flatten() {
        let mut pi = Msg::default();
        for (num, verb) in [(2, "get"), (3, "put"), (4, "post"), (5, "delete"), (8, "patch")] {
            if let Some(op) = item.get(verb) {
                pi.msg(num, operation(op));
            }
        }
        let mut named = Msg::default();
        named.string(1, path);
        named.msg(2, pi);
        paths.msg(2, named);
    }
    d.msg(8, paths);
    let mut definitions = Msg::default();
    for (name, s) in obj.get("definitions").and_then(Value::as_object).into_iter().flatten() {
        let mut named = Msg::default();
        named.string(1, name);
        named.msg(2, schema(s));
        definitions.msg(1, named);
    }
    d.msg(9, definitions);
    d.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Reads the (field, wire type, payload) triples of one message.
    fn fields(mut b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        fn read_varint(b: &mut &[u8]) -> u64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = vec![];
        while !b.is_empty() {
            let k = read_varint(&mut b);
            let (num, wire) = (k >> 3, k & 7);
            let payload = match wire {
                0 => read_varint(&mut b).to_le_bytes().to_vec(),
                1 => {
                    let p = b[..8].to_vec();
                    b = &b[8..];
                    p
                }
                2 => {
                    let n = read_varint(&mut b) as usize;
                    let p = b[..n].to_vec();
                    b = &b[n..];
                    p
                }
                w => panic!("wire type {w}"),
            };
            out.push((num, wire, payload));
        }
        out
    }

    fn field(b: &[u8], num: u64) -> Vec<Vec<u8>> {
        fields(b).into_iter().filter(|f| f.0 == num).map(|f| f.2).collect()
    }

    #[test]
    fn kinds_maps_and_int_or_string_take_the_shapes_every_kubectl_parses() {
        let kind = schema(&json!({"type": "object", "description": "d", "properties": {"a": {"type": "string"}}, "required": ["a"]}));
        assert!(field(&kind.0, 22).is_empty(), "an object with properties has no type");
        assert_eq!(field(&kind.0, 19), vec![b"a".to_vec()]);
        let props = &field(&kind.0, 25)[0];
        let named = &field(props, 1)[0];
        assert_eq!(field(named, 1), vec![b"a".to_vec()]);
        let map = schema(&json!({"type": "object", "additionalProperties": {"type": "string"}}));
        assert_eq!(field(&field(&map.0, 22)[0], 1), vec![b"object".to_vec()]);
        assert_eq!(field(&map.0, 21).len(), 1);
        let bare = schema(&json!({"type": "object", "additionalProperties": true}));
        assert!(field(&bare.0, 22).is_empty() && field(&bare.0, 21).is_empty(), "an arbitrary value");
        let ios = schema(&json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}));
        assert_eq!(field(&ios.0, 2), vec![b"int-or-string".to_vec()]);
        assert_eq!(field(&field(&ios.0, 22)[0], 1), vec![b"string".to_vec()]);
        assert!(field(&ios.0, 31).is_empty());
    }

    #[test]
    fn references_carry_only_the_reference_and_extensions_are_json_text() {
        let r = schema(&json!({"$ref": "#/definitions/x", "type": "object", "description": "why"}));
        assert_eq!(field(&r.0, 1), vec![b"#/definitions/x".to_vec()]);
        assert!(field(&r.0, 22).is_empty());
        let s = schema(&json!({"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-merge-key": "name"}));
        let ext = &field(&s.0, 31)[0];
        assert_eq!(field(ext, 1), vec![b"x-kubernetes-patch-merge-key".to_vec()]);
        assert_eq!(field(&field(ext, 2)[0], 2), vec![b"\"name\"".to_vec()]);
        assert_eq!(field(&s.0, 23).len(), 1);
    }
}
