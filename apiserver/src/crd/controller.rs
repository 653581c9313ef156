//! The CRD controller, level-triggered over the CRD watch cache: each pass (at start-up, then on
//! every change or progress notice of the cache) makes the served table match the stored CRDs
//! (a new [`Registry`](crate::resources::Registry) when a CRD came, went or changed its spec;
//! watch caches started for new storages and primed before they are served, stopped for gone
//! ones), writes the status of each CRD (acceptedNames, NamesAccepted and Established once its
//! resources are served, storedVersions, names two CRDs want kept by one), and finishes deleted
//! CRDs: still served but refusing creates, their custom resources are deleted (each honouring
//! its own finalizers), then the cleanup finalizer goes, and with it the CRD. Every pass is
//! safe to run again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_store::{ListOptions, StoreError};
use serde_json::{json, Value};
use tracing::Instrument;

use super::served::{self, version_order};
use super::{CLEANUP_FINALIZER, GROUP, PLURAL};
use crate::api::Api;
use crate::meta;
use crate::resources::Resource;
use crate::rest::delete::DeleteOptions;
use crate::rest::{Subresource, WriteOptions};

/// What the controller keeps between passes.
#[derive(Default)]
pub struct State {
    /// The served CRDs by name: the fingerprint of what they were built from, and their resources.
    served: BTreeMap<String, (String, Vec<Arc<Resource>>)>,
    /// The watch cache tasks of custom resources, by storage segment.
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// What a CRD's resources are built from: its identity, whether it is being deleted, and its spec.
fn fingerprint(crd: &Value) -> String {
    format!("{}:{}:{}", meta::get(crd, "uid").unwrap_or(""), terminating(crd), crd["spec"])
}

/// Runs [`reconcile`] on every change of the CRDs, for as long as the API lives.
pub fn spawn(api: &Arc<Api>) {
    let Ok(crds) = api.resource(GROUP, PLURAL) else { return };
    let Ok(cache) = api.cache(&crds) else { return };
    let mut changes = cache.changes();
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            while changes.changed().await.is_ok() {
                let Some(api) = weak.upgrade() else { return };
                reconcile(&api).await;
            }
        }
        .instrument(tracing::info_span!("crd_controller")),
    );
}

/// One pass over the stored CRDs.
pub async fn reconcile(api: &Arc<Api>) {
    let Ok(crd_res) = api.resource(GROUP, PLURAL) else { return };
    let Ok(cache) = api.cache(&crd_res) else { return };
    let (crds, _) = cache.snapshot(&crd_res.prefix(api.store_prefix()));
    let mut state = api.crds.lock().await;
    let crds: Vec<Value> = crds.iter().filter_map(|c| c.value().ok()).collect();
    let mut all: Vec<&Value> = crds.iter().collect();
    // a name two want stays with the CRD established with it, else goes to the older one
    all.sort_by_key(|c| (!is_established(c), meta::get(c, "creationTimestamp").unwrap_or("").to_string(), meta::name(c).to_string()));
    let mut taken: HashMap<String, Vec<String>> = HashMap::new();
    let mut verdicts: Vec<(&Value, Option<Conflict>)> = vec![];
    for crd in &all {
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
        let used = taken.entry(group).or_default();
        let conflict = conflict(crd, used);
        if conflict.is_none() {
            used.extend(names_of(crd));
        }
        verdicts.push((crd, conflict));
    }
    // a CRD being deleted stays served (without creates) until its custom resources are gone
    let accepted: Vec<&Value> = verdicts.iter().filter(|(crd, c)| c.is_none() && (!terminating(crd) || is_established(crd))).map(|(crd, _)| *crd).collect();
    let names: Vec<&str> = accepted.iter().map(|c| meta::name(c)).collect();
    let before = state.served.len();
    state.served.retain(|n, _| names.contains(&n.as_str()));
    let mut changed = state.served.len() != before;
    for crd in &accepted {
        let fp = fingerprint(crd);
        if state.served.get(meta::name(crd)).is_some_and(|(f, _)| *f == fp) {
            continue;
        }
        let resources = served::resources_of(crd).into_iter().map(Arc::new).collect();
        state.served.insert(meta::name(crd).to_string(), (fp, resources));
        changed = true;
    }
    if changed {
        serve(api, &mut state).await;
    }
    let cleanups: Vec<(&Value, Option<Arc<Resource>>)> = all
        .iter()
        .filter(|c| terminating(c) && c.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER)))
        .map(|c| (*c, state.served.get(meta::name(c)).and_then(|(_, rs)| rs.first().cloned())))
        .collect();
    drop(state);
    for (crd, conflict) in verdicts.iter().filter(|(c, _)| !terminating(c)) {
        if crd.get("status") != Some(&desired_status(crd, conflict.as_ref())) {
            write_status(api, &crd_res, meta::name(crd), conflict.as_ref()).await;
        }
    }
    for (crd, res) in cleanups {
        clean_up(api, &crd_res, crd, res).await;
    }
}

