//! What the scheduler tells users: Events about a pod (Scheduled, FailedScheduling) and the
//! pod's PodScheduled=False condition with the reason and message of a failed attempt.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};

/// The component an event about `pod` comes from: the name of the profile scheduling it.
pub fn component(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(super::config::DEFAULT_SCHEDULER_NAME)
}

#[derive(Debug, thiserror::Error)]
#[error("pod {namespace}/{name}: {what}: {source}")]
pub struct EventError {
    pub namespace: String,
    pub name: String,
    pub what: &'static str,
    pub source: kube::Error,
}

fn ids(pod: &Pod) -> (String, String) {
    (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default())
}

/// Who reports: the component (the profile's scheduler name) and this instance's identity.
pub struct Reporter<'a> {
    pub component: &'a str,
    pub instance: &'a str,
}

/// Records an Event about `pod`.
pub async fn record(client: &kube::Client, pod: &Pod, from: Reporter<'_>, type_: &str, reason: &str, action: &str, message: &str) -> Result<(), EventError> {
    let Reporter { component, instance } = from;
    let (namespace, name) = ids(pod);
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta { name: Some(format!("{name}.{:x}", now.as_nanosecond())), namespace: Some(namespace.clone()), ..Default::default() },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        action: Some(action.into()),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(instance.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let events: kube::Api<Event> = kube::Api::namespaced(client.clone(), &namespace);
    events.create(&PostParams::default(), &event).await.map(|_| ()).map_err(|source| EventError { namespace, name, what: "recording an event", source })
}

/// Sets PodScheduled=False with `reason` and `message` (and the nominated node, "" to clear).
pub async fn set_unschedulable(client: &kube::Client, pod: &Pod, reason: &str, message: &str, nominated: Option<&str>) -> Result<(), EventError> {
    let (namespace, name) = ids(pod);
    let current = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let unchanged = current.is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message));
    let since = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone().unwrap_or(Time(Timestamp::now())),
        _ => Time(Timestamp::now()),
    };
    if unchanged && nominated.is_none() {
        return Ok(());
    }
    let mut status = serde_json::json!({"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
        "lastProbeTime": null, "lastTransitionTime": since,
    }]});
    if let Some(n) = nominated {
        status["nominatedNodeName"] = if n.is_empty() { serde_json::Value::Null } else { serde_json::Value::String(n.into()) };
    }
    let patch = serde_json::json!({"status": status});
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &namespace);
    pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await.map(|_| ()).map_err(|source| EventError {
        namespace,
        name,
        what: "setting the PodScheduled condition",
        source,
    })
}
