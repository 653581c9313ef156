//! Pods: defaults of the pod spec and its containers (shared with every kind that holds a pod
//! template), validation of names, images, ports and volumes, the update rule (only images and a
//! few fields may change), the initial status, Table columns and selectable fields.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSecurityContext, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::{col, wide, Column, Kind, Outcome, Refusal, NAME_COLUMN};
use crate::status::{check_name, FieldError};
use crate::table::age;

pub struct Pods;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

/// Defaults of a pod spec (upstream SetDefaults_PodSpec and its containers, volumes, probes).
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(c);
    }
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(s) = v.secret.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(c) = v.config_map.as_mut() {
            c.default_mode.get_or_insert(0o644);
        }
        if let Some(h) = v.host_path.as_mut() {
            h.type_.get_or_insert_with(String::new);
        }
        if v.empty_dir.is_none()
            && v.secret.is_none()
            && v.config_map.is_none()
            && v.host_path.is_none()
            && v.persistent_volume_claim.is_none()
            && v.projected.is_none()
            && v.downward_api.is_none()
            && v.nfs.is_none()
            && v.csi.is_none()
            && v.ephemeral.is_none()
            && v.image.is_none()
        {
            v.empty_dir = Some(Default::default());
        }
    }
}

fn default_container(c: &mut Container) {
    c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    c.resources.get_or_insert_with(Default::default);
    if c.image_pull_policy.is_none() {
        let image = c.image.as_deref().unwrap_or("");
        let name = image.split('@').next().unwrap_or("");
        let tag = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t);
        let always = !image.contains('@') && matches!(tag, None | Some("latest"));
        c.image_pull_policy = Some(if always { "Always" } else { "IfNotPresent" }.into());
    }
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    for probe in [c.liveness_probe.as_mut(), c.readiness_probe.as_mut(), c.startup_probe.as_mut()].into_iter().flatten() {
        probe.timeout_seconds.get_or_insert(1);
        probe.period_seconds.get_or_insert(10);
        probe.success_threshold.get_or_insert(1);
        probe.failure_threshold.get_or_insert(3);
        if let Some(h) = probe.http_get.as_mut() {
            h.scheme.get_or_insert_with(|| "HTTP".into());
            h.path.get_or_insert_with(|| "/".into());
        }
    }
}

/// The deprecated `serviceAccount` field mirrors `serviceAccountName` (upstream's v1 conversion);
/// the default service account, priority and tolerations are admission's (`admission/`).
fn mirror_service_account(spec: &mut PodSpec) {
    if let Some(sa) = spec.service_account_name.clone().filter(|s| !s.is_empty()).or_else(|| spec.service_account.clone().filter(|s| !s.is_empty())) {
        spec.service_account_name = Some(sa.clone());
        spec.service_account = Some(sa);
    }
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Field errors of a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}].name");
        errs.extend(check_name(&p, v, berth_names::dns1123_label));
        if !seen.insert(*v) {
            errs.push(FieldError::duplicate(p, *v));
        }
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    let lists = [("initContainers", spec.init_containers.as_deref().unwrap_or(&[])), ("containers", spec.containers.as_slice())];
    for (field, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            errs.extend(check_name(&format!("{p}.name"), &c.name, berth_names::dns1123_label));
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), c.name.as_str()));
            }
            if c.image.as_deref().unwrap_or("").trim().is_empty() {
                errs.push(FieldError::required(format!("{p}.image"), ""));
            }
            if let Some(pp) = c.image_pull_policy.as_deref() {
                if !PULL_POLICIES.contains(&pp) {
                    errs.push(FieldError::not_supported(format!("{p}.imagePullPolicy"), pp, PULL_POLICIES));
                }
            }
            for (j, port) in c.ports.iter().flatten().enumerate() {
                if !(1..=65535).contains(&port.container_port) {
                    errs.push(FieldError::invalid(format!("{p}.ports[{j}].containerPort"), port.container_port, "must be between 1 and 65535, inclusive"));
                }
                if let Some(proto) = port.protocol.as_deref() {
                    if !PROTOCOLS.contains(&proto) {
                        errs.push(FieldError::not_supported(format!("{p}.ports[{j}].protocol"), proto, PROTOCOLS));
                    }
                }
            }
            for (j, e) in c.env.iter().flatten().enumerate() {
                if e.name.is_empty() {
                    errs.push(FieldError::required(format!("{p}.env[{j}].name"), ""));
                } else if !is_env_name(&e.name) {
                    errs.push(FieldError::invalid(
                        format!("{p}.env[{j}].name"),
                        e.name.as_str(),
                        "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
                    ));
                }
            }
            for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
                if !volumes.contains(&m.name.as_str()) {
                    errs.push(FieldError::not_found(format!("{p}.volumeMounts[{j}].name"), m.name.as_str()));
                }
                if m.mount_path.is_empty() {
                    errs.push(FieldError::required(format!("{p}.volumeMounts[{j}].mountPath"), ""));
                }
            }
        }
    }
    if let Some(rp) = spec.restart_policy.as_deref() {
        if !RESTART_POLICIES.contains(&rp) {
            errs.push(FieldError::not_supported(format!("{path}.restartPolicy"), rp, RESTART_POLICIES));
        }
    }
    if let Some(dp) = spec.dns_policy.as_deref() {
        if !DNS_POLICIES.contains(&dp) {
            errs.push(FieldError::not_supported(format!("{path}.dnsPolicy"), dp, DNS_POLICIES));
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.push(FieldError::invalid(format!("{path}.terminationGracePeriodSeconds"), g, "must be greater than or equal to 0"));
        }
    }
    errs
}

