//! The pod's v1.PodStatus from the worker's progress and the runtime's container statuses:
//! phase, conditions, container statuses with state, last state and restart counts.
use super::convert;
use super::worker::{Observed, PodProgress};
use crate::cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;

pub fn time(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128).ok().map(Time)
}

fn terminated(st: &cri::ContainerStatus) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: st.exit_code,
        reason: Some(if st.reason.is_empty() {
            if st.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            }
        } else {
            st.reason.clone()
        }),
        message: (!st.message.is_empty()).then(|| st.message.clone()),
        started_at: time(st.started_at),
        finished_at: time(st.finished_at),
        container_id: Some(format!("berth://{}", st.id)),
        signal: None,
    }
}

fn container_status(c: &Container, progress: &PodProgress, observed: &BTreeMap<String, Observed>, init: bool, pod_has_init: bool) -> ContainerStatus {
    let prog = progress.containers.get(&c.name).cloned().unwrap_or_default();
    let obs = observed.get(&c.name).map(|o| &o.status);
    let waiting = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    };
    let (state, running) = match (obs, &prog.waiting) {
        (_, Some((reason, msg))) if obs.map(|o| o.state != cri::ContainerState::ContainerRunning as i32).unwrap_or(true) => {
            (waiting(reason, Some(msg.clone())), false)
        }
        (Some(o), _) if o.state == cri::ContainerState::ContainerRunning as i32 => {
            (ContainerState { running: Some(ContainerStateRunning { started_at: time(o.started_at) }), ..Default::default() }, true)
        }
        (Some(o), _) if o.state == cri::ContainerState::ContainerExited as i32 => {
            (ContainerState { terminated: Some(terminated(o)), ..Default::default() }, false)
        }
        _ => {
            // As the kubelet: a container not made yet waits in PodInitializing when the pod
            // has init containers (kubectl shows Init:N/M), else in ContainerCreating.
            let reason = if pod_has_init { "PodInitializing" } else { "ContainerCreating" };
            (waiting(reason, None), false)
        }
    };
    // The previous attempt's end, when the container has restarted.
    let previous = observed.get(&c.name).and_then(|o| o.previous.as_ref());
    let last_state = if state.terminated.is_none() && prog.restart_count > 0 {
        // Between restarts the newest attempt is the one that ended; once restarted, the one before.
        let ended = obs.filter(|o| o.state == cri::ContainerState::ContainerExited as i32).or(previous);
        ended.map(|o| ContainerState { terminated: Some(terminated(o)), ..Default::default() })
    } else {
        None
    };
    let image_id = obs.map(|o| o.image_ref.clone()).unwrap_or_default();
    // Probes decide started and ready; without them a running container is both. A plain init
    // container (not a sidecar) is ready once it has completed, as the kubelet reports it.
    let sidecar = init && c.restart_policy.as_deref() == Some("Always");
    let (started, ready) = match progress.probe_view.get(&c.name) {
        Some(&(s, r)) if running && (!init || sidecar) => (s, r),
        _ if init && !sidecar => (running, state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)),
        _ => (running, running),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id,
        container_id: obs.map(|o| format!("berth://{}", o.id)),
        ready,
        started: Some(started),
        restart_count: prog.restart_count as i32,
        state: Some(state),
        last_state,
        user: obs.and_then(|o| o.user.as_ref()).and_then(|u| u.linux.as_ref()).map(|l| k8s_openapi::api::core::v1::ContainerUser {
            linux: Some(k8s_openapi::api::core::v1::LinuxContainerUser { uid: l.uid, gid: l.gid, supplemental_groups: Some(l.supplemental_groups.clone()) }),
        }),
        ..Default::default()
    }
}

