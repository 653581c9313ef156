//! Request bodies in the Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`,
//! what kubectl 1.32+ typed commands send): the `k8s\0` envelope (runtime.Unknown with the
//! object's apiVersion and kind), then the object's message decoded by field number from the
//! generated table in `schema.rs` into the same JSON the object has in its JSON form. Special
//! messages map to their JSON forms (Quantity and Time to strings, IntOrString to a number or a
//! string, RawExtension to embedded JSON, bytes to base64). Zero values the Go encoder writes for
//! every non-pointer field are dropped, as JSON's omitempty drops them. Answers in protobuf (for
//! clients that prefer it) are encoded by the same table (`encode.rs`).

mod encode;
pub mod openapi_v2;
#[allow(clippy::all)]
mod schema;

pub use encode::{encode, has_message, watch_frame};

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// The type of one field.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    Msg(&'static str),
    MapStr,
    MapBytes,
    MapMsg(&'static str),
}

/// One field: number, JSON name, type, repeated. An empty name is an embedded struct (Go's
/// `json:",inline"`, like Volume's VolumeSource): its fields are the parent's in JSON.
#[derive(Debug, Clone, Copy)]
pub struct Field(pub u32, pub &'static str, pub Type, pub bool);

/// Pointer fields whose zero value means something (a Go encoder writes them only when set, so
/// a zero here was sent on purpose). Every other zero is dropped.
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "revisionHistoryLimit",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "allowPrivilegeEscalation",
    "privileged",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "immutable",
    "optional",
    "defaultMode",
    "mode",
    "gracePeriodSeconds",
    "sizeLimit",
    "hostUsers",
    "shareProcessNamespace",
    "setHostnameAsFQDN",
    "allocateLoadBalancerNodePorts",
    "publishNotReadyAddresses",
];

fn messages() -> &'static HashMap<&'static str, &'static [Field]> {
    static MAP: OnceLock<HashMap<&'static str, &'static [Field]>> = OnceLock::new();
    MAP.get_or_init(|| schema::MESSAGES.iter().map(|(n, f)| (*n, *f)).collect())
}