/// The QoS class of a pod's containers (upstream's GetPodQOS, for cpu and memory).
fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let r = c.resources.clone().unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        for res in ["cpu", "memory"] {
            let (req, lim) = (requests.get(res).or(limits.get(res)), limits.get(res));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            if lim.is_none() || req != lim {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// A pod spec with the fields an update may change blanked, to compare the rest.
/// The READY, STATUS and RESTARTS of a pod's table row, as upstream's pod printer works them
/// out: an init container not done yet makes the status `Init:<i>/<n>` (or `Init:<reason>`),
/// sidecars (restartable init containers) count as containers once started, and a pod whose
/// containers report Completed while one still runs is Running (or NotReady).
struct Summary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i32,
    last_restart: Option<Timestamp>,
}

fn summary(spec: &PodSpec, status: &k8s_openapi::api::core::v1::PodStatus) -> Summary {
    let sidecar = |name: &str| spec.init_containers.iter().flatten().any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"));
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always")).count();
    let mut out = Summary {
        ready: 0,
        total: spec.containers.len() + sidecars,
        reason: status.reason.clone().filter(|r| !r.is_empty()).or(status.phase.clone()).unwrap_or_default(),
        restarts: 0,
        last_restart: None,
    };
    let finished_at = |s: &k8s_openapi::api::core::v1::ContainerStatus| {
        s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).and_then(|t| t.finished_at.as_ref()).map(|t| t.0)
    };
    let later = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, b) => a.or(b),
    };
    let terminated_reason = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| match t.reason.clone().filter(|r| !r.is_empty()) {
        Some(r) => r,
        None if t.signal.unwrap_or(0) != 0 => format!("Signal:{}", t.signal.unwrap_or(0)),
        None => format!("ExitCode:{}", t.exit_code),
    };
    let (mut sidecar_restarts, mut sidecar_last) = (0, None);
    let mut initializing = false;
    let inits = status.init_container_statuses.clone().unwrap_or_default();
    for (i, s) in inits.iter().enumerate() {
        out.restarts += s.restart_count;
        out.last_restart = later(out.last_restart, finished_at(s));
        if sidecar(&s.name) {
            sidecar_restarts += s.restart_count;
            sidecar_last = later(sidecar_last, finished_at(s));
        }
        let state = s.state.clone().unwrap_or_default();
        let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty());
        match &state.terminated {
            Some(t) if t.exit_code == 0 => continue,
            _ if sidecar(&s.name) && s.started == Some(true) => {
                if s.ready {
                    out.ready += 1;
                }
                continue;
            }
            Some(t) => out.reason = format!("Init:{}", terminated_reason(t)),
            None => match waiting.filter(|r| r != "PodInitializing") {
                Some(w) => out.reason = format!("Init:{w}"),
                None => out.reason = format!("Init:{i}/{}", spec.init_containers.as_ref().map_or(0, Vec::len)),
            },
        }
        initializing = true;
        break;
    }
    let initialized = status.conditions.iter().flatten().any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        out.restarts = sidecar_restarts;
        out.last_restart = sidecar_last;
        let mut running = false;
        for s in status.container_statuses.iter().flatten().rev() {
            out.restarts += s.restart_count;
            out.last_restart = later(out.last_restart, finished_at(s));
            let state = s.state.clone().unwrap_or_default();
            if let Some(w) = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty()) {
                out.reason = w;
            } else if let Some(t) = state.terminated.as_ref() {
                out.reason = terminated_reason(t);
            } else if s.ready && state.running.is_some() {
                running = true;
                out.ready += 1;
            }
        }
        if out.reason == "Completed" && running {
            let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            out.reason = if ready { "Running" } else { "NotReady" }.into();
        }
    }
    out
}

