//! Server-side Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the
//! columns and cells a kind's strategy defines, with row objects as `includeObject` asks
//! (None, Metadata = PartialObjectMetadata, Object), and the ages printed as upstream prints them.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::strategy::{Column, AGE_COLUMN, NAME_COLUMN};

/// What each row carries besides its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!("includeObject: Unsupported value: {other:?}: supported values: \"Object\", \"Metadata\", \"None\"")),
        }
    }
}

/// A duration as upstream's `duration.HumanDuration` prints it (`5s`, `2m3s`, `4h`, `3d5h`, `2y`).
pub fn human_duration(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// The Age cell of an object created at `t`.
pub fn age(t: Option<&Time>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t.0)),
        None => "<unknown>".into(),
    }
}

fn column_json(c: &Column) -> Value {
    json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
}

/// The columns of a resource (the default Name/Created At table when its strategy has none).
fn columns(res: &Resource) -> Vec<Column> {
    let cols = res.strategy.columns();
    if cols.is_empty() {
        vec![NAME_COLUMN, Column { name: "Created At", kind: "date", ..AGE_COLUMN }]
    } else {
        cols
    }
}

fn cells(res: &Resource, obj: &Value, now: Timestamp) -> Vec<Value> {
    if res.strategy.columns().is_empty() {
        return vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!("")), obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)];
    }
    res.strategy.cells(obj, now)
}

fn row(res: &Resource, obj: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let mut row = json!({"cells": cells(res, obj, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] =
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))});
        }
        IncludeObject::Object => {
            let mut o = obj.clone();
            o["kind"] = json!(res.kind);
            o["apiVersion"] = json!(res.api_version());
            row["object"] = o;
        }
    }
    row
}

/// A Table of `items` with list metadata `meta` (resourceVersion, continue, remainingItemCount).
pub fn table(res: &Resource, items: &[Value], meta: Value, include: IncludeObject, with_columns: bool) -> Value {
    let now = Timestamp::now();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "rows": items.iter().map(|o| row(res, o, include, now)).collect::<Vec<_>>(),
    });
    t["columnDefinitions"] = if with_columns { json!(columns(res).iter().map(column_json).collect::<Vec<_>>()) } else { json!([]) };
    t
}

/// The Table of a Scale subresource (`kubectl get deploy x --subresource=scale`).
pub fn scale_table(scale: &Value, include: IncludeObject) -> Value {
    let cols = [
        NAME_COLUMN,
        Column { name: "Desired", kind: "integer", format: "", description: "desired number of instances for the scaled object.", priority: 0 },
        Column { name: "Available", kind: "integer", format: "", description: "actual number of observed instances of the scaled object.", priority: 0 },
    ];
    let mut row = json!({"cells": [
        scale.pointer("/metadata/name").cloned().unwrap_or(json!("")),
        scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0)),
        scale.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
    ]});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": scale["metadata"].clone()})
        }
        IncludeObject::Object => row["object"] = scale.clone(),
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": scale.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))},
        "columnDefinitions": cols.iter().map(column_json).collect::<Vec<_>>(),
        "rows": [row],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_upstream() {
        let s = SignedDuration::from_secs;
        assert_eq!(human_duration(s(5)), "5s");
        assert_eq!(human_duration(s(119)), "119s");
        assert_eq!(human_duration(s(125)), "2m5s");
        assert_eq!(human_duration(s(600)), "10m");
        assert_eq!(human_duration(s(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(s(10 * 3600)), "10h");
        assert_eq!(human_duration(s(3 * 86400 + 3600)), "3d1h");
        assert_eq!(human_duration(s(30 * 86400)), "30d");
        assert_eq!(human_duration(s(-5)), "<invalid>");
    }
}
