//! A StatefulSet's pods and claims, as upstream's stateful pod utils: pod `<set>-<ordinal>`
//! with hostname = its name and subdomain = the governing Service, the labels
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, its revision in
//! `controller-revision-hash`, and for each volumeClaimTemplate the claim
//! `<template>-<set>-<ordinal>` mounted as the template's volume. Claims get the template's
//! labels plus the selector's matchLabels, and owner references after the retention policy
//! (whenDeleted: Delete → owned by the set; whenScaled: Delete → owned by the pod once its
//! ordinal is out of range), so the set's or the pod's deletion takes them along.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use crate::controller::history::REVISION_HASH;
use crate::controller::{owner, pods::from_template};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or("")
}

/// The first ordinal (spec.ordinals.start).
pub fn start(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0)
}

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The ordinal of a pod named `<set>-<n>` of this set (None for other names).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let (parent, n) = pod.rsplit_once('-')?;
    if parent != set || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set_name(set))
}

pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set_name(set))
}

/// The revision a pod runs (its `controller-revision-hash` label).
pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

/// The template a revision restores (its data is `{"spec":{"template":{...}}}`).
pub fn template_of(data: &Value) -> Option<PodTemplateSpec> {
    let mut t = data.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The claims the pod of `ordinal` uses, as they would be created.
pub fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = &set.spec else { return vec![] };
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let name = t.metadata.name.as_deref().unwrap_or("");
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(name, set, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: (!labels.is_empty()).then_some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The pod's volumes with each claim template's volume pointing at this ordinal's claim.
fn with_claims(set: &StatefulSet, ordinal: i32, volumes: Option<Vec<Volume>>) -> Option<Vec<Volume>> {
    let templates: Vec<String> = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .map(|ts| ts.iter().filter_map(|t| t.metadata.name.clone()).collect())
        .unwrap_or_default();
    if templates.is_empty() {
        return volumes;
    }
    let mut out: Vec<Volume> = volumes.unwrap_or_default().into_iter().filter(|v| !templates.contains(&v.name)).collect();
    for t in &templates {
        out.push(Volume {
            name: t.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim_name(t, set, ordinal), read_only: None }),
            ..Default::default()
        });
    }
    Some(out)
}

/// The pod of `ordinal` made from `template` at `revision`.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let ns = set.metadata.namespace.as_deref().unwrap_or("default");
    let mut pod = from_template(template, ns, set_name(set), owner::controller_ref(set));
    let name = pod_name(set, ordinal);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_HASH.into(), revision.into());
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = Some(name);
        let service = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
        spec.subdomain = service;
        spec.volumes = with_claims(set, ordinal, spec.volumes.take());
    }
    pod
}

/// The identity labels the pod lacks (None: it has them all).
pub fn fixed_labels(set: &StatefulSet, pod: &Pod, ordinal: i32) -> Option<BTreeMap<String, String>> {
    let name = pod_name(set, ordinal);
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    let before = labels.clone();
    labels.insert(POD_NAME_LABEL.into(), name);
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    (labels != before).then_some(labels)
}

