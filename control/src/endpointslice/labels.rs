//! The metadata of a Service's EndpointSlices, as upstream's setEndpointSliceLabels and
//! newEndpointSlice: the service's labels (but the reserved ones) plus
//! `kubernetes.io/service-name`, `endpointslice.kubernetes.io/managed-by` and, for a headless
//! service, `service.kubernetes.io/headless`; generateName `<service>-`; the service as
//! controller owner. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controller::owner;
use crate::controller::service_pods::is_service_ip_set;

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// The managed-by value of this controller's slices.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

fn reserved(key: &str) -> bool {
    matches!(key, SERVICE_NAME | MANAGED_BY | HEADLESS)
}

/// The labels a slice of `svc` should have, and whether the copied service labels differ from
/// the slice's current ones (`current`; the reserved labels are always rewritten).
pub fn slice_labels(current: Option<&BTreeMap<String, String>>, svc: &Service) -> (BTreeMap<String, String>, bool) {
    let copied = |m: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        m.into_iter().flatten().filter(|(k, _)| !reserved(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut labels = copied(svc.metadata.labels.as_ref());
    let changed = copied(current) != labels;
    if !is_service_ip_set(svc) {
        labels.insert(HEADLESS.into(), String::new());
    }
    labels.insert(SERVICE_NAME.into(), svc.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

/// Whether a slice is managed by this controller.
pub fn managed(slice: &EndpointSlice) -> bool {
    slice.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY)).is_some_and(|v| v == CONTROLLER_NAME)
}

/// The service a slice belongs to by its service-name label.
pub fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME).map(String::as_str).filter(|s| !s.is_empty())
}

/// Whether `slice` is owned by `svc` (a v1 Service owner reference with its uid).
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or("");
    slice.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// A new (unnamed) slice of `svc` with these ports and no endpoints.
pub fn new_slice(svc: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    // the dash marks where the generated suffix starts, unless the name is too long for it
    let prefix = if name.len() < 253 { format!("{name}-") } else { name };
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(None, svc).0),
            owner_references: Some(vec![owner::controller_ref(svc)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: vec![],
        ports: Some(ports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_copy_the_service_but_the_reserved_ones_and_mark_headless() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u",
            "labels": {"app": "web", "kubernetes.io/service-name": "evil"}}, "spec": {"clusterIP": "None"}}))
        .expect("svc");
        let s = new_slice(&svc, vec![], "IPv4");
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(SERVICE_NAME).map(String::as_str), Some("web"));
        assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(labels.get(HEADLESS).map(String::as_str), Some(""));
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        assert!(owned_by(&s, &svc) && managed(&s));
        let owner = &s.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert!(!slice_labels(s.metadata.labels.as_ref(), &svc).1);
        let mut relabeled = svc.clone();
        relabeled.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into()), ("tier".into(), "front".into())]));
        assert!(slice_labels(s.metadata.labels.as_ref(), &relabeled).1);
    }
}
