//! The local-path provisioner's helper pod, as k3s's provisioner runs one to remove a released
//! volume's directory on the volume's node: `helper-pod-delete-<volume>` in kube-system, bound
//! to that node (tolerating every taint, system-node-critical), the directory's parent mounted at
//! the same path, running `rm -rf "$VOL_DIR"` in the helper image. This module builds the pod and
//! reads how it went; it calls no API and decides nothing about the volume (the binder does).

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

/// Where helper pods run (k3s: the provisioner's own namespace, kube-system).
pub const NAMESPACE: &str = "kube-system";
/// The helper image k3s ships.
pub const DEFAULT_IMAGE: &str = "docker.io/rancher/mirrored-library-busybox:1.36.1";
/// How long a helper pod may take before the attempt counts as failed (upstream's
/// CmdTimeoutSeconds default).
pub const TIMEOUT: Duration = Duration::from_secs(120);
const NAME_PREFIX: &str = "helper-pod-delete-";
/// Upstream's longest helper pod name.
const NAME_MAX: usize = 128;
/// The container's name in k3s's helper pod template.
const CONTAINER: &str = "helper-pod";
/// The teardown script of k3s's local-path-config.
const TEARDOWN: &str = "set -eu\nrm -rf \"$VOL_DIR\"\n";

/// What a helper pod is to remove: a volume's directory on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown<'a> {
    pub volume: &'a str,
    pub node: &'a str,
    /// The volume's directory (absolute; its parent is mounted).
    pub dir: &'a Path,
    /// `Filesystem` or `Block` (the volume's volumeMode).
    pub mode: &'a str,
    /// The volume's capacity in bytes.
    pub size_bytes: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid path {0} for delete: cannot find parent dir or volume dir or parent dir is relative")]
    Path(String),
    #[error("building the helper pod: {0}")]
    Json(#[from] serde_json::Error),
}

/// The helper pod's name for `volume`.
pub fn name(volume: &str) -> String {
    let mut n = format!("{NAME_PREFIX}{volume}");
    n.truncate(NAME_MAX);
    n
}

/// The volume a helper pod of this name works for (None: not a delete helper pod).
pub fn volume_of(pod_name: &str) -> Option<&str> {
    pod_name.strip_prefix(NAME_PREFIX).filter(|v| !v.is_empty())
}

/// The helper pod that removes `t.dir` on `t.node`, from `image`.
pub fn delete_pod(t: &Teardown<'_>, image: &str) -> Result<Pod, BuildError> {
    let shown = || BuildError::Path(t.dir.display().to_string());
    let dir = t.dir.to_str().filter(|d| t.dir.is_absolute() && !d.ends_with('/')).ok_or_else(shown)?;
    let parent = t.dir.parent().and_then(Path::to_str).filter(|p| *p != "/" && !p.is_empty()).ok_or_else(shown)?;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name(t.volume), "namespace": NAMESPACE},
        "spec": {
            "nodeName": t.node,
            "restartPolicy": "Never",
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            // it needs no API access
            "automountServiceAccountToken": false,
            "containers": [{
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", TEARDOWN],
                "env": [
                    {"name": "VOL_DIR", "value": dir},
                    {"name": "VOL_MODE", "value": t.mode},
                    {"name": "VOL_SIZE_BYTES", "value": t.size_bytes.to_string()},
                ],
                "securityContext": {"privileged": true},
                "volumeMounts": [{"name": "data", "mountPath": parent}],
            }],
            "volumes": [{"name": "data", "hostPath": {"path": parent, "type": "DirectoryOrCreate"}}],
        },
    });
    Ok(serde_json::from_value(pod)?)
}

/// How the helper pod of an attempt stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// There is none: make it.
    Missing,
    /// One is being deleted: wait until it is gone.
    Terminating,
    /// One of this name does other work (another directory, node or script): replace it.
    Stale,
    /// It has not finished; look again after this long at the latest (its deadline).
    Running(Duration),
    Succeeded,
    /// It failed, or did not finish in time: why.
    Failed(String),
}

