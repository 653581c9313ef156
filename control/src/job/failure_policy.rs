//! A Job's podFailurePolicy applied to one failed pod, as upstream's: the first rule that
//! matches decides (FailJob, FailIndex, Ignore, Count); a rule matches on the exit codes of the
//! pod's containers (In / NotIn, optionally one container) or on its conditions
//! (DisruptionTarget=True for a pod evicted or preempted). No rule matching counts the failure.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;

/// What a rule says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the whole Job, with upstream's message.
    FailJob(String),
    FailIndex,
    Ignore,
    Count,
}

/// The exit code a rule matched, and in which container.
fn exit_code_match(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<(String, i32)> {
    let req = rule.on_exit_codes.as_ref()?;
    let status = pod.status.as_ref()?;
    let all = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten());
    for c in all {
        if req.container_name.as_deref().is_some_and(|n| n != c.name) {
            continue;
        }
        let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code) else { continue };
        // a container that exited 0 never matches (upstream skips successful exits)
        if code == 0 {
            continue;
        }
        let listed = req.values.contains(&code);
        let matches = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if matches {
            return Some((c.name.clone(), code));
        }
    }
    None
}

fn condition_match(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let patterns = rule.on_pod_conditions.as_ref()?;
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    for p in patterns {
        if conditions.iter().any(|c| c.type_ == p.type_ && c.status == p.status) {
            return Some(p.type_.clone());
        }
    }
    None
}

/// The verdict of `policy` on a failed pod.
pub fn judge(policy: &PodFailurePolicy, pod: &Pod) -> Verdict {
    let pod_name = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""));
    for (i, rule) in policy.rules.iter().enumerate() {
        let reason = if let Some((container, code)) = exit_code_match(rule, pod) {
            format!("Container {container} for pod {pod_name} failed with exit code {code} matching {} rule at index {i}", rule.action)
        } else if let Some(kind) = condition_match(rule, pod) {
            format!("Pod {pod_name} has condition {kind} matching {} rule at index {i}", rule.action)
        } else {
            continue;
        };
        return match rule.action.as_str() {
            "FailJob" => Verdict::FailJob(reason),
            "FailIndex" => Verdict::FailIndex,
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed(code: i32, disrupted: bool) -> Pod {
        let conditions = if disrupted { json!([{"type": "DisruptionTarget", "status": "True"}]) } else { json!([]) };
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "p"}, "status": {"phase": "Failed", "conditions": conditions,
            "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]}}))
        .expect("pod")
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]}))
        .expect("policy");
        assert_eq!(
            judge(&policy, &failed(42, false)),
            Verdict::FailJob("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into())
        );
        assert_eq!(judge(&policy, &failed(1, true)), Verdict::Ignore);
        assert_eq!(judge(&policy, &failed(1, false)), Verdict::Count);
    }
}
