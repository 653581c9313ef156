//! Removing a terminating namespace's content through the API, as upstream's namespaced
//! resources deleter: every namespaced resource discovery lists with the delete verb is emptied
//! (deletecollection where served, else list and delete each; background propagation), then
//! listed again to count what remains and which finalizers hold it. Pods are deleted gracefully
//! (their node finishes them), so the pass estimates how long to wait: the longest grace period
//! of a pod not yet finished, while the namespace has been terminating for less than that; 15 s
//! when objects wait on finalizers. Only API calls; the conditions are `conditions.rs`'s.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, DynamicObject, ListParams};

use super::conditions::Findings;
use crate::discovery::{self, Served};

/// Seconds to wait for objects held by finalizers (upstream's finalizerEstimateSeconds).
pub const FINALIZER_ESTIMATE: i64 = 15;

/// What one resource's pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    pub estimate: i64,
    pub remaining: usize,
    pub finalizers: std::collections::BTreeMap<String, usize>,
}

/// The resource in upstream's GroupVersionResource words ("/v1, Resource=pods").
fn gvr(s: &Served) -> String {
    format!("{}/{}, Resource={}", s.resource.group, s.resource.version, s.resource.plural)
}

/// The wait a pass calls for, from what remains (`estimate`: the pods' grace estimate), and
/// whether what remains is unexplained (an error, as upstream's "unexpected items still remain").
pub(crate) fn settle(estimate: i64, remaining: &[Option<Vec<String>>]) -> (Pass, bool) {
    let mut pass = Pass { estimate, remaining: remaining.len(), ..Default::default() };
    for finalizers in remaining.iter().flatten() {
        for f in finalizers {
            *pass.finalizers.entry(f.clone()).or_default() += 1;
        }
    }
    if remaining.is_empty() || estimate > 0 {
        return (pass, false);
    }
    if !pass.finalizers.is_empty() {
        pass.estimate = FINALIZER_ESTIMATE;
        return (pass, false);
    }
    (pass, true)
}

/// The longest grace period of the pods not yet finished, if the namespace has been terminating
/// for less than it (upstream's estimateGracefulTerminationForPods).
pub(crate) fn pods_estimate(pods: &[Pod], deleted_at: Timestamp, now: Timestamp) -> i64 {
    let estimate = pods
        .iter()
        .filter(|p| !matches!(crate::controller::phase(p), "Succeeded" | "Failed"))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .max()
        .unwrap_or(0);
    let elapsed = now.duration_since(deleted_at);
    if elapsed >= SignedDuration::from_secs(estimate) {
        0
    } else {
        estimate
    }
}

/// Empties the namespace `ns` (being deleted since `deleted_at`): the longest wait any resource
/// asks for, and the findings for the conditions.
pub async fn delete_all_content(client: &kube::Client, ns: &str, deleted_at: Timestamp) -> (i64, Findings) {
    let mut findings = Findings::default();
    let discovered = match discovery::preferred(client).await {
        Ok(d) => d,
        Err(e) => {
            findings.discovery = Some(e.to_string());
            return (0, findings);
        }
    };
    findings.discovery = discovered.failure();
    findings.gv_parsing = discovered.parsing_failure();
    let mut estimate = 0;
    for served in discovered.resources.iter().filter(|s| s.namespaced && s.supports("delete")) {
        match delete_resource(client, served, ns, deleted_at).await {
            Ok(pass) => {
                estimate = estimate.max(pass.estimate);
                if pass.remaining > 0 {
                    *findings.remaining.entry((served.resource.plural.clone(), served.resource.group.clone())).or_default() += pass.remaining;
                    for (f, n) in pass.finalizers {
                        *findings.finalizers.entry(f).or_default() += n;
                    }
                }
            }
            Err((pass, e)) => {
                estimate = estimate.max(pass.estimate);
                if pass.remaining > 0 {
                    *findings.remaining.entry((served.resource.plural.clone(), served.resource.group.clone())).or_default() += pass.remaining;
                }
                findings.content.push(e);
            }
        }
    }
    (estimate, findings)
}

/// One resource's pass (upstream's deleteAllContentForGroupVersionResource).
async fn delete_resource(client: &kube::Client, served: &Served, ns: &str, deleted_at: Timestamp) -> Result<Pass, (Pass, String)> {
    let estimate = if served.resource.group.is_empty() && served.resource.plural == "pods" {
        let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
        match pods.list(&ListParams::default()).await {
            Ok(list) => pods_estimate(&list.items, deleted_at, Timestamp::now()),
            Err(e) => return Err((Pass::default(), e.to_string())),
        }
    } else {
        0
    };
    let failed = |e: kube::Error| (Pass { estimate, ..Default::default() }, e.to_string());
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), ns, &served.resource);
    let params = DeleteParams::background();
    if served.supports("deletecollection") {
        api.delete_collection(&params, &ListParams::default()).await.map_err(failed)?;
    } else if served.supports("list") {
        for item in api.list(&ListParams::default()).await.map_err(failed)?.items {
            let name = item.metadata.name.unwrap_or_default();
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }
    if !served.supports("list") {
        return Ok(Pass { estimate, ..Default::default() });
    }
    let left = api.list(&ListParams::default()).await.map_err(failed)?.items;
    let remaining: Vec<Option<Vec<String>>> = left.into_iter().map(|o| o.metadata.finalizers.filter(|f| !f.is_empty())).collect();
    let (pass, unexpected) = settle(estimate, &remaining);
    if unexpected {
        let message = format!("unexpected items still remain in namespace: {ns} for gvr: {}", gvr(served));
        return Err((pass, message));
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, grace: i64) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": [], "terminationGracePeriodSeconds": grace}, "status": {"phase": phase}}))
            .expect("pod")
    }

    #[test]
    fn pods_are_waited_for_until_their_grace_period_has_passed() {
        let at = Timestamp::from_second(1000).expect("time");
        let pods = [pod("Running", 30), pod("Succeeded", 90)];
        assert_eq!(pods_estimate(&pods, at, at + SignedDuration::from_secs(10)), 30);
        assert_eq!(pods_estimate(&pods, at, at + SignedDuration::from_secs(30)), 0);
    }

    #[test]
    fn remaining_objects_wait_on_finalizers_or_are_unexpected() {
        let (pass, unexpected) = settle(0, &[Some(vec!["example.com/x".into()]), None]);
        assert!(!unexpected);
        assert_eq!((pass.estimate, pass.remaining, pass.finalizers.get("example.com/x")), (FINALIZER_ESTIMATE, 2, Some(&1)));
        let (pass, unexpected) = settle(0, &[None]);
        assert!(unexpected && pass.remaining == 1);
        let (pass, unexpected) = settle(30, &[None, None]);
        assert!(!unexpected && pass.estimate == 30 && pass.remaining == 2);
        assert_eq!(settle(0, &[]), (Pass::default(), false));
    }
}
