//! Events (core/v1): the `kubectl get events` columns and the field selectors kubectl and
//! controllers use (involvedObject.*, reason, type, source).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use serde_json::{json, Value};

use super::{col, wide, Column, Kind};
use crate::status::FieldError;
use crate::table::{age, human_duration};

pub struct Events;

impl Kind for Events {
    type Object = Event;

    fn validate(&self, e: &Event) -> Vec<FieldError> {
        let mut errs = vec![];
        if let (Some(ns), Some(ins)) = (e.metadata.namespace.as_deref(), e.involved_object.namespace.as_deref()) {
            if !ins.is_empty() && ns != ins {
                errs.push(FieldError::invalid("involvedObject.namespace", ins, "does not match event.namespace"));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            col("Last Seen", "string", "Time of the last occurrence of this event"),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future."),
            col(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col("Object", "string", "The object that this event is about."),
            wide("Subobject", "string", "The subobject that this event is about."),
            wide("Source", "string", "The component reporting this event."),
            col("Message", "string", "A human-readable description of the status of this operation."),
            wide("First Seen", "string", "The time at which the event was first recorded."),
            wide("Count", "string", "The number of times this event has occurred."),
            wide("Name", "string", "The name of the event."),
        ]
    }

    fn cells(&self, e: &Event, now: Timestamp) -> Vec<Value> {
        let first = e.first_timestamp.as_ref().or(e.metadata.creation_timestamp.as_ref());
        let last = e.last_timestamp.as_ref().or(first);
        let last_seen = match (&e.series, &e.event_time) {
            (Some(s), _) if s.last_observed_time.is_some() => {
                s.last_observed_time.as_ref().map(|t| human_duration(now.duration_since(t.0))).unwrap_or_default()
            }
            (_, Some(t)) if last.is_none() => human_duration(now.duration_since(t.0)),
            _ => age(last, now),
        };
        let source = e.source.clone().unwrap_or_default();
        let mut src = source.component.clone().unwrap_or_default();
        if src.is_empty() {
            src = e.reporting_component.clone().unwrap_or_default();
        }
        if let Some(h) = source.host.filter(|h| !h.is_empty()) {
            src = format!("{src}, {h}");
        }
        let count = e.series.as_ref().map(|s| s.count.unwrap_or(0)).or(e.count).unwrap_or(1);
        let kind = e.involved_object.kind.clone().unwrap_or_default().to_lowercase();
        vec![
            json!(last_seen),
            json!(e.type_.clone().unwrap_or_default()),
            json!(e.reason.clone().unwrap_or_default()),
            json!(format!("{kind}/{}", e.involved_object.name.clone().unwrap_or_default())),
            json!(e.involved_object.field_path.clone().unwrap_or_default()),
            json!(src),
            json!(e.message.clone().unwrap_or_default().trim()),
            json!(age(first, now)),
            json!(count),
            json!(e.metadata.name.clone().unwrap_or_default()),
        ]
    }

    fn fields(&self, e: &Event) -> Vec<(&'static str, String)> {
        let o = &e.involved_object;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            ("involvedObject.kind", s(&o.kind)),
            ("involvedObject.namespace", s(&o.namespace)),
            ("involvedObject.name", s(&o.name)),
            ("involvedObject.uid", s(&o.uid)),
            ("involvedObject.apiVersion", s(&o.api_version)),
            ("involvedObject.resourceVersion", s(&o.resource_version)),
            ("involvedObject.fieldPath", s(&o.field_path)),
            ("reason", s(&e.reason)),
            ("reportingComponent", s(&e.reporting_component)),
            ("source", e.source.as_ref().map(|x| s(&x.component)).unwrap_or_default()),
            ("type", s(&e.type_)),
        ]
    }
}
