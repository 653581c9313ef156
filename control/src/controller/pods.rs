//! Creating pods from a controller's template and deleting them, as upstream's PodControl: a
//! pod gets the template's labels, annotations, finalizers and spec, the controller reference,
//! and a name generated from `<owner>-`. Creates go in slow-start batches (1, 2, 4, ...) so a
//! template the API rejects fails once, not a thousand times; each outcome is an Event on the
//! owner (SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete).

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};

use crate::recorder::{Recorder, NORMAL, WARNING};

/// The pod a controller creates from `template`.
pub fn from_template(template: &PodTemplateSpec, namespace: &str, owner_name: &str, owner: OwnerReference) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{owner_name}-")),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The message of an API error, as upstream prints it in events and conditions.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Creates `count` pods made by `make`, in batches of 1, 2, 4, ...; stops after the first
/// batch with a failure. `created` is told each new pod's name. Returns how many were created
/// and the first error.
pub async fn create_batches<K>(
    client: &kube::Client,
    recorder: &Recorder,
    owner: &K,
    count: usize,
    make: impl Fn() -> Pod,
    created: impl Fn(&str),
) -> (usize, Option<String>)
where
    K: kube::Resource<DynamicType = ()>,
{
    let mut done = 0;
    let mut batch = 1;
    while done < count {
        let n = batch.min(count - done);
        let results = join_all((0..n).map(|_| {
            let pod = make();
            let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
            async move { api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(pod) => {
                    let name = pod.metadata.name.unwrap_or_default();
                    created(&name);
                    recorder.event(owner, NORMAL, "SuccessfulCreate", format!("Created pod: {name}"));
                    done += 1;
                }
                Err(e) => {
                    let msg = error_message(&e);
                    recorder.event(owner, WARNING, "FailedCreate", format!("Error creating: {msg}"));
                    failed.get_or_insert(msg);
                }
            }
        }
        if failed.is_some() {
            return (done, failed);
        }
        batch *= 2;
    }
    (done, None)
}

/// Deletes `pod` on behalf of `owner` (gone already counts as deleted).
pub async fn delete<K>(client: &kube::Client, recorder: &Recorder, owner: &K, pod: &Pod) -> Result<(), String>
where
    K: kube::Resource<DynamicType = ()>,
{
    let (ns, name) = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &ns);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            recorder.event(owner, NORMAL, "SuccessfulDelete", format!("Deleted pod: {name}"));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            let msg = error_message(&e);
            recorder.event(owner, WARNING, "FailedDelete", format!("Error deleting: {msg}"));
            Err(msg)
        }
    }
}
