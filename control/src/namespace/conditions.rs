//! The status.conditions of a terminating namespace, as upstream's namespace condition updater
//! writes them: five condition types in a fixed order, each True with a failure reason or False
//! with its "ok" reason; a condition that did not change keeps its lastTransitionTime. Pure: the
//! deleter gathers the facts, this turns them into conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GV_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The condition types the namespace controller keeps, in upstream's order, with the reason
/// and message each has when nothing is wrong.
const OK: [(&str, &str, &str); 5] = [
    (DISCOVERY_FAILURE, "ResourcesDiscovered", "All resources successfully discovered"),
    (GV_PARSING_FAILURE, "ParsedGroupVersions", "All legacy kube types successfully parsed"),
    (CONTENT_FAILURE, "ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
    (CONTENT_REMAINING, "ContentRemoved", "All content successfully removed"),
    (FINALIZERS_REMAINING, "ContentHasNoFinalizers", "All content-preserving finalizers finished"),
];

/// What one pass over a namespace's content found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Discovery failed for some groups (the error).
    pub discovery: Option<String>,
    /// Some group versions did not parse (the error).
    pub gv_parsing: Option<String>,
    /// The errors deleting content, one per resource that failed.
    pub content: Vec<String>,
    /// (resource, group) → objects still there.
    pub remaining: BTreeMap<(String, String), usize>,
    /// finalizer → objects still carrying it.
    pub finalizers: BTreeMap<String, usize>,
}

fn condition(type_: &str, status: &str, reason: &str, message: String, now: &Time) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
    }
}

/// The failing conditions `f` calls for (upstream's Process* functions).
fn failing(f: &Findings, now: &Time) -> Vec<NamespaceCondition> {
    let mut out = vec![];
    if let Some(e) = &f.discovery {
        out.push(condition(DISCOVERY_FAILURE, "True", "DiscoveryFailed", format!("Discovery failed for some groups, {} failing: {e}", count_groups(e)), now));
    }
    if let Some(e) = &f.gv_parsing {
        out.push(condition(GV_PARSING_FAILURE, "True", "GroupVersionParsingFailed", e.clone(), now));
    }
    if !f.content.is_empty() {
        let mut msgs = f.content.clone();
        msgs.sort();
        let message = format!("Failed to delete all resource types, {} remaining: {}", msgs.len(), msgs.join(", "));
        out.push(condition(CONTENT_FAILURE, "True", "ContentDeletionFailed", message, now));
    }
    let remaining: Vec<String> = f.remaining.iter().filter(|(_, n)| **n > 0).map(|((r, g), n)| format!("{r}.{g} has {n} resource instances")).collect();
    if !remaining.is_empty() {
        let message = format!("Some resources are remaining: {}", sorted(remaining).join(", "));
        out.push(condition(CONTENT_REMAINING, "True", "SomeResourcesRemain", message, now));
    }
    let finalizers: Vec<String> = f.finalizers.iter().filter(|(_, n)| **n > 0).map(|(name, n)| format!("{name} in {n} resource instances")).collect();
    if !finalizers.is_empty() {
        let message = format!("Some content in the namespace has finalizers remaining: {}", sorted(finalizers).join(", "));
        out.push(condition(FINALIZERS_REMAINING, "True", "SomeFinalizersRemain", message, now));
    }
    out
}

/// How many groups a discovery failure names ("g/v: err, g2/v: err").
fn count_groups(e: &str) -> usize {
    let list = e.strip_prefix("unable to retrieve the complete list of server APIs: ").unwrap_or(e);
    list.split(", ").filter(|part| part.contains(": ")).count().max(1)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The conditions after a pass that found `f`, given the `previous` ones: every type once, in
/// upstream's order; an unchanged condition (status, reason, message) keeps its time.
pub fn update(previous: &[NamespaceCondition], f: &Findings, now: &Time) -> Vec<NamespaceCondition> {
    let failing = failing(f, now);
    OK.iter()
        .map(|(type_, reason, message)| {
            let new = failing.iter().find(|c| c.type_ == *type_).cloned().unwrap_or_else(|| condition(type_, "False", reason, message.to_string(), now));
            match previous.iter().find(|c| c.type_ == *type_) {
                Some(old) if old.status == new.status && old.reason == new.reason && old.message == new.message => old.clone(),
                _ => new,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn find<'a>(cs: &'a [NamespaceCondition], t: &str) -> &'a NamespaceCondition {
        cs.iter().find(|c| c.type_ == t).expect("condition")
    }

    #[test]
    fn remaining_content_and_finalizers_read_as_upstream_writes_them() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let mut f = Findings::default();
        f.remaining.insert(("pods".into(), "".into()), 2);
        f.remaining.insert(("configmaps".into(), "".into()), 1);
        f.finalizers.insert("example.com/x".into(), 1);
        let cs = update(&[], &f, &now);
        assert_eq!(
            cs.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [DISCOVERY_FAILURE, GV_PARSING_FAILURE, CONTENT_FAILURE, CONTENT_REMAINING, FINALIZERS_REMAINING]
        );
        let remaining = find(&cs, CONTENT_REMAINING);
        assert_eq!((remaining.status.as_str(), remaining.reason.as_deref()), ("True", Some("SomeResourcesRemain")));
        assert_eq!(remaining.message.as_deref(), Some("Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances"));
        let fin = find(&cs, FINALIZERS_REMAINING);
        assert_eq!(fin.reason.as_deref(), Some("SomeFinalizersRemain"));
        assert_eq!(fin.message.as_deref(), Some("Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"));
        let ok = find(&cs, CONTENT_FAILURE);
        assert_eq!((ok.status.as_str(), ok.reason.as_deref()), ("False", Some("ContentDeleted")));
        assert_eq!(ok.message.as_deref(), Some("All content successfully deleted, may be waiting on finalization"));
    }

    #[test]
    fn failures_and_unchanged_conditions_keep_their_time() {
        let then = Time(Timestamp::UNIX_EPOCH);
        let later = Time(Timestamp::from_second(60).expect("time"));
        let f = Findings {
            discovery: Some(
                "unable to retrieve the complete list of server APIs: metrics.k8s.io/v1beta1: the server is currently unable to handle the request".into(),
            ),
            content: vec!["unexpected items still remain in namespace: a for gvr: /v1, Resource=pods".into()],
            ..Default::default()
        };
        let first = update(&[], &f, &then);
        let d = find(&first, DISCOVERY_FAILURE);
        assert_eq!(d.reason.as_deref(), Some("DiscoveryFailed"));
        assert_eq!(
            d.message.as_deref(),
            Some("Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: metrics.k8s.io/v1beta1: the server is currently unable to handle the request")
        );
        assert_eq!(
            find(&first, CONTENT_FAILURE).message.as_deref(),
            Some("Failed to delete all resource types, 1 remaining: unexpected items still remain in namespace: a for gvr: /v1, Resource=pods")
        );
        // the next pass: discovery works; the content failure stays as it was
        let f2 = Findings { content: f.content.clone(), ..Default::default() };
        let second = update(&first, &f2, &later);
        assert_eq!(find(&second, DISCOVERY_FAILURE).status, "False");
        assert_eq!(find(&second, DISCOVERY_FAILURE).last_transition_time, Some(later.clone()));
        assert_eq!(find(&second, CONTENT_FAILURE).last_transition_time, Some(then.clone()));
        assert_eq!(find(&second, CONTENT_REMAINING).last_transition_time, Some(then));
    }
}