/// The owner references a claim should have under the retention policy: its other owners,
/// plus the set (whenDeleted: Delete) and the pod (whenScaled: Delete, ordinal condemned).
pub fn claim_owners(set: &StatefulSet, claim: &PersistentVolumeClaim, pod: Option<&Pod>, condemned: bool) -> Vec<OwnerReference> {
    let policy = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let when_deleted = policy.and_then(|p| p.when_deleted.as_deref()).unwrap_or("Retain");
    let when_scaled = policy.and_then(|p| p.when_scaled.as_deref()).unwrap_or("Retain");
    let set_uid = set.metadata.uid.as_deref().unwrap_or("");
    let pod_uid = pod.and_then(|p| p.metadata.uid.as_deref());
    let ours = |r: &OwnerReference| (r.kind == "StatefulSet" && r.uid == set_uid) || (r.kind == "Pod" && r.name.starts_with(&format!("{}-", set_name(set))));
    let mut refs: Vec<OwnerReference> = claim.metadata.owner_references.clone().unwrap_or_default().into_iter().filter(|r| !ours(r)).collect();
    // a claim of a scaled-down pod under whenScaled: Delete belongs to the pod alone
    let scaled_away = condemned && when_scaled == "Delete";
    if when_deleted == "Delete" && !scaled_away {
        refs.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: set_name(set).to_string(),
            uid: set_uid.to_string(),
            controller: None,
            block_owner_deletion: None,
        });
    }
    if let (true, "Delete", Some(pod), Some(uid)) = (condemned, when_scaled, pod, pod_uid) {
        refs.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.to_string(),
            controller: None,
            block_owner_deletion: None,
        });
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn set() -> StatefulSet {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() }),
            spec: Some(PodSpec {
                volumes: Some(vec![Volume { name: "www".into(), ..Default::default() }, Volume { name: "cfg".into(), ..Default::default() }]),
                ..Default::default()
            }),
        };
        StatefulSet {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("ns".into()), uid: Some("u1".into()), ..Default::default() },
            spec: Some(StatefulSetSpec {
                service_name: Some("nginx".into()),
                selector: LabelSelector { match_labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() },
                template,
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta { name: Some("www".into()), labels: Some([("tier".to_string(), "data".to_string())].into()), ..Default::default() },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn ordinals_are_parsed_only_for_the_sets_own_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("my-web", "my-web-3"), Some(3));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "webs-1"), None);
        assert_eq!(ordinal_of("web", "web-+1"), None);
    }

    #[test]
    fn a_pod_has_its_identity_and_its_claims() {
        let s = set();
        let template = s.spec.as_ref().map(|x| x.template.clone()).unwrap_or_default();
        let pod = new_pod(&s, &template, 2, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        assert_eq!(pod.metadata.generate_name, None);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(POD_NAME_LABEL).map(String::as_str), Some("web-2"));
        assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(labels.get(REVISION_HASH).map(String::as_str), Some("web-abc"));
        let spec = pod.spec.unwrap_or_default();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-2"), Some("nginx")));
        let volumes = spec.volumes.unwrap_or_default();
        assert_eq!(volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), vec!["cfg", "www"]);
        assert_eq!(volumes[1].persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()), Some("www-web-2"));
        let claims = claims(&s, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("www-web-2"));
        let cl = claims[0].metadata.labels.clone().unwrap_or_default();
        assert_eq!((cl.get("tier").map(String::as_str), cl.get("app").map(String::as_str)), (Some("data"), Some("web")));
        assert_eq!(fixed_labels(&s, &new_pod(&s, &template, 2, "r"), 2), None);
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let mut s = set();
        let pod = Pod { metadata: ObjectMeta { name: Some("web-1".into()), uid: Some("p1".into()), ..Default::default() }, ..Default::default() };
        let claim = claims(&s, 1).remove(0);
        assert!(claim_owners(&s, &claim, Some(&pod), true).is_empty());
        if let Some(spec) = s.spec.as_mut() {
            spec.persistent_volume_claim_retention_policy =
                Some(StatefulSetPersistentVolumeClaimRetentionPolicy { when_deleted: Some("Delete".into()), when_scaled: Some("Delete".into()) });
        }
        let refs = claim_owners(&s, &claim, Some(&pod), false);
        assert_eq!(refs.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), vec!["StatefulSet"]);
        let mut owned = claim.clone();
        owned.metadata.owner_references = Some(claim_owners(&s, &claim, Some(&pod), true));
        let kinds = |refs: &[OwnerReference]| refs.iter().map(|r| r.kind.clone()).collect::<Vec<_>>();
        assert_eq!(kinds(owned.metadata.owner_references.as_deref().unwrap_or_default()), vec!["Pod"]);
        // back in range: the set's reference again, not the pod's
        assert_eq!(kinds(&claim_owners(&s, &owned, Some(&pod), false)), vec!["StatefulSet"]);
    }
}
