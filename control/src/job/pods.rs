//! The pods a Job creates: its template with the tracking finalizer and the Job as controller;
//! in an Indexed Job also the completion index (annotation and label), the hostname
//! `<job>-<index>`, the JOB_COMPLETION_INDEX variable in every container (from the annotation)
//! and, with backoffLimitPerIndex, the index's failures so far.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};

use super::indexes::INDEX_ANNOTATION;
use super::TRACKING_FINALIZER;
use crate::controller::{owner, pods::from_template};

const INDEX_FAILURES_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";

/// The pod for `job` (for the completion index and its failures so far, when Indexed).
pub fn for_job(job: &Job, name: &str, index: Option<(i32, i32)>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let ns = job.metadata.namespace.as_deref().unwrap_or("default");
    let prefix = match index {
        Some((i, _)) => format!("{name}-{i}"),
        None => name.to_string(),
    };
    let mut pod = from_template(&template, ns, &prefix, owner::controller_ref(job));
    pod.metadata.finalizers.get_or_insert_with(Vec::new).push(TRACKING_FINALIZER.into());
    let Some((i, failures)) = index else { return pod };
    pod.metadata.annotations.get_or_insert_with(Default::default).insert(INDEX_ANNOTATION.into(), i.to_string());
    pod.metadata.labels.get_or_insert_with(Default::default).insert(INDEX_ANNOTATION.into(), i.to_string());
    if job.spec.as_ref().is_some_and(|s| s.backoff_limit_per_index.is_some()) {
        pod.metadata.annotations.get_or_insert_with(Default::default).insert(INDEX_FAILURES_ANNOTATION.into(), failures.to_string());
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
        let var = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { api_version: Some("v1".into()), field_path: format!("metadata.annotations['{INDEX_ANNOTATION}']") }),
                ..Default::default()
            }),
        };
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            let env = c.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.name == var.name) {
                env.push(var.clone());
            }
        }
    }
    pod
}

/// The failures of its index before this pod (its `job-index-failure-count` annotation; 0
/// without one).
pub fn index_failures(pod: &Pod) -> i32 {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(INDEX_FAILURES_ANNOTATION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}