/// Pending → Running → Succeeded / Failed, as Kubernetes defines the phase.
pub fn phase(pod: &Pod, progress: &PodProgress, observed: &BTreeMap<String, Observed>) -> String {
    if progress.phase == "Succeeded" || progress.phase == "Failed" {
        return progress.phase.clone();
    }
    if !progress.init_done {
        return "Pending".into();
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let states: Vec<Option<&cri::ContainerStatus>> = spec.containers.iter().map(|c| observed.get(&c.name).map(|o| &o.status)).collect();
    let is = |s: &Option<&cri::ContainerStatus>, state: cri::ContainerState| s.map(|s| s.state == state as i32).unwrap_or(false);
    // A container that has never run (not created, or created and not started) keeps the
    // pod Pending, as the kubelet counts it; one that ran and waits to restart does not.
    if states.iter().any(|s| !is(s, cri::ContainerState::ContainerRunning) && !is(s, cri::ContainerState::ContainerExited)) {
        return "Pending".into();
    }
    if states.iter().any(|s| is(s, cri::ContainerState::ContainerRunning)) {
        return "Running".into();
    }
    let all_ok = states.iter().all(|s| s.map(|s| s.exit_code == 0).unwrap_or(false));
    match policy.as_str() {
        "Never" => if all_ok { "Succeeded" } else { "Failed" }.into(),
        "OnFailure" if all_ok => "Succeeded".into(),
        // Restarting: the pod is still Running (between restarts).
        _ => "Running".into(),
    }
}

/// "[a b]": names as the kubelet lists them in condition messages.
fn name_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

/// Initialized: every init container done (a sidecar started), with the kubelet's reason and
/// message while some are not.
fn initialized_condition(spec: &k8s_openapi::api::core::v1::PodSpec, init_statuses: &[ContainerStatus], progress: &PodProgress, phase: &str) -> PodCondition {
    if progress.init_done {
        let mut c = condition("Initialized", progress, true);
        c.reason = (phase == "Succeeded" && !spec.init_containers.as_ref().is_none_or(|v| v.is_empty())).then(|| "PodCompleted".into());
        return c;
    }
    let incomplete: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .zip(init_statuses)
        .filter(|(c, st)| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let terminated_ok = st.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0);
            if sidecar {
                !st.started.unwrap_or(false)
            } else {
                !terminated_ok
            }
        })
        .map(|(c, _)| c.name.clone())
        .collect();
    PodCondition {
        reason: Some("ContainersNotInitialized".into()),
        message: Some(format!("containers with incomplete status: {}", name_list(&incomplete))),
        ..condition("Initialized", progress, false)
    }
}

/// ContainersReady (and Ready, which follows it for a pod without readiness gates): every app
/// container and sidecar ready; PodCompleted once the pod has succeeded.
fn readiness_conditions(
    statuses: &[ContainerStatus],
    init_statuses: &[ContainerStatus],
    spec: &k8s_openapi::api::core::v1::PodSpec,
    progress: &PodProgress,
    phase: &str,
) -> [PodCondition; 2] {
    let sidecars = spec.init_containers.iter().flatten().zip(init_statuses).filter(|(c, _)| c.restart_policy.as_deref() == Some("Always")).map(|(_, st)| st);
    let unready: Vec<String> = sidecars.chain(statuses).filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let ready = unready.is_empty() && progress.init_done;
    let (reason, message) = if phase == "Succeeded" {
        (Some("PodCompleted".to_string()), None)
    } else if !ready {
        (Some("ContainersNotReady".to_string()), Some(format!("containers with unready status: {}", name_list(&unready))))
    } else {
        (None, None)
    };
    let ready = ready && phase != "Succeeded";
    ["Ready", "ContainersReady"].map(|kind| PodCondition { reason: reason.clone(), message: message.clone(), ..condition(kind, progress, ready) })
}

fn condition(kind: &str, progress: &PodProgress, value: bool) -> PodCondition {
    let since = progress.conditions.get(kind).filter(|c| c.0 == value).map(|c| c.1).unwrap_or(progress.start_time_ns);
    PodCondition { type_: kind.into(), status: if value { "True".into() } else { "False".into() }, last_transition_time: time(since), ..Default::default() }
}

pub fn pod_status(pod: &Pod, progress: &PodProgress, observed: &BTreeMap<String, Observed>, node_ip: &str) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let has_init = !spec.init_containers.as_ref().is_none_or(|v| v.is_empty());
    let init_statuses: Vec<ContainerStatus> = spec.init_containers.iter().flatten().map(|c| container_status(c, progress, observed, true, has_init)).collect();
    let statuses: Vec<ContainerStatus> = spec.containers.iter().map(|c| container_status(c, progress, observed, false, has_init)).collect();
    let phase = if progress.phase.is_empty() { "Pending".to_string() } else { progress.phase.clone() };
    let sandbox_ready = progress.conditions.get("PodReadyToStartContainers").map(|c| c.0).unwrap_or(false);
    let [ready, containers_ready] = readiness_conditions(&statuses, &init_statuses, &spec, progress, &phase);
    let mut conditions = vec![
        condition("PodReadyToStartContainers", progress, sandbox_ready),
        initialized_condition(&spec, &init_statuses, progress, &phase),
        ready,
        containers_ready,
        condition("PodScheduled", progress, true),
    ];
    // Evicted by the node: the disruption is recorded as the kubelet records it.
    if progress.conditions.get("DisruptionTarget").map(|c| c.0).unwrap_or(false) {
        conditions.push(PodCondition {
            reason: Some("TerminationByKubelet".into()),
            message: progress.message.clone(),
            ..condition("DisruptionTarget", progress, true)
        });
    }
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: Some(node_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: node_ip.to_string() }]),
        pod_ip: progress.pod_ips.first().cloned(),
        pod_ips: (!progress.pod_ips.is_empty()).then(|| progress.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: time(progress.start_time_ns),
        qos_class: Some(convert::qos_class(&spec).to_string()),
        reason: progress.reason.clone(),
        message: progress.message.clone(),
        ..Default::default()
    }
}