/// The message of a kind: core kinds in `api.core.v1`, other groups by the group's first label
/// (`apps` → `api.apps.v1`, `rbac.authorization.k8s.io` → `api.rbac.v1`), DeleteOptions from
/// meta/v1. The table holds every built-in group's messages, so a new built-in kind needs no
/// regeneration.
fn message_of(api_version: &str, kind: &str) -> String {
    if kind == "DeleteOptions" {
        return "apimachinery.pkg.apis.meta.v1.DeleteOptions".into();
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let pkg = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    format!("api.{pkg}.{version}.{kind}")
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// One field's raw value.
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A 32-bit value (no field of the served messages has one; skipped).
    Fixed32,
    Bytes(&'a [u8]),
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = vec![];
    while !r.done() {
        let key = r.varint()?;
        let (num, wire) = ((key >> 3) as u32, key & 7);
        let raw = match wire {
            0 => Raw::Varint(r.varint()?),
            1 => Raw::Fixed64(u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "bad fixed64")?)),
            2 => {
                let n = r.varint()? as usize;
                Raw::Bytes(r.take(n)?)
            }
            5 => {
                r.take(4)?;
                Raw::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((num, raw));
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// The scalar values of one occurrence of a field (several when a repeated scalar is packed).
fn scalars(t: Type, raw: &Raw<'_>) -> Result<Vec<Value>, String> {
    let one = |v: u64| -> Value {
        match t {
            Type::Bool => json!(v != 0),
            Type::I32 => json!(v as i64 as i32),
            _ => json!(v as i64),
        }
    };
    match (t, raw) {
        (Type::Str, Raw::Bytes(b)) => Ok(vec![json!(utf8(b)?)]),
        (Type::Bytes, Raw::Bytes(b)) => Ok(vec![json!(STANDARD.encode(b))]),
        (Type::Bool | Type::I32 | Type::I64, Raw::Varint(v)) => Ok(vec![one(*v)]),
        (Type::F64, Raw::Fixed64(v)) => Ok(vec![json!(f64::from_bits(*v))]),
        (Type::Bool | Type::I32 | Type::I64, Raw::Bytes(b)) => {
            let mut r = Reader { buf: b, pos: 0 };
            let mut out = vec![];
            while !r.done() {
                out.push(one(r.varint()?));
            }
            Ok(out)
        }
        (Type::F64, Raw::Bytes(b)) => Ok(b.chunks_exact(8).map(|c| json!(f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))).collect()),
        _ => Err("a field has the wrong wire type".into()),
    }
}

fn timestamp(seconds: i64, nanos: i64, micro: bool) -> Value {
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    let Ok(t) = jiff::Timestamp::new(seconds, nanos as i32) else { return Value::Null };
    let format = if micro { "%Y-%m-%dT%H:%M:%S%.6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
    json!(t.strftime(format).to_string())
}

/// Decodes one message as its JSON value.
fn message(name: &str, buf: &[u8]) -> Result<Value, String> {
    let ints = |buf: &[u8]| -> Result<HashMap<u32, i64>, String> {
        Ok(fields(buf)?.into_iter().filter_map(|(n, r)| if let Raw::Varint(v) = r { Some((n, v as i64)) } else { None }).collect())
    };
    let strings = |buf: &[u8]| -> Result<HashMap<u32, String>, String> {
        fields(buf)?.into_iter().filter_map(|(n, r)| if let Raw::Bytes(b) = r { Some(utf8(b).map(|s| (n, s))) } else { None }).collect()
    };
    match name {
        "apimachinery.pkg.api.resource.Quantity" => return Ok(strings(buf)?.remove(&1).map(Value::from).unwrap_or(json!("0"))),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let i = ints(buf)?;
            return Ok(if i.get(&1) == Some(&1) { json!(strings(buf)?.remove(&3).unwrap_or_default()) } else { json!(i.get(&2).copied().unwrap_or(0) as i32) });
        }
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let i = ints(buf)?;
            return Ok(timestamp(i.get(&1).copied().unwrap_or(0), i.get(&2).copied().unwrap_or(0), name.ends_with("MicroTime")));
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let ns = ints(buf)?.get(&1).copied().unwrap_or(0);
            return Ok(json!(format!("{}s", ns as f64 / 1e9)));
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = fields(buf)?.into_iter().find_map(|(n, r)| if let (1, Raw::Bytes(b)) = (n, r) { Some(b) } else { None }).unwrap_or(&[]);
            return Ok(serde_json::from_slice(raw).unwrap_or(Value::Null));
        }
        _ => {}
    }
    let schema = messages().get(name).ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut out = Map::new();
    for (num, raw) in fields(buf)? {
        let Some(Field(_, fname, t, repeated)) = schema.iter().find(|f| f.0 == num) else { continue };
        if let (true, Type::Msg(m), Raw::Bytes(b)) = (fname.is_empty(), t, &raw) {
            // an embedded struct: its fields are the parent's in JSON
            if let Value::Object(fields) = message(m, b)? {
                out.extend(fields);
            }
            continue;
        }
        let values: Vec<Value> = match (t, &raw) {
            (Type::Msg(m), Raw::Bytes(b)) => vec![message(m, b)?],
            (Type::MapStr | Type::MapBytes | Type::MapMsg(_), Raw::Bytes(b)) => {
                let mut key = String::new();
                let mut val = Value::Null;
                for (n, r) in fields(b)? {
                    match (n, r) {
                        (1, Raw::Bytes(k)) => key = utf8(k)?,
                        (2, Raw::Bytes(v)) => {
                            val = match t {
                                Type::MapStr => json!(utf8(v)?),
                                Type::MapBytes => json!(STANDARD.encode(v)),
                                Type::MapMsg(m) => message(m, v)?,
                                _ => Value::Null,
                            }
                        }
                        _ => {}
                    }
                }
                if val.is_null() {
                    val = match t {
                        Type::MapMsg(_) => json!({}),
                        _ => json!(""),
                    };
                }
                let entry = out.entry(fname.to_string()).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(key, val);
                }
                continue;
            }
            (Type::Msg(_), _) => return Err(format!("{name}.{fname} has the wrong wire type")),
            _ => scalars(*t, &raw)?,
        };
        if *repeated {
            let list = out.entry(fname.to_string()).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.extend(values);
            }
        } else if let Some(v) = values.into_iter().last() {
            let zero = match &v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Bool(b) => !b && !KEEP_ZERO.contains(fname),
                Value::Number(n) => n.as_f64() == Some(0.0) && !KEEP_ZERO.contains(fname),
                _ => false,
            };
            if zero {
                out.remove(*fname);
            } else {
                out.insert(fname.to_string(), v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body into the object's JSON form (with apiVersion and kind).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("the body does not start with the protobuf envelope's magic number")?;
    let unknown = fields(rest)?;
    let mut type_meta = HashMap::new();
    let mut raw: &[u8] = &[];
    for (n, r) in unknown {
        match (n, r) {
            (1, Raw::Bytes(b)) => {
                for (tn, tr) in fields(b)? {
                    if let Raw::Bytes(s) = tr {
                        type_meta.insert(tn, utf8(s)?);
                    }
                }
            }
            (2, Raw::Bytes(b)) => raw = b,
            (3, Raw::Bytes(b)) if !b.is_empty() => return Err("compressed protobuf bodies are not supported".into()),
            _ => {}
        }
    }
    let api_version = type_meta.remove(&1).unwrap_or_default();
    let kind = type_meta.remove(&2).unwrap_or_default();
    let mut obj = message(&message_of(&api_version, &kind), raw)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::encode::varint;
    use super::*;

    fn field(num: u32, bytes: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(num) << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn int(num: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(num) << 3, out);
        varint(v, out);
    }

    #[test]
    fn a_configmap_in_its_envelope_decodes_to_its_json_form() {
        let mut meta = vec![];
        field(1, b"web", &mut meta);
        field(2, b"", &mut meta);
        int(7, 0, &mut meta);
        field(8, &[], &mut meta);
        let mut entry = vec![];
        field(1, b"greeting", &mut entry);
        field(2, b"hello", &mut entry);
        let mut cm = vec![];
        field(1, &meta, &mut cm);
        field(2, &entry, &mut cm);
        let mut tm = vec![];
        field(1, b"v1", &mut tm);
        field(2, b"ConfigMap", &mut tm);
        let mut body = MAGIC.to_vec();
        field(1, &tm, &mut body);
        field(2, &cm, &mut body);
        let got = decode(&body).unwrap();
        assert_eq!(got, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"greeting": "hello"}}));
    }

    #[test]
    fn int_or_string_quantities_and_kept_zeros() {
        let mut ios = vec![];
        int(1, 1, &mut ios);
        field(3, b"http", &mut ios);
        assert_eq!(message("apimachinery.pkg.util.intstr.IntOrString", &ios).unwrap(), json!("http"));
        let mut q = vec![];
        field(1, b"100m", &mut q);
        assert_eq!(message("apimachinery.pkg.api.resource.Quantity", &q).unwrap(), json!("100m"));
        let mut spec = vec![];
        int(1, 0, &mut spec);
        int(5, 0, &mut spec);
        let got = message("api.apps.v1.DeploymentSpec", &spec).unwrap();
        assert_eq!(got, json!({"replicas": 0}), "replicas: 0 is kept, minReadySeconds: 0 dropped");
    }
}
