//! The metrics.k8s.io/v1beta1 kinds (NodeMetrics, PodMetrics) as the API serves them: their
//! OpenAPI schemas under upstream's names (`kubectl explain`) and metrics-server's Table
//! columns (Name, one column per resource in name order, Window).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::strategy::{Column, Kind};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerMetrics {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DOC: &str =
    "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const TIMESTAMP_DOC: &str = "The following fields define time interval from which metrics were collected from the interval [Timestamp-Window, Timestamp].";
const USAGE_DOC: &str = "The memory usage is the memory working set.";

fn described(mut s: Schema, description: &str) -> Schema {
    s.ensure_object().insert("description".into(), description.into());
    s
}

fn usage_schema(gen: &mut SchemaGenerator) -> Value {
    json!({"description": USAGE_DOC, "type": "object", "additionalProperties": gen.subschema_for::<Quantity>()})
}

impl JsonSchema for NodeMetrics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics".into()
    }

    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "NodeMetrics sets resource usage metrics of a node.",
            "type": "object",
            "properties": {
                "apiVersion": {"description": API_VERSION_DOC, "type": "string"},
                "kind": {"description": KIND_DOC, "type": "string"},
                "metadata": described(gen.subschema_for::<ObjectMeta>(), METADATA_DOC),
                "timestamp": described(gen.subschema_for::<Time>(), TIMESTAMP_DOC),
                "window": {"type": "string"},
                "usage": usage_schema(gen),
            },
            "required": ["timestamp", "window", "usage"],
        })
    }
}

impl JsonSchema for ContainerMetrics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.ContainerMetrics".into()
    }

    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "ContainerMetrics sets resource usage metrics of a container.",
            "type": "object",
            "properties": {
                "name": {"description": "Container name corresponding to the one from pod.spec.containers.", "type": "string"},
                "usage": usage_schema(gen),
            },
            "required": ["name", "usage"],
        })
    }
}

impl JsonSchema for PodMetrics {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics".into()
    }

    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "PodMetrics sets resource usage metrics of a pod.",
            "type": "object",
            "properties": {
                "apiVersion": {"description": API_VERSION_DOC, "type": "string"},
                "kind": {"description": KIND_DOC, "type": "string"},
                "metadata": described(gen.subschema_for::<ObjectMeta>(), METADATA_DOC),
                "timestamp": described(gen.subschema_for::<Time>(), TIMESTAMP_DOC),
                "window": {"type": "string"},
                "containers": {
                    "description": "Metrics for all containers are collected within the same time window.",
                    "type": "array",
                    "items": gen.subschema_for::<ContainerMetrics>(),
                    "x-kubernetes-list-type": "atomic",
                },
            },
            "required": ["timestamp", "window", "containers"],
        })
    }
}

/// metrics-server's Name column.
const NAME: Column = Column { name: "Name", kind: "string", format: "name", description: "Name of the resource", priority: 0 };

fn columns() -> Vec<Column> {
    let quantity = |name: &'static str| Column { name, kind: "string", format: "quantity", description: "", priority: 0 };
    vec![NAME, quantity("cpu"), quantity("memory"), Column { name: "Window", kind: "string", format: "duration", description: "", priority: 0 }]
}

/// The sum of quantities, in the canonical form of the first one's format.
fn total<'a>(qs: impl Iterator<Item = &'a Quantity>) -> String {
    use berth_names::quantity::Quantity as Q;
    let mut format = None;
    let mut sum = Q::default();
    for q in qs {
        format.get_or_insert(Q::format_of(&q.0));
        sum = sum + Q::parse(&q.0).unwrap_or_default();
    }
    sum.canonical(format.unwrap_or(berth_names::quantity::Format::DecimalSi))
}

pub struct NodeMetricsKind;

impl Kind for NodeMetricsKind {
    type Object = NodeMetrics;

    fn columns(&self) -> Vec<Column> {
        columns()
    }

    fn cells(&self, m: &NodeMetrics, _now: Timestamp) -> Vec<Value> {
        let get = |r: &str| m.usage.get(r).map(|q| q.0.clone()).unwrap_or_else(|| "0".into());
        vec![json!(m.metadata.name.clone().unwrap_or_default()), json!(get("cpu")), json!(get("memory")), json!(m.window)]
    }
}

pub struct PodMetricsKind;

impl Kind for PodMetricsKind {
    type Object = PodMetrics;

    fn columns(&self) -> Vec<Column> {
        columns()
    }

    fn cells(&self, m: &PodMetrics, _now: Timestamp) -> Vec<Value> {
        let sum = |r: &str| total(m.containers.iter().filter_map(|c| c.usage.get(r)));
        vec![json!(m.metadata.name.clone().unwrap_or_default()), json!(sum("cpu")), json!(sum("memory")), json!(m.window)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_row_sums_its_containers() {
        let m: PodMetrics = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "window": "15.002s",
            "containers": [{"name": "a", "usage": {"cpu": "1500000n", "memory": "1024Ki"}}, {"name": "b", "usage": {"cpu": "500000n", "memory": "1024Ki"}}],
        }))
        .expect("pod metrics");
        assert_eq!(PodMetricsKind.cells(&m, Timestamp::now()), vec![json!("web"), json!("2m"), json!("2Mi"), json!("15.002s")]);
    }
}
