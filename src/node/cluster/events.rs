//! The pods' events to the apiserver, as the kubelet records them: a core/v1 Event per event
//! (named `<pod>.<first time in hex>`, involvedObject the pod with its uid and the container's
//! fieldPath, source kubelet on this host), and a repeat of the same event raises its count and
//! lastTimestamp with a patch, so `kubectl describe pod` and `kubectl events` show what a
//! kubelet would. Every second the events the workers keep are compared with what was sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::ClusterPods;
use crate::node::worker::PodEvent;
use crate::node::NodeShared;

const SYNC_PERIOD: Duration = Duration::from_secs(1);

/// One event of a pod: which pod, and when it first happened (its reason and container too,
/// should two share a nanosecond).
type Key = (String, i64, String, Option<String>);

/// The Event object for `e` about the pod `ns/name` (`uid`) on `node`.
pub fn event_object(ns: &str, name: &str, uid: &str, node: &str, e: &PodEvent) -> Value {
    let time = |ns: i64| crate::node::status::time(ns).and_then(|t| serde_json::to_value(t).ok());
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", e.first_ns), "namespace": ns},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1", "fieldPath": e.field_path},
        "reason": e.reason,
        "message": e.message,
        "type": e.kind,
        "count": e.count,
        "firstTimestamp": time(e.first_ns),
        "lastTimestamp": time(e.last_ns),
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    })
}

/// Sends events until `stop` fires.
pub async fn run(client: kube::Client, shared: Arc<NodeShared>, pods: watch::Receiver<ClusterPods>, mut stop: watch::Receiver<bool>) {
    // what was sent: the count of each event
    let mut sent: BTreeMap<Key, u32> = BTreeMap::new();
    let node = shared.cfg.node_name.clone();
    let mut tick = tokio::time::interval(SYNC_PERIOD);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let desired = pods.borrow().clone();
        if !desired.synced {
            continue;
        }
        let (events, working): (Vec<(String, Vec<PodEvent>)>, BTreeSet<String>) = {
            let details = shared.details.read().await;
            let events = details.iter().filter(|(uid, _)| desired.pods.contains_key(*uid)).map(|(uid, (p, _))| (uid.clone(), p.events.clone())).collect();
            (events, details.keys().cloned().collect())
        };
        for (uid, list) in events {
            let Some(pod) = desired.pods.get(&uid) else { continue };
            let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else { continue };
            let target = Target { client: &client, node: &node, ns, name, uid: &uid };
            send(&target, &list, &mut sent).await;
        }
        // pods whose workers ended since the last round: what they had that was not sent yet
        let departed = std::mem::take(&mut *shared.departed.lock().unwrap_or_else(|e| e.into_inner()));
        for d in &departed {
            let target = Target { client: &client, node: &node, ns: &d.namespace, name: &d.name, uid: &d.uid };
            send(&target, &d.events, &mut sent).await;
        }
        // a pod being stopped keeps its counts until its worker ends
        sent.retain(|(uid, ..), _| (desired.pods.contains_key(uid) || working.contains(uid)) && !departed.iter().any(|d| d.uid == *uid));
    }
}

/// The pod a list of events is about, and where they go.
struct Target<'a> {
    client: &'a kube::Client,
    node: &'a str,
    ns: &'a str,
    name: &'a str,
    uid: &'a str,
}

/// Records the events of `list` not yet in `sent` (by count), each as a new Event or as a
/// count update of the one sent before.
async fn send(t: &Target<'_>, list: &[PodEvent], sent: &mut BTreeMap<Key, u32>) {
    let (ns, name, uid, node) = (t.ns, t.name, t.uid, t.node);
    let api: Api<Event> = Api::namespaced(t.client.clone(), ns);
    for e in list {
        let key = (uid.to_string(), e.first_ns, e.reason.clone(), e.field_path.clone());
        match sent.get(&key) {
            Some(n) if *n == e.count => {}
            Some(_) => {
                let obj = event_object(ns, name, uid, node, e);
                let body = json!({"count": e.count, "lastTimestamp": obj["lastTimestamp"], "message": e.message});
                let event_name = format!("{name}.{:x}", e.first_ns);
                match api.patch(&event_name, &PatchParams::default(), &Patch::Merge(body)).await {
                    Ok(_) => {
                        sent.insert(key, e.count);
                    }
                    // expired (events live an hour) or removed: record it anew
                    Err(kube::Error::Api(err)) if err.code == 404 => {
                        sent.remove(&key);
                    }
                    Err(err) => tracing::debug!(event = %event_name, error = %err, "updating an event"),
                }
            }
            None => match serde_json::from_value::<Event>(event_object(ns, name, uid, node, e)) {
                Ok(obj) => match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => {
                        sent.insert(key, e.count);
                    }
                    Err(kube::Error::Api(err)) if err.code == 409 => {
                        // sent before a restart of the agent: from now on it is updated
                        sent.insert(key, 0);
                    }
                    Err(err) => tracing::debug!(pod = %format!("{ns}/{name}"), reason = %e.reason, error = %err, "recording an event"),
                },
                Err(err) => tracing::warn!(error = %err, "an event that is no Event"),
            },
        }
    }
}
