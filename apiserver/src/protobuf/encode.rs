//! Answers in the Kubernetes protobuf encoding: the inverse of the decoder, by the same table.
//! An object (or list) is its message in the `k8s\0` envelope (runtime.Unknown with apiVersion
//! and kind); a watch event is a length-prefixed WatchEvent whose object is an enveloped object,
//! as upstream's protobuf watch stream frames them. Kinds without a message answer in JSON.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::{message_of, messages, Field, Type, MAGIC};

/// A protobuf base-128 varint.
pub(super) fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn key(num: u32, wire: u64, out: &mut Vec<u8>) {
    varint((u64::from(num) << 3) | wire, out);
}

fn bytes_field(num: u32, b: &[u8], out: &mut Vec<u8>) {
    key(num, 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn int_field(num: u32, v: i64, out: &mut Vec<u8>) {
    key(num, 0, out);
    varint(v as u64, out);
}

/// Nanoseconds of a Go duration string ("1h2m3.5s", "300ms").
fn duration_nanos(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s.trim();
    let negative = rest.starts_with('-');
    rest = rest.trim_start_matches(['-', '+']);
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Some(if negative { -(total as i64) } else { total as i64 })
}

/// The message of the special types that have another JSON form.
fn special(name: &str, v: &Value, out: &mut Vec<u8>) -> Option<Result<(), String>> {
    match name {
        "apimachinery.pkg.api.resource.Quantity" => {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            bytes_field(1, s.as_bytes(), out);
        }
        "apimachinery.pkg.util.intstr.IntOrString" => match v {
            Value::String(s) => {
                int_field(1, 1, out);
                int_field(2, 0, out);
                bytes_field(3, s.as_bytes(), out);
            }
            other => {
                int_field(1, 0, out);
                int_field(2, other.as_i64().unwrap_or(0), out);
                bytes_field(3, b"", out);
            }
        },
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let t = match v.as_str().map(str::parse::<jiff::Timestamp>) {
                Some(Ok(t)) => t,
                _ => return Some(Err(format!("{v} is not a time"))),
            };
            int_field(1, t.as_second(), out);
            int_field(2, i64::from(t.subsec_nanosecond()), out);
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => match v.as_str().and_then(duration_nanos) {
            Some(ns) => int_field(1, ns, out),
            None => return Some(Err(format!("{v} is not a duration"))),
        },
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            bytes_field(1, &serde_json::to_vec(v).unwrap_or_default(), out);
        }
        _ => return None,
    }
    Some(Ok(()))
}

/// One scalar value of a field.
fn scalar(num: u32, t: Type, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match t {
        Type::Str => bytes_field(num, v.as_str().ok_or_else(|| format!("{v} is not a string"))?.as_bytes(), out),
        Type::Bytes => bytes_field(num, &STANDARD.decode(v.as_str().unwrap_or("")).map_err(|e| e.to_string())?, out),
        Type::Bool => int_field(num, i64::from(v.as_bool().ok_or_else(|| format!("{v} is not a boolean"))?), out),
        Type::I32 | Type::I64 => int_field(num, v.as_i64().ok_or_else(|| format!("{v} is not an integer"))?, out),
        Type::F64 => {
            key(num, 1, out);
            out.extend_from_slice(&v.as_f64().ok_or_else(|| format!("{v} is not a number"))?.to_bits().to_le_bytes());
        }
        Type::Msg(m) => {
            let mut inner = vec![];
            message(m, v, &mut inner)?;
            bytes_field(num, &inner, out);
        }
        Type::MapStr | Type::MapBytes | Type::MapMsg(_) => {
            let Some(map) = v.as_object() else { return Err(format!("{v} is not a map")) };
            // Go writes map entries sorted by key
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                let mut entry = vec![];
                bytes_field(1, k.as_bytes(), &mut entry);
                let value = &map[k];
                match t {
                    Type::MapStr => scalar(2, Type::Str, value, &mut entry)?,
                    Type::MapBytes => scalar(2, Type::Bytes, value, &mut entry)?,
                    Type::MapMsg(m) => scalar(2, Type::Msg(m), value, &mut entry)?,
                    _ => {}
                }
                bytes_field(num, &entry, out);
            }
        }
    }
    Ok(())
}

/// Encodes `v` as the message `name`.
fn message(name: &str, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    if let Some(r) = special(name, v, out) {
        return r;
    }
    let schema: &[Field] = messages().get(name).ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let Some(obj) = v.as_object() else { return Err(format!("{name}: {v} is not an object")) };
    for Field(num, fname, t, repeated) in schema {
        if let (true, Type::Msg(m)) = (fname.is_empty(), t) {
            // an embedded struct, written from the parent's fields (always, as Go does)
            scalar(*num, Type::Msg(m), v, out).map_err(|e| format!("{name}: {e}"))?;
            continue;
        }
        let Some(value) = obj.get(*fname).filter(|x| !x.is_null()) else { continue };
        if *repeated {
            for item in value.as_array().ok_or_else(|| format!("{name}.{fname} is not a list"))? {
                scalar(*num, *t, item, out)?;
            }
        } else {
            scalar(*num, *t, value, out).map_err(|e| format!("{name}.{fname}: {e}"))?;
        }
    }
    Ok(())
}