fn terminating(crd: &Value) -> bool {
    crd.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// Serves the resources of `state`: starts the missing watch caches (and waits until they have
/// caught up), swaps in the new table, stops the caches no longer needed.
async fn serve(api: &Arc<Api>, state: &mut State) {
    let mut custom: Vec<Arc<Resource>> = state.served.values().flat_map(|(_, rs)| rs.iter().cloned()).collect();
    custom.sort_by(|a, b| a.group.cmp(b.group).then(version_order(a.version, b.version)).then(a.plural.cmp(b.plural)));
    let mut needed: HashMap<&'static str, Arc<Resource>> = HashMap::new();
    for r in &custom {
        needed.entry(r.storage).or_insert_with(|| r.clone());
    }
    let mut started = vec![];
    for (storage, r) in &needed {
        if state.tasks.contains_key(*storage) {
            continue;
        }
        if let Some((cache, task)) = api.add_cache(r.clone()) {
            state.tasks.insert(storage.to_string(), task);
            started.push(cache);
        }
    }
    if !started.is_empty() {
        match api.store.current_revision().await {
            Ok(rev) => {
                for cache in started {
                    if !cache.wait_for(rev, Duration::from_secs(30)).await {
                        tracing::warn!(resource = %cache.res.qualified(), "the watch cache did not catch up in time");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the store's revision failed"),
        }
    }
    api.set_registry(api.registry().with_custom(custom));
    let gone: Vec<String> = state.tasks.keys().filter(|s| !needed.contains_key(s.as_str())).cloned().collect();
    for storage in gone {
        if let Some(cache) = api.remove_cache(&storage) {
            cache.close();
        }
        if let Some(task) = state.tasks.remove(&storage) {
            task.abort();
        }
    }
    tracing::info!(crds = state.served.len(), "served custom resources updated");
}

/// Why a CRD's names were not accepted: upstream's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub reason: &'static str,
    pub message: String,
}

/// Whether a CRD is established under the names it asks for now.
fn is_established(crd: &Value) -> bool {
    let conditions = crd.pointer("/status/conditions").and_then(Value::as_array);
    conditions.into_iter().flatten().any(|c| c["type"] == "Established" && c["status"] == "True")
        && crd.pointer("/status/acceptedNames") == crd.pointer("/spec/names")
}

/// Every name a CRD claims in its group.
fn names_of(crd: &Value) -> Vec<String> {
    let n = &crd["spec"]["names"];
    let mut out: Vec<String> = ["plural", "singular", "kind", "listKind"].iter().filter_map(|k| n[*k].as_str()).map(String::from).collect();
    out.extend(n["shortNames"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from));
    out
}

/// The first of a CRD's names another (older) CRD of its group has, as upstream's naming
/// controller reports it.
pub fn conflict(crd: &Value, taken: &[String]) -> Option<Conflict> {
    let n = &crd["spec"]["names"];
    let used = |v: &Value| v.as_str().filter(|s| taken.iter().any(|t| t == s)).map(|s| format!("{s:?} is already in use"));
    // upstream's order: plural, singular, short names, kind, list kind
    let shorts = n["shortNames"].as_array().into_iter().flatten();
    let checks = [("PluralConflict", &n["plural"]), ("SingularConflict", &n["singular"])].into_iter().chain(shorts.map(|s| ("ShortNamesConflict", s)));
    checks
        .chain([("KindConflict", &n["kind"]), ("ListKindConflict", &n["listKind"])])
        .find_map(|(reason, v)| used(v).map(|message| Conflict { reason, message }))
}

/// A condition, keeping the transition time of the same condition in `current` when its status is the same.
fn condition(current: &Value, kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let since = current["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(meta::now()));
    json!({"type": kind, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
}

/// The status a CRD should have: served with its names accepted, or refused for `conflict`.
pub fn desired_status(crd: &Value, conflict: Option<&Conflict>) -> Value {
    let current = crd.get("status").cloned().unwrap_or(json!({}));
    let mut status = current.clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions: Vec<Value> = current["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "NamesAccepted" && c["type"] != "Established")
        .collect();
    match conflict {
        None => {
            status["acceptedNames"] = crd["spec"]["names"].clone();
            conditions.insert(0, condition(&current, "NamesAccepted", "True", "NoConflicts", "no conflicts found"));
            conditions.insert(1, condition(&current, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted"));
        }
        Some(c) => {
            if status.get("acceptedNames").is_none() {
                status["acceptedNames"] = json!({"plural": "", "kind": ""});
            }
            conditions.insert(0, condition(&current, "NamesAccepted", "False", c.reason, &c.message));
            conditions.insert(1, condition(&current, "Established", "False", "NotAccepted", "not all names are accepted"));
        }
    }
    status["conditions"] = json!(conditions);
    let mut stored: Vec<Value> = current["storedVersions"].as_array().cloned().unwrap_or_default();
    let storage = crd["spec"]["versions"].as_array().into_iter().flatten().find(|v| v["storage"] == true).map(|v| v["name"].clone());
    if let Some(s) = storage.filter(|s| !stored.contains(s)) {
        stored.push(s);
    }
    status["storedVersions"] = json!(stored);
    status
}

async fn write_status(api: &Arc<Api>, crd_res: &Arc<Resource>, name: &str, conflict: Option<&Conflict>) {
    let result = api
        .guaranteed_update(crd_res, None, name, Subresource::Status, &WriteOptions::default(), |current| {
            let mut new = current.clone();
            new["status"] = desired_status(current, conflict);
            Ok(new)
        })
        .await;
    match result {
        Ok(_) if conflict.is_none() => tracing::info!(crd = name, "established"),
        Ok(_) => tracing::info!(crd = name, reason = conflict.map(|c| c.reason), "names not accepted"),
        Err(e) if e.code == 404 => {}
        Err(e) => tracing::warn!(crd = name, error = %e.message, "writing the CRD's status failed; retrying on the next pass"),
    }
}

/// Deletes every custom resource of a CRD being deleted, through the generic delete (their
/// own finalizers are honoured); once none is left, removes the cleanup finalizer, and with it
/// the CRD. Objects still finalizing are looked at again on a later pass.
async fn clean_up(api: &Arc<Api>, crd_res: &Arc<Resource>, crd: &Value, res: Option<Arc<Resource>>) {
    let name = meta::name(crd);
    let group = crd["spec"]["group"].as_str().unwrap_or("");
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return;
    }
    let prefix = format!("{}{group}/{plural}/", api.store_prefix());
    let page = match api.store.list(&prefix, ListOptions::default()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(crd = name, error = %e, "listing the custom resources to remove failed");
            return;
        }
    };
    let mut left = 0;
    for kv in &page.kvs {
        let Ok(obj) = crate::cache::decode_kv(kv) else { continue };
        left += 1;
        if meta::get(&obj, "deletionTimestamp").is_some() {
            continue;
        }
        let result = match &res {
            Some(res) => api.delete(res, meta::get(&obj, "namespace"), meta::name(&obj), &DeleteOptions::default()).await.map(|gone| {
                if meta::get(&gone, "deletionTimestamp").is_none() {
                    left -= 1;
                }
            }),
            // never served: nothing can finalize it, so it just goes
            None => match api.store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {
                    left -= 1;
                    Ok(())
                }
                Err(e) => Err(crate::status::ApiError::internal(e)),
            },
        };
        match result {
            Ok(()) => {}
            Err(e) if e.code == 404 => left -= 1,
            Err(e) => tracing::warn!(key = %kv.key, error = %e.message, "removing a custom resource failed"),
        }
    }
    if left > 0 {
        tracing::info!(crd = name, left, "custom resources still finalizing");
        return;
    }
    let result = api
        .guaranteed_update(crd_res, None, name, Subresource::Main, &WriteOptions::default(), |current| {
            let mut new = current.clone();
            if let Some(list) = new.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                list.retain(|f| f != CLEANUP_FINALIZER);
            }
            Ok(new)
        })
        .await;
    match result {
        Ok(_) => tracing::info!(crd = name, "custom resources removed; CRD deleted"),
        Err(e) if e.code == 404 => {}
        Err(e) => tracing::warn!(crd = name, error = %e.message, "removing the cleanup finalizer failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(plural: &str, kind: &str, short: &[&str]) -> Value {
        json!({"spec": {"group": "example.com", "names": {"plural": plural, "singular": plural.trim_end_matches('s'), "kind": kind, "listKind": format!("{kind}List"), "shortNames": short},
            "versions": [{"name": "v1", "storage": true}]}})
    }

    #[test]
    fn the_older_crd_keeps_a_name_and_the_newer_is_not_established() {
        let first = crd("widgets", "Widget", &["wd"]);
        let taken = names_of(&first);
        assert_eq!(conflict(&crd("gadgets", "Gadget", &["gd"]), &taken), None);
        let c = conflict(&crd("gizmos", "Widget", &[]), &taken).expect("kind conflict");
        assert_eq!((c.reason, c.message.as_str()), ("KindConflict", "\"Widget\" is already in use"));
        let c = conflict(&crd("gizmos", "Gizmo", &["wd"]), &taken).expect("short name conflict");
        assert_eq!(c.reason, "ShortNamesConflict");
        let status = desired_status(&crd("gizmos", "Gizmo", &["wd"]), Some(&c));
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][1]["reason"], "NotAccepted");
        let ok = desired_status(&first, None);
        assert_eq!((ok["conditions"][1]["type"].as_str(), ok["conditions"][1]["status"].as_str()), (Some("Established"), Some("True")));
        assert_eq!(ok["storedVersions"], json!(["v1"]));
        assert_eq!(desired_status(&json!({"spec": first["spec"], "status": ok}), None), ok, "a second pass changes nothing");
    }
}