/// The outcome of `current` (the pod of that name, if any) as a run of `wanted`, at `now`.
pub fn outcome(current: Option<&Pod>, wanted: &Pod, now: Timestamp, timeout: Duration) -> Outcome {
    let Some(pod) = current else { return Outcome::Missing };
    if pod.metadata.deletion_timestamp.is_some() {
        return Outcome::Terminating;
    }
    if !same_work(pod, wanted) {
        return Outcome::Stale;
    }
    let label = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""));
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Outcome::Succeeded,
        Some("Failed") => Outcome::Failed(format!("helper pod {label} failed: {}", termination(pod))),
        phase => {
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
            let age = now.duration_since(created).max(k8s_openapi::jiff::SignedDuration::ZERO).unsigned_abs();
            match timeout.checked_sub(age).filter(|left| !left.is_zero()) {
                Some(left) => Outcome::Running(left),
                None => Outcome::Failed(format!(
                    "helper pod {label} did not finish within {}s (phase {})",
                    timeout.as_secs(),
                    phase.filter(|p| !p.is_empty()).unwrap_or("Pending")
                )),
            }
        }
    }
}

/// Whether two helper pods do the same work: node, command, environment, mounted directory.
fn same_work(a: &Pod, b: &Pod) -> bool {
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    let container = |p: &Pod| p.spec.as_ref().and_then(|s| s.containers.first()).map(|c| (c.command.clone(), c.env.clone(), c.volume_mounts.clone()));
    let host_paths = |p: &Pod| {
        p.spec.as_ref().and_then(|s| s.volumes.as_ref()).map(|vs| vs.iter().map(|v| v.host_path.as_ref().map(|h| h.path.clone())).collect::<Vec<_>>())
    };
    node(a) == node(b) && container(a) == container(b) && host_paths(a) == host_paths(b)
}

