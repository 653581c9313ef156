//! Stored objects kept as the JSON they are answered with, not as `serde_json::Value` trees: a
//! list of 10,000 pods is then the items' bytes written one after the other, and the watch cache
//! holds about the object's size per object instead of several times it.
//!
//! An [`Encoded`] object is split in two: its `apiVersion`/`kind` (the type fields a list item
//! goes without) and the rest, `body`, with `metadata.resourceVersion` set to the object's
//! revision. Only the top level and `metadata` are parsed to build one (as borrowed raw JSON);
//! everything below is copied as it was stored. Keys come out in the order a `Value` would write
//! them, so the bytes are those `decode_kv` followed by `serde_json::to_vec` gave.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

use berth_store::{KeyValue, Revision};

/// One object revision as JSON.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `"apiVersion":…,"kind":…` as stored (either may be missing; empty when both are).
    type_fields: Box<str>,
    /// The object without its type fields: `{"metadata":{…,"resourceVersion":"N"},…}`.
    body: Bytes,
}

type Fields<'a> = BTreeMap<String, &'a RawValue>;

impl Encoded {
    /// A stored value, with `metadata.resourceVersion` set to `revision`.
    pub fn new(stored: &[u8], revision: Revision) -> Result<Self, String> {
        let mut top: Fields = serde_json::from_slice(stored).map_err(|e| format!("not a JSON object: {e}"))?;
        let mut type_fields = String::new();
        for field in ["apiVersion", "kind"] {
            if let Some(v) = top.remove(field) {
                if !type_fields.is_empty() {
                    type_fields.push(',');
                }
                type_fields.push_str(&serde_json::to_string(field).map_err(|e| e.to_string())?);
                type_fields.push(':');
                type_fields.push_str(v.get());
            }
        }
        let rv = RawValue::from_string(serde_json::to_string(&revision.to_string()).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        // metadata that is not an object is replaced, as meta::set replaces it.
        let mut metadata: Fields = top.get("metadata").and_then(|m| serde_json::from_str(m.get()).ok()).unwrap_or_default();
        metadata.insert("resourceVersion".to_string(), &rv);
        // Written by hand (the keys in order, as a Value writes them) so that the new metadata
        // goes in without being encoded and parsed once more.
        let placeholder: &RawValue = serde_json::from_str("null").map_err(|e| e.to_string())?;
        top.insert("metadata".to_string(), placeholder);
        let mut body = Vec::with_capacity(stored.len() + 32);
        body.push(b'{');
        for (i, (key, value)) in top.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, key).map_err(|e| e.to_string())?;
            body.push(b':');
            if key == "metadata" {
                serde_json::to_writer(&mut body, &metadata).map_err(|e| e.to_string())?;
            } else {
                body.extend_from_slice(value.get().as_bytes());
            }
        }
        body.push(b'}');
        Ok(Encoded { type_fields: type_fields.into_boxed_str(), body: Bytes::from(body) })
    }

    /// A stored key-value, at its mod revision.
    pub fn from_kv(kv: &KeyValue) -> Result<Self, String> {
        Self::new(&kv.value, kv.mod_revision).map_err(|e| format!("stored object {} is not JSON: {e}", kv.key))
    }

    /// The same object at another resourceVersion (a deleted object carries its deletion's).
    pub fn at_revision(&self, revision: Revision) -> Result<Self, String> {
        let mut again = Self::new(&self.body, revision)?;
        again.type_fields = self.type_fields.clone();
        Ok(again)
    }

    /// The object without apiVersion and kind, as a list item.
    pub fn item(&self) -> &[u8] {
        &self.body
    }

    /// Writes the object with the type fields given (as a watch event sends it), or with
    /// its own when None.
    pub fn write_with_type(&self, out: &mut BytesMut, type_fields: Option<&str>) {
        let head = type_fields.unwrap_or(&self.type_fields);
        let rest = self.body.get(1..).unwrap_or_default();
        out.put_u8(b'{');
        out.put_slice(head.as_bytes());
        if !head.is_empty() && rest.first() != Some(&b'}') {
            out.put_u8(b',');
        }
        out.put_slice(rest);
    }

    /// The whole object as stored, with its resourceVersion.
    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.type_fields.len() + self.body.len() + 1);
        self.write_with_type(&mut out, None);
        out
    }

    /// The whole object as a Value.
    pub fn value(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.to_bytes()).map_err(|e| e.to_string())
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.type_fields.len() + self.body.len()
    }
}

