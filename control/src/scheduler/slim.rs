//! What the scheduler keeps of the objects it caches: a placed pod is looked at only for what it
//! takes from its node (requests, host ports, claims), what other pods match against (labels,
//! namespace, affinity terms, topology) and what preemption weighs (priority, start time), so
//! the rest (managedFields, annotations, container commands, environment, mounts, probes, other
//! volume sources, container statuses) is dropped before it is stored, as upstream's scheduler
//! strips managedFields from what its informers keep; a pending pod also keeps its conditions.
//! A node keeps everything but its managedFields.

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodStatus};

fn slim_container(c: &mut Container) {
    c.command = None;
    c.args = None;
    c.env = None;
    c.env_from = None;
    c.volume_mounts = None;
    c.volume_devices = None;
    c.liveness_probe = None;
    c.readiness_probe = None;
    c.startup_probe = None;
    c.lifecycle = None;
    c.security_context = None;
    c.working_dir = None;
    c.termination_message_path = None;
    c.termination_message_policy = None;
}

/// A pod waiting to be scheduled, as the queue keeps it: as [`placed`], with its conditions
/// (the PodScheduled condition the scheduler reports on).
pub fn pending(pod: Pod) -> Pod {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone());
    let mut pod = placed(pod);
    if conditions.is_some() {
        pod.status.get_or_insert_with(Default::default).conditions = conditions;
    }
    pod
}

/// A pod placed on a node (bound, or assumed by this scheduler), as the cache keeps it.
pub fn placed(mut pod: Pod) -> Pod {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.iter_mut().for_each(slim_container);
        spec.init_containers.iter_mut().flatten().for_each(slim_container);
        spec.ephemeral_containers = None;
        // claims stay (volume restrictions look at other pods' claims)
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        }
    }
    pod.status = pod.status.map(|s| PodStatus {
        phase: s.phase,
        nominated_node_name: s.nominated_node_name,
        start_time: s.start_time,
        qos_class: s.qos_class,
        ..Default::default()
    });
    pod
}

/// A node as the cache keeps it.
pub fn node(mut node: Node) -> Node {
    node.metadata.managed_fields = None;
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::pod_host_ports;
    use crate::scheduler::resources::pod_requests;
    use serde_json::json;

    #[test]
    fn a_placed_pod_keeps_what_scheduling_looks_at_and_nothing_else() {
        let full: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "labels": {"app": "web"},
                "annotations": {"note": "x".repeat(1000)},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]},
            "spec": {
                "nodeName": "n1", "priority": 100, "schedulerName": "default-scheduler",
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
                "overhead": {"cpu": "50m"},
                "initContainers": [{"name": "side", "image": "side:1", "restartPolicy": "Always", "command": ["run"], "resources": {"requests": {"cpu": "100m"}}}],
                "containers": [{"name": "c", "image": "web:1", "command": ["serve"], "args": ["--port", "80"],
                    "env": [{"name": "A", "value": "b"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "readinessProbe": {"httpGet": {"port": 80}},
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                    "ports": [{"containerPort": 80, "hostPort": 8080}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "scratch", "emptyDir": {}}]},
            "status": {"phase": "Running", "startTime": "2026-12-05T00:00:00Z", "qosClass": "Burstable", "nominatedNodeName": "n1",
                "podIP": "10.42.0.9", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "web:1", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .expect("pod");
        let slim = placed(full.clone());
        // what the filters, scores and preemption read is the same
        assert_eq!(pod_requests(&slim, false), pod_requests(&full, false));
        assert_eq!(pod_requests(&slim, true), pod_requests(&full, true));
        assert_eq!(pod_host_ports(&slim), pod_host_ports(&full));
        let (s, f) = (slim.spec.as_ref().expect("spec"), full.spec.as_ref().expect("spec"));
        assert_eq!((&s.affinity, &s.tolerations, &s.topology_spread_constraints), (&f.affinity, &f.tolerations, &f.topology_spread_constraints));
        assert_eq!((&s.node_name, s.priority, &s.scheduler_name), (&f.node_name, f.priority, &f.scheduler_name));
        assert_eq!(s.init_containers.as_ref().map(|c| c[0].restart_policy.clone()), Some(Some("Always".into())));
        assert_eq!(s.containers[0].image.as_deref(), Some("web:1"));
        let volumes: Vec<&str> = s.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["data"]);
        assert_eq!(
            (&slim.metadata.labels, &slim.metadata.owner_references, &slim.metadata.uid),
            (&full.metadata.labels, &full.metadata.owner_references, &full.metadata.uid)
        );
        let status = slim.status.as_ref().expect("status");
        assert_eq!(
            (status.phase.as_deref(), status.nominated_node_name.as_deref(), status.qos_class.as_deref()),
            (Some("Running"), Some("n1"), Some("Burstable"))
        );
        assert!(status.start_time.is_some());
        // and the rest is gone
        assert!(slim.metadata.managed_fields.is_none() && slim.metadata.annotations.is_none());
        assert!(s.containers[0].command.is_none() && s.containers[0].env.is_none() && s.containers[0].readiness_probe.is_none());
        assert!(status.conditions.is_none() && status.container_statuses.is_none() && status.pod_ip.is_none());
        assert!(serde_json::to_vec(&slim).expect("json").len() * 2 < serde_json::to_vec(&full).expect("json").len());
        let waiting = pending(full.clone());
        assert_eq!(waiting.status.as_ref().and_then(|s| s.conditions.clone()), full.status.as_ref().and_then(|s| s.conditions.clone()));
        assert_eq!(waiting.spec, slim.spec);
        assert!(waiting.metadata.managed_fields.is_none());
    }
}
