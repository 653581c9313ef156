//! The binder: places a pod on its node through the pods/binding subresource, as the default
//! binder plugin does (the apiserver sets spec.nodeName and the PodScheduled condition).

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;

#[derive(Debug, thiserror::Error)]
#[error("binding pod {namespace}/{name} to node {node}: {source}")]
pub struct BindError {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub source: kube::Error,
}

pub async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), BindError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), uid: pod.metadata.uid.clone(), ..Default::default() },
        target: ObjectReference { kind: Some("Node".into()), name: Some(node.into()), ..Default::default() },
    };
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &namespace);
    pods.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding).await.map(|_| ()).map_err(|source| BindError {
        namespace,
        name,
        node: node.into(),
        source,
    })
}