/// `"apiVersion":"…","kind":"…"` for the type fields a served object carries.
pub fn type_fields(api_version: &str, kind: &str) -> String {
    format!("\"apiVersion\":{},\"kind\":{}", Value::from(api_version), Value::from(kind))
}

/// A JSON list answer written from encoded items: `{"apiVersion":…,"items":[…],"kind":…,"metadata":…}`.
pub fn list_body<'a>(api_version: &str, kind: &str, metadata: &Value, items: impl Iterator<Item = &'a [u8]> + Clone) -> Result<Vec<u8>, String> {
    let size: usize = items.clone().map(|i| i.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut out, api_version).map_err(|e| e.to_string())?;
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"],\"kind\":");
    serde_json::to_writer(&mut out, kind).map_err(|e| e.to_string())?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, metadata).map_err(|e| e.to_string())?;
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(value: &Value, rev: Revision) -> KeyValue {
        KeyValue { key: "/registry/pods/ns/a".into(), value: Bytes::from(serde_json::to_vec(value).unwrap()), create_revision: rev, mod_revision: rev }
    }

    #[test]
    fn encoding_matches_the_value_path() {
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"containers": [{"name": "c"}]}, "status": {}});
        let e = Encoded::from_kv(&kv(&pod, 42)).unwrap();
        let old = crate::cache::decode_kv(&kv(&pod, 42)).unwrap();
        assert_eq!(e.value().unwrap(), old);
        let mut item = old.clone();
        item.as_object_mut().unwrap().remove("kind");
        item.as_object_mut().unwrap().remove("apiVersion");
        assert_eq!(e.item(), serde_json::to_vec(&item).unwrap().as_slice());
        let later = e.at_revision(50).unwrap();
        assert_eq!(later.value().unwrap()["metadata"]["resourceVersion"], json!("50"));
        assert_eq!(later.value().unwrap()["kind"], json!("Pod"));
        let mut out = BytesMut::new();
        e.write_with_type(&mut out, Some(&type_fields("v2", "Other")));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["apiVersion"].clone(), v["kind"].clone(), v["spec"].clone()), (json!("v2"), json!("Other"), pod["spec"].clone()));
    }

    #[test]
    fn odd_objects_encode_as_the_value_path_does() {
        for odd in [json!({}), json!({"metadata": 5}), json!({"kind": "X"}), json!({"metadata": {"resourceVersion": "1"}, "apiVersion": "v1"})] {
            let e = Encoded::from_kv(&kv(&odd, 7)).unwrap();
            assert_eq!(e.value().unwrap(), crate::cache::decode_kv(&kv(&odd, 7)).unwrap(), "{odd}");
        }
        assert!(Encoded::new(b"[1]", 1).is_err());
        assert!(Encoded::new(b"{nope", 1).is_err());
    }

    #[test]
    fn list_bodies_parse_back() {
        let items = [Encoded::new(br#"{"kind":"Pod","metadata":{"name":"a"}}"#, 3).unwrap(), Encoded::new(br#"{"metadata":{"name":"b"}}"#, 4).unwrap()];
        let body = list_body("v1", "PodList", &json!({"resourceVersion": "4"}), items.iter().map(Encoded::item)).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "4"}, "items": [{"metadata": {"name": "a", "resourceVersion": "3"}}, {"metadata": {"name": "b", "resourceVersion": "4"}}]})
        );
        let empty = list_body("v1", "PodList", &json!({}), std::iter::empty::<&[u8]>()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&empty).unwrap()["items"], json!([]));
    }
}