/// The message name of an object by its apiVersion and kind (Status from meta/v1).
fn message_name(api_version: &str, kind: &str) -> String {
    if kind == "Status" {
        return "apimachinery.pkg.apis.meta.v1.Status".into();
    }
    message_of(api_version, kind)
}

/// Whether objects of `kind` (and their lists) have a protobuf form.
pub fn has_message(api_version: &str, kind: &str) -> bool {
    messages().contains_key(message_name(api_version, kind).as_str())
}

/// An object (or list) in the protobuf envelope; `apiVersion` and `kind` name its message.
pub fn encode(api_version: &str, kind: &str, obj: &Value) -> Result<Vec<u8>, String> {
    let mut raw = vec![];
    message(&message_name(api_version, kind), obj, &mut raw)?;
    let mut type_meta = vec![];
    bytes_field(1, api_version.as_bytes(), &mut type_meta);
    bytes_field(2, kind.as_bytes(), &mut type_meta);
    let mut out = MAGIC.to_vec();
    bytes_field(1, &type_meta, &mut out);
    bytes_field(2, &raw, &mut out);
    bytes_field(3, b"", &mut out);
    bytes_field(4, b"", &mut out);
    Ok(out)
}

/// One frame of a protobuf watch stream: the length (4 bytes, big-endian), then a WatchEvent
/// (type, and the enveloped object as its RawExtension).
pub fn watch_frame(event_type: &str, api_version: &str, kind: &str, obj: &Value) -> Result<Vec<u8>, String> {
    let object = encode(api_version, kind, obj)?;
    let mut raw_ext = vec![];
    bytes_field(1, &object, &mut raw_ext);
    let mut event = vec![];
    bytes_field(1, event_type.as_bytes(), &mut event);
    bytes_field(2, &raw_ext, &mut event);
    let len = u32::try_from(event.len()).map_err(|_| "a watch event over 4 GiB".to_string())?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&event);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_lists_round_trip_through_the_decoder() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7", "creationTimestamp": "2026-12-03T07:06:08Z", "labels": {"b": "2", "a": "1"}}, "data": {"greeting": "hello"}});
        assert_eq!(super::super::decode(&encode("v1", "ConfigMap", &cm).unwrap()).unwrap(), cm);
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}}, "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"limits": {"cpu": "100m"}}}]}}}});
        assert_eq!(super::super::decode(&encode("apps/v1", "Deployment", &d).unwrap()).unwrap(), d);
        let list = json!({"metadata": {"resourceVersion": "9"}, "items": [{"metadata": {"name": "a"}}]});
        let bytes = encode("v1", "ConfigMapList", &list).unwrap();
        let mut back = super::super::decode(&bytes).unwrap();
        if let Some(m) = back.as_object_mut() {
            m.retain(|k, _| k != "apiVersion" && k != "kind");
        }
        assert_eq!(back, list);
        assert!(has_message("v1", "Status") && !has_message("example.com/v1", "Widget"));
        assert_eq!(duration_nanos("1h2m3.5s"), Some(3_723_500_000_000));
    }

    #[test]
    fn embedded_structs_are_nested_in_protobuf_and_flat_in_json() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
            "volumes": [{"name": "token", "projected": {"defaultMode": 420, "sources": [{"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "containers": [{"name": "c", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 3},
                "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}});
        let bytes = encode("v1", "Pod", &pod).unwrap();
        assert_eq!(super::super::decode(&bytes).unwrap(), pod);
        // Volume: name = 1, the embedded VolumeSource = 2 holding projected = 26
        let mut volume = vec![];
        message("api.core.v1.Volume", &pod["spec"]["volumes"][0], &mut volume).unwrap();
        assert_eq!(&volume[..3], &[0x0a, 5, b't']);
        assert_eq!(volume[7], 2 << 3 | 2, "the VolumeSource comes as field 2");
        let mut source = vec![];
        message("api.core.v1.VolumeSource", &pod["spec"]["volumes"][0], &mut source).unwrap();
        assert_eq!(source[0], 26 << 3 | 2, "projected is field 26 of VolumeSource");
    }

    #[test]
    fn watch_frames_are_length_prefixed() {
        let f = watch_frame("ADDED", "v1", "ConfigMap", &json!({"metadata": {"name": "a"}})).unwrap();
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len, f.len() - 4);
        assert_eq!(&f[4..6], &[0x0a, 5]);
        assert_eq!(&f[6..11], b"ADDED");
    }
}
