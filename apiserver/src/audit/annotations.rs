//! Annotations the layers under the HTTP adapter add to the audit event of the request being
//! served, as upstream's `audit.AddAuditAnnotation`: admission (PodSecurity's policy and audit
//! violations, the mutating webhooks' rounds and patches, webhooks' own auditAnnotations,
//! ValidatingAdmissionPolicies' audit annotations and failures). A sink lives in a task-local
//! around one audited request, so nothing has to carry it through the REST verbs; outside an
//! audited request adding is a no-op. Each annotation carries the lowest level at which it is
//! recorded (a webhook's patch only at Request and above, as upstream).

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::policy::Level;

/// What one request collected: (lowest level, key, value), first value of a key wins.
#[derive(Default)]
struct Sink(Mutex<Vec<(Level, String, String)>>);

tokio::task_local! {
    static SINK: Arc<Sink>;
}

/// Adds `key: value` to the audit event of the request being served, recorded when the event's
/// level is at least `level`. A key already set keeps its first value (upstream logs the clash).
pub fn add(level: Level, key: impl Into<String>, value: impl Into<String>) {
    let (key, value) = (key.into(), value.into());
    let _ = SINK.try_with(|s| {
        let mut items = s.0.lock().unwrap_or_else(|e| e.into_inner());
        match items.iter().find(|(_, k, _)| *k == key) {
            Some((_, _, v)) if *v != value => tracing::debug!(%key, "audit annotation already set; the new value is dropped"),
            Some(_) => {}
            None => items.push((level, key, value)),
        }
    });
}

/// Runs `f` with a sink of its own and gives back what was added to it.
pub async fn collect<F: Future>(f: F) -> (F::Output, Vec<(Level, String, String)>) {
    let sink = Arc::new(Sink::default());
    let out = SINK.scope(sink.clone(), f).await;
    let items = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|e| e.into_inner()));
    (out, items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn annotations_are_collected_per_request_and_first_value_wins() {
        add(Level::Metadata, "outside", "x");
        let ((), items) = collect(async {
            add(Level::Metadata, "a", "1");
            add(Level::Request, "b", "2");
            add(Level::Metadata, "a", "3");
        })
        .await;
        assert_eq!(items, vec![(Level::Metadata, "a".to_string(), "1".to_string()), (Level::Request, "b".to_string(), "2".to_string())]);
        let ((), again) = collect(async {}).await;
        assert!(again.is_empty());
    }
}
