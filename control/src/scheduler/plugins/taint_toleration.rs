//! TaintToleration: a node's NoSchedule / NoExecute taints keep off pods that do not tolerate
//! them (filter); PreferNoSchedule taints a pod does not tolerate make a node less preferred
//! (score, fewer is better).

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use crate::scheduler::cache::{NodeInfo, Snapshot};
use crate::scheduler::framework::{default_normalize, FilterPlugin, Rejection, ScorePlugin};

pub const NAME: &str = "TaintToleration";

/// Does `t` tolerate `taint` (key, operator Equal/Exists, value and effect as upstream matches them)?
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => true,
        None | Some("") | Some("Equal") => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
        let tols = tolerations(pod);
        let untolerated =
            node.taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").find(|taint| !tols.iter().any(|t| tolerates(t, taint)));
        match untolerated {
            None => Ok(()),
            Some(t) => Err(Rejection::unresolvable(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default()))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, pod: &Pod, node: &NodeInfo, _: &Snapshot) -> i64 {
        let tols: Vec<&Toleration> = tolerations(pod).iter().filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")).collect();
        node.taints.iter().filter(|t| t.effect == "PreferNoSchedule").filter(|taint| !tols.iter().any(|t| tolerates(t, taint))).count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    fn tainted(taints: serde_json::Value) -> NodeInfo {
        node(serde_json::json!({"metadata": {"name": "n"}, "spec": {"taints": taints}}))
    }

    fn tolerating(tols: serde_json::Value) -> Pod {
        pod(serde_json::json!({"spec": {"containers": [], "tolerations": tols}}))
    }

    #[test]
    fn untolerated_no_schedule_and_no_execute_taints_reject_with_upstreams_reason() {
        let n = tainted(serde_json::json!([{"key": "key", "value": "value", "effect": "NoSchedule"}]));
        let none = tolerating(serde_json::json!([]));
        assert_eq!(TaintToleration.filter(&none, &n), Err(Rejection::unresolvable("node(s) had untolerated taint {key: value}")));
        let equal = tolerating(serde_json::json!([{"key": "key", "operator": "Equal", "value": "value", "effect": "NoSchedule"}]));
        assert_eq!(TaintToleration.filter(&equal, &n), Ok(()));
        let wrong_value = tolerating(serde_json::json!([{"key": "key", "value": "other"}]));
        assert!(TaintToleration.filter(&wrong_value, &n).is_err());
        let exists_all = tolerating(serde_json::json!([{"operator": "Exists"}]));
        assert_eq!(TaintToleration.filter(&exists_all, &n), Ok(()));
        let wrong_effect = tolerating(serde_json::json!([{"key": "key", "operator": "Exists", "effect": "NoExecute"}]));
        assert!(TaintToleration.filter(&wrong_effect, &n).is_err());
        let ne = tainted(serde_json::json!([{"key": "gone", "effect": "NoExecute"}]));
        assert_eq!(TaintToleration.filter(&none, &ne), Err(Rejection::unresolvable("node(s) had untolerated taint {gone: }")));
        let soft = tainted(serde_json::json!([{"key": "k", "effect": "PreferNoSchedule"}]));
        assert_eq!(TaintToleration.filter(&none, &soft), Ok(()), "PreferNoSchedule never rejects");
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let snap = Snapshot::default();
        let clean = tainted(serde_json::json!([]));
        let soft = tainted(serde_json::json!([{"key": "k", "effect": "PreferNoSchedule"}, {"key": "j", "effect": "PreferNoSchedule"}]));
        let p = tolerating(serde_json::json!([{"key": "j", "operator": "Exists", "effect": "PreferNoSchedule"}]));
        let mut s = vec![TaintToleration.score(&p, &clean, &snap), TaintToleration.score(&p, &soft, &snap)];
        assert_eq!(s, vec![0, 1]);
        TaintToleration.normalize(&mut s);
        assert_eq!(s, vec![100, 0]);
    }
}