/// What the helper container's termination says (exit code, reason, message).
fn termination(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match terminated {
        Some(t) => {
            let mut s = format!("container {CONTAINER} exited with code {}", t.exit_code);
            if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
                s.push_str(&format!(" ({r})"));
            }
            if let Some(m) = t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                s.push_str(&format!(": {m}"));
            }
            s
        }
        None => status.and_then(|s| s.message.clone().or(s.reason.clone())).unwrap_or_else(|| "phase Failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn teardown(dir: &Path) -> Teardown<'_> {
        Teardown { volume: "pvc-1234", node: "n2", dir, mode: "Filesystem", size_bytes: 2 << 30 }
    }

    fn pod_json(p: &Pod) -> serde_json::Value {
        serde_json::to_value(p).expect("json")
    }

    #[test]
    fn the_helper_pod_runs_the_teardown_on_the_volumes_node_with_its_parent_mounted() {
        let dir = PathBuf::from("/var/lib/berth/storage/pvc-1234_web_data");
        let p = pod_json(&delete_pod(&teardown(&dir), DEFAULT_IMAGE).expect("pod"));
        assert_eq!(p["metadata"]["name"], "helper-pod-delete-pvc-1234");
        assert_eq!(p["metadata"]["namespace"], "kube-system");
        let spec = &p["spec"];
        assert_eq!(spec["nodeName"], "n2");
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["priorityClassName"], "system-node-critical");
        assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
        assert_eq!(spec["volumes"], json!([{"name": "data", "hostPath": {"path": "/var/lib/berth/storage", "type": "DirectoryOrCreate"}}]));
        let c = &spec["containers"][0];
        assert_eq!(c["image"], DEFAULT_IMAGE);
        assert_eq!(c["command"], json!(["/bin/sh", "-c", "set -eu\nrm -rf \"$VOL_DIR\"\n"]));
        assert_eq!(c["volumeMounts"], json!([{"name": "data", "mountPath": "/var/lib/berth/storage"}]));
        assert_eq!(
            c["env"],
            json!([
                {"name": "VOL_DIR", "value": "/var/lib/berth/storage/pvc-1234_web_data"},
                {"name": "VOL_MODE", "value": "Filesystem"},
                {"name": "VOL_SIZE_BYTES", "value": "2147483648"},
            ])
        );
        assert_eq!(c["securityContext"]["privileged"], true);
        assert_eq!(volume_of("helper-pod-delete-pvc-1234"), Some("pvc-1234"));
        assert_eq!(volume_of("helper-pod-create-pvc-1234"), None);
        assert_eq!(name(&"x".repeat(200)).len(), 128);
    }

    #[test]
    fn paths_without_a_parent_or_relative_ones_get_no_helper_pod() {
        for bad in ["/pvc-1234", "pvc-1234", "/", "relative/pvc-1234", "/var/lib/berth/storage/"] {
            let dir = PathBuf::from(bad);
            assert!(matches!(delete_pod(&teardown(&dir), DEFAULT_IMAGE), Err(BuildError::Path(_))), "{bad}");
        }
    }

    fn with(mut p: Pod, phase: &str, created: Timestamp) -> Pod {
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created));
        p.status = Some(serde_json::from_value(json!({"phase": phase})).expect("status"));
        p
    }

    #[test]
    fn the_outcome_follows_the_pods_phase_and_its_deadline() {
        let dir = PathBuf::from("/srv/storage/pvc-1234_web_data");
        let wanted = delete_pod(&teardown(&dir), "busybox").expect("pod");
        let now = Timestamp::from_second(1_000_000).expect("time");
        let ago = |s: i64| now - k8s_openapi::jiff::SignedDuration::from_secs(s);
        assert_eq!(outcome(None, &wanted, now, TIMEOUT), Outcome::Missing);
        assert_eq!(outcome(Some(&with(wanted.clone(), "Running", ago(20))), &wanted, now, TIMEOUT), Outcome::Running(Duration::from_secs(100)));
        assert_eq!(outcome(Some(&with(wanted.clone(), "Succeeded", ago(500))), &wanted, now, TIMEOUT), Outcome::Succeeded);
        assert_eq!(
            outcome(Some(&with(wanted.clone(), "Pending", ago(121))), &wanted, now, TIMEOUT),
            Outcome::Failed("helper pod kube-system/helper-pod-delete-pvc-1234 did not finish within 120s (phase Pending)".into())
        );
        let mut failed = with(wanted.clone(), "Failed", ago(3));
        failed.status = Some(
            serde_json::from_value(
                json!({"phase": "Failed", "containerStatuses": [{"name": "helper-pod", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
            )
            .expect("status"),
        );
        assert_eq!(
            outcome(Some(&failed), &wanted, now, TIMEOUT),
            Outcome::Failed("helper pod kube-system/helper-pod-delete-pvc-1234 failed: container helper-pod exited with code 1 (Error)".into())
        );
        // a pod of the same name from an earlier attempt for another directory is replaced
        let other_dir = PathBuf::from("/srv/storage/pvc-1234_web_other");
        let other = with(delete_pod(&teardown(&other_dir), "busybox").expect("pod"), "Running", ago(1));
        assert_eq!(outcome(Some(&other), &wanted, now, TIMEOUT), Outcome::Stale);
        // one from an earlier attempt with another image does the same work: reused
        let older_image = with(delete_pod(&teardown(&dir), DEFAULT_IMAGE).expect("pod"), "Succeeded", ago(1));
        assert_eq!(outcome(Some(&older_image), &wanted, now, TIMEOUT), Outcome::Succeeded);
        let mut going = with(wanted.clone(), "Running", ago(1));
        going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(outcome(Some(&going), &wanted, now, TIMEOUT), Outcome::Terminating);
    }
}