fn immutable_part(spec: &PodSpec) -> Value {
    let mut s = spec.clone();
    for c in s.containers.iter_mut().chain(s.init_containers.iter_mut().flatten()) {
        c.image = None;
    }
    s.active_deadline_seconds = None;
    s.tolerations = None;
    s.termination_grace_period_seconds = None;
    // gates may be removed (checked on their own)
    s.scheduling_gates = None;
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// Upstream's rule for spec.schedulingGates on update: gates may only be removed.
fn scheduling_gate_errors(new: &PodSpec, old: &PodSpec) -> Vec<FieldError> {
    let old_gates: Vec<&str> = old.scheduling_gates.iter().flatten().map(|g| g.name.as_str()).collect();
    new.scheduling_gates
        .iter()
        .flatten()
        .filter(|g| !old_gates.contains(&g.name.as_str()))
        .map(|g| FieldError::forbidden("spec.schedulingGates", format!("only deletion is allowed, but found new scheduling gate '{}'", g.name)))
        .collect()
}

impl Kind for Pods {
    type Object = Pod;

    /// Pods count spec changes in metadata.generation since 1.33 (KEP-5067).
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, pod: &mut Pod) {
        let spec = pod.spec.get_or_insert_with(Default::default);
        default_pod_spec(spec);
        // a pod's (not a template's) containers that set only limits request what they limit
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            if let Some(r) = c.resources.as_mut() {
                if let Some(limits) = r.limits.clone() {
                    let requests = r.requests.get_or_insert_with(Default::default);
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            }
        }
        spec.enable_service_links.get_or_insert(true);
        mirror_service_account(spec);
    }

    fn prepare_for_create(&self, pod: &mut Pod) {
        let qos = pod.spec.as_ref().map(qos_class).unwrap_or("BestEffort");
        pod.status = Some(PodStatus { phase: Some("Pending".into()), qos_class: Some(qos.into()), ..Default::default() });
    }

    fn validate(&self, pod: &Pod) -> Vec<FieldError> {
        match &pod.spec {
            Some(spec) => validate_pod_spec(spec, "spec"),
            None => vec![FieldError::required("spec", "")],
        }
    }

    fn validate_update(&self, new: &Pod, old: &Pod) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if let (Some(n), Some(o)) = (&new.spec, &old.spec) {
            if immutable_part(n) != immutable_part(o) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
            errs.extend(scheduling_gate_errors(n, o));
        }
        errs
    }

    fn act(&self, action: &str, pod: &mut Pod, body: &Value) -> Result<Outcome, Refusal> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match action {
            "binding" => {
                let target = body.pointer("/target/name").and_then(Value::as_str).unwrap_or("");
                if target.is_empty() {
                    return Err(Refusal::Invalid(vec![FieldError::required("target.name", "")]));
                }
                if pod.metadata.deletion_timestamp.is_some() {
                    return Err(Refusal::Conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
                }
                let spec = pod.spec.get_or_insert_with(Default::default);
                if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
                    return Err(Refusal::Conflict(format!("pod {name} is already assigned to node {}", berth_names::go_quote(node))));
                }
                spec.node_name = Some(target.to_string());
                let status = pod.status.get_or_insert_with(Default::default);
                let conditions = status.conditions.get_or_insert_with(Vec::new);
                conditions.retain(|c| c.type_ != "PodScheduled");
                conditions.push(PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::now())),
                    ..Default::default()
                });
                Ok(Outcome::Replace)
            }
            "eviction" => Ok(Outcome::Delete),
            other => Err(Refusal::Conflict(format!("{other} is not supported"))),
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            super::AGE_COLUMN,
            wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            wide("Node", "string", "NodeName is a request to schedule this pod onto a specific node."),
            wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
            wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
        ]
    }

    fn cells(&self, pod: &Pod, now: Timestamp) -> Vec<Value> {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let Summary { ready, total, reason, restarts, last_restart } = summary(&spec, &status);
        let mut reason = reason;
        if pod.metadata.deletion_timestamp.is_some() && status.reason.as_deref() != Some("NodeLost") {
            reason = "Terminating".into();
        }
        let restarts = match last_restart {
            Some(t) if restarts > 0 => format!("{restarts} ({} ago)", crate::table::human_duration(now.duration_since(t))),
            _ => restarts.to_string(),
        };
        let none = || "<none>".to_string();
        let gates = spec.readiness_gates.as_deref().unwrap_or(&[]);
        let gates = if gates.is_empty() {
            none()
        } else {
            let conditions = status.conditions.clone().unwrap_or_default();
            let true_gates = gates.iter().filter(|g| conditions.iter().any(|c| c.type_ == g.condition_type && c.status == "True")).count();
            format!("{true_gates}/{}", gates.len())
        };
        vec![
            json!(pod.metadata.name.clone().unwrap_or_default()),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts),
            json!(age(pod.metadata.creation_timestamp.as_ref(), now)),
            json!(status.pod_ip.clone().filter(|s| !s.is_empty()).unwrap_or_else(none)),
            json!(spec.node_name.clone().filter(|s| !s.is_empty()).unwrap_or_else(none)),
            json!(status.nominated_node_name.clone().filter(|s| !s.is_empty()).unwrap_or_else(none)),
            json!(gates),
        ]
    }

    fn fields(&self, pod: &Pod) -> Vec<(&'static str, String)> {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        vec![
            ("spec.nodeName", spec.node_name.unwrap_or_default()),
            ("spec.restartPolicy", spec.restart_policy.unwrap_or_default()),
            ("spec.schedulerName", spec.scheduler_name.unwrap_or_default()),
            ("spec.serviceAccountName", spec.service_account_name.unwrap_or_default()),
            ("spec.hostNetwork", spec.host_network.unwrap_or(false).to_string()),
            ("status.phase", status.phase.unwrap_or_default()),
            ("status.podIP", status.pod_ip.unwrap_or_default()),
            ("status.nominatedNodeName", status.nominated_node_name.unwrap_or_default()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(spec: serde_json::Value, status: serde_json::Value) -> (String, String) {
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let status: PodStatus = serde_json::from_value(status).unwrap();
        let s = summary(&spec, &status);
        (format!("{}/{}", s.ready, s.total), s.reason)
    }

    #[test]
    fn the_status_column_follows_init_containers_sidecars_and_containers_as_upstream() {
        let spec = json!({"containers": [{"name": "app"}], "initContainers": [{"name": "a"}, {"name": "b"}]});
        let waiting = json!({"waiting": {"reason": "PodInitializing"}});
        // the first init container runs
        let status = json!({"phase": "Pending", "initContainerStatuses": [{"name": "a", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": waiting}]});
        assert_eq!(row(spec.clone(), status), ("0/1".into(), "Init:0/2".into()));
        // the second failed
        let status = json!({"phase": "Pending", "initContainerStatuses": [{"name": "a", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0}}},
            {"name": "b", "ready": false, "restartCount": 2, "image": "", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
        assert_eq!(row(spec.clone(), status), ("0/1".into(), "Init:CrashLoopBackOff".into()));
        // all done: the containers speak
        let status = json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "a", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0}}},
                {"name": "b", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0}}}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}}]});
        assert_eq!(row(spec, status), ("1/1".into(), "Running".into()));
        // a started sidecar counts as a container
        let spec = json!({"containers": [{"name": "app"}], "initContainers": [{"name": "side", "restartPolicy": "Always"}]});
        let status = json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "side", "ready": true, "started": true, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}}]});
        assert_eq!(row(spec, status), ("2/2".into(), "Running".into()));
    }
}
