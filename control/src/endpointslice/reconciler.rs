//! What to write for one Service's EndpointSlices, as upstream's endpointslice Reconciler: a
//! pure plan from the service, the pods it selects, its node zones and its current slices.
//!
//! Per address type, the desired endpoints are grouped by the ports they resolve to (pods with
//! different ports go to different slices). Per group, as upstream's reconcileByPortMapping:
//! (1) existing slices keep their endpoints still desired (updated in place when changed) and
//! lose the others (a slice left empty is deleted); (2) slices already being updated are filled
//! up, fullest first; (3) the rest go into the unchanged slice they fill most exactly, or into
//! new slices of at most `max` endpoints. Slices of ports no longer desired are deleted; a
//! service with no endpoints keeps one empty placeholder slice; a create paired with a delete
//! becomes an update of the slice that would go. Zone hints follow trafficDistribution
//! (PreferClose: each ready endpoint's own zone; otherwise none).
//!
//! It decides only; writing the plan is the controller's job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, EndpointPort, EndpointSlice, ForZone};

use super::endpoint::{self, EndpointKey, PortKey};
use super::labels::{new_slice, owned_by, slice_labels};
use crate::controller::service_pods::should_be_in_endpoints;

/// What a node tells the reconciler: None when the node is unknown, else its zone label.
pub type NodeZone<'a> = &'a dyn Fn(&str) -> Option<Option<String>>;

/// The writes that bring a service's slices to the desired state.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
    /// Pods left out for now (their node is unknown): the sync is to be retried.
    pub skipped: Vec<String>,
}

/// The plan for `svc` (pods: those its selector matches; existing: its slices managed by this
/// controller, none being deleted).
pub fn plan(svc: &Service, pods: &[Arc<Pod>], existing: &[Arc<EndpointSlice>], max: usize, zone: NodeZone<'_>) -> Plan {
    let max = max.max(1);
    let types = endpoint::address_types(svc);
    let mut out = Plan::default();
    let mut by_type: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut unsupported = vec![];
    for s in existing {
        match types.get(s.address_type.as_str()) {
            Some(t) => by_type.entry(t).or_default().push(s.as_ref()),
            None => unsupported.push(s.as_ref().clone()),
        }
    }
    for t in &types {
        let existing = by_type.remove(t).unwrap_or_default();
        let mut p = by_address_type(svc, pods, &existing, t, max, zone);
        out.create.append(&mut p.create);
        out.update.append(&mut p.update);
        out.delete.append(&mut p.delete);
        out.skipped.append(&mut p.skipped);
    }
    out.delete.extend(unsupported);
    out
}

fn by_address_type(svc: &Service, pods: &[Arc<Pod>], existing: &[&EndpointSlice], address_type: &str, max: usize, zone: NodeZone<'_>) -> Plan {
    let mut out = Plan::default();
    let mut existing_by_ports: BTreeMap<PortKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        if owned_by(s, svc) {
            existing_by_ports.entry(endpoint::port_key(s.ports.as_deref().unwrap_or_default())).or_default().push(s);
        } else {
            out.delete.push((*s).clone());
        }
    }
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut desired: BTreeMap<PortKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> = BTreeMap::new();
    for pod in pods {
        if !should_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint::ports(svc, pod);
        let group = desired.entry(endpoint::port_key(&ports)).or_insert_with(|| (ports, BTreeMap::new()));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let node_zone = match zone(&node) {
            Some(z) => z,
            // an unknown node: left out and retried, unless every address is to be published
            None if !publish => {
                out.skipped.push(format!(
                    "skipping Pod {} for Service {}/{}: Node {node} Not Found",
                    pod.metadata.name.as_deref().unwrap_or(""),
                    svc.metadata.namespace.as_deref().unwrap_or(""),
                    svc.metadata.name.as_deref().unwrap_or("")
                ));
                continue;
            }
            None => None,
        };
        let e = endpoint::from_pod(pod, node_zone.as_deref(), svc, address_type);
        if !e.addresses.is_empty() {
            group.1.insert(endpoint::key(&e), e);
        }
    }
    for (key, (ports, endpoints)) in desired.iter_mut() {
        let current = existing_by_ports.get(key).cloned().unwrap_or_default();
        let mut p = by_ports(svc, &current, std::mem::take(endpoints), ports, address_type, max);
        out.create.append(&mut p.create);
        out.update.append(&mut p.update);
        out.delete.append(&mut p.delete);
    }
    for (key, slices) in &existing_by_ports {
        if !desired.contains_key(key) {
            out.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }
    // a service without endpoints keeps one empty slice
    if existing.len() == out.delete.len() && out.create.is_empty() {
        let placeholder = new_slice(svc, vec![], address_type);
        if out.delete.len() == 1 && same_placeholder(&out.delete[0], &placeholder) {
            out.delete.clear();
        } else {
            out.create.push(placeholder);
        }
    }
    hints(svc, existing, &mut out);
    pair_creates_with_deletes(svc, &mut out);
    out
}

/// Upstream's placeholderSliceCompare: namespace, labels, address type, no endpoints, no ports.
fn same_placeholder(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
    a.metadata.namespace == b.metadata.namespace
        && labels(a) == labels(b)
        && a.address_type == b.address_type
        && a.endpoints.is_empty()
        && b.endpoints.is_empty()
        && a.ports.as_deref().unwrap_or_default().is_empty()
        && b.ports.as_deref().unwrap_or_default().is_empty()
}

fn by_ports(
    svc: &Service,
    existing: &[&EndpointSlice],
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
) -> Plan {
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let (mut unchanged, mut to_update, mut to_delete) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    // 1. keep what is still desired, updated; drop the rest
    for s in existing {
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut kept = vec![];
        let mut changed = false;
        for e in &s.endpoints {
            if let Some(want) = desired.remove(&endpoint::key(e)) {
                changed |= !endpoint::equal_beyond_key(&want, e);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(s.metadata.labels.as_ref(), svc);
        if changed || kept.len() != s.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, (*s).clone());
            } else {
                let mut next = (*s).clone();
                next.endpoints = kept;
                next.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, next);
            }
        } else if labels_changed {
            let mut next = (*s).clone();
            next.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, next);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, (*s).clone());
        }
    }
    // 2. fill the slices being updated anyway, fullest first
    if !desired.is_empty() && !to_update.is_empty() {
        let mut order: Vec<&String> = to_update.iter().collect();
        order.sort_by_key(|n| std::cmp::Reverse(by_name.get(*n).map_or(0, |s| s.endpoints.len())));
        for name in order {
            let Some(s) = by_name.get_mut(name) else { continue };
            while s.endpoints.len() < max {
                let Some((_, e)) = desired.pop_first() else { break };
                s.endpoints.push(e);
            }
        }
    }
    // 3. the rest into the unchanged slice they fill most exactly, else into new slices
    let mut create = vec![];
    while !desired.is_empty() {
        let fill = if desired.len() < max { closest_fit(unchanged.iter().filter_map(|n| by_name.get(n)), desired.len(), max) } else { None };
        let mut slice = match &fill {
            Some(name) => by_name.get(name).cloned().unwrap_or_else(|| new_slice(svc, ports.to_vec(), address_type)),
            None => new_slice(svc, ports.to_vec(), address_type),
        };
        while slice.endpoints.len() < max {
            let Some((_, e)) = desired.pop_first() else { break };
            slice.endpoints.push(e);
        }
        match fill {
            Some(name) => {
                unchanged.remove(&name);
                to_update.insert(name.clone());
                by_name.insert(name, slice);
            }
            None => create.push(slice),
        }
    }
    let pick = |names: &BTreeSet<String>| names.iter().filter_map(|n| by_name.get(n).cloned()).collect::<Vec<_>>();
    Plan { create, update: pick(&to_update), delete: pick(&to_delete), skipped: vec![] }
}

/// Upstream's getSliceToFill: the slice `n` more endpoints fill closest to `max`.
fn closest_fit<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, n: usize, max: usize) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for s in slices {
        let Some(diff) = max.checked_sub(n + s.endpoints.len()) else { continue };
        if best.as_ref().is_none_or(|(d, _)| diff < *d) && diff < max {
            best = Some((diff, s.metadata.name.clone().unwrap_or_default()));
            if diff == 0 {
                break;
            }
        }
    }
    best.map(|(_, n)| n)
}

/// The hint of an endpoint under PreferClose: its zone when ready, none otherwise (upstream
/// leaves a not-ready endpoint's hints as they were; the desired ones have none).
fn zone_hint(e: &Endpoint) -> Option<EndpointHints> {
    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
    let zone = e.zone.clone().filter(|_| ready)?;
    Some(EndpointHints { for_zones: Some(vec![ForZone { name: zone }]), for_nodes: None })
}

/// Upstream's trafficdist.ReconcileHints (or the removal of every hint when the service asks
/// for none): created and updated slices get their hints, unchanged slices whose hints are
/// wrong are updated too.
fn hints(svc: &Service, existing: &[&EndpointSlice], out: &mut Plan) {
    let prefer_close = svc.spec.as_ref().and_then(|s| s.traffic_distribution.as_deref()) == Some("PreferClose") && !topology_annotation(svc);
    let wanted = |e: &Endpoint| -> Option<Option<EndpointHints>> {
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
        match (prefer_close, ready) {
            (true, true) => Some(zone_hint(e)),
            (true, false) => None, // left as it is
            (false, _) => Some(None),
        }
    };
    let touched: BTreeSet<String> = out.update.iter().chain(&out.delete).filter_map(|s| s.metadata.name.clone()).collect();
    for s in existing {
        let name = s.metadata.name.clone().unwrap_or_default();
        if touched.contains(&name) {
            continue;
        }
        let wrong = s.endpoints.iter().any(|e| wanted(e).is_some_and(|h| h != e.hints));
        if wrong {
            out.update.push((*s).clone());
        }
    }
    for s in out.create.iter_mut().chain(out.update.iter_mut()) {
        for e in s.endpoints.iter_mut() {
            if let Some(h) = wanted(e) {
                e.hints = h;
            }
        }
    }
}

/// The Service asks for topology-aware hints by annotation (not served: no hints then).
fn topology_annotation(svc: &Service) -> bool {
    let a = svc.metadata.annotations.as_ref();
    let value = a.and_then(|a| a.get("service.kubernetes.io/topology-aware-hints").or_else(|| a.get("service.kubernetes.io/topology-mode")));
    value.is_some_and(|v| v == "Auto" || v == "auto")
}

/// Upstream's finalize: a slice to create and one to delete (of this service, the same address
/// type) become one update of the latter.
fn pair_creates_with_deletes(svc: &Service, out: &mut Plan) {
    let mut i = 0;
    while i < out.delete.len() {
        let Some(last) = out.create.last() else { break };
        let gone = &out.delete[i];
        if gone.address_type == last.address_type && owned_by(gone, svc) {
            let (name, rv) = (gone.metadata.name.clone(), gone.metadata.resource_version.clone());
            if let Some(mut slice) = out.create.pop() {
                slice.metadata.name = name;
                slice.metadata.resource_version = rv;
                out.update.push(slice);
            }
            out.delete.remove(i);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": {"clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"], "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}))
        .expect("svc")
    }

    fn pod(i: usize, container_port: i32, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": format!("p{i:03}"), "namespace": "ns", "uid": format!("u{i}"), "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": container_port}]}]},
                "status": {"phase": "Running", "podIP": format!("10.1.{}.{}", i / 250, i % 250 + 1),
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .expect("pod"),
        )
    }

    fn zone(_: &str) -> Option<Option<String>> {
        Some(Some("z1".into()))
    }

    /// Applies a plan to a fake store of slices, naming the created ones.
    fn apply(store: &mut Vec<Arc<EndpointSlice>>, plan: Plan, next: &mut usize) {
        for d in &plan.delete {
            store.retain(|s| s.metadata.name != d.metadata.name);
        }
        for u in plan.update {
            store.retain(|s| s.metadata.name != u.metadata.name);
            store.push(Arc::new(u));
        }
        for mut c in plan.create {
            *next += 1;
            c.metadata.name = Some(format!("web-{next}"));
            store.push(Arc::new(c));
        }
    }

    fn sizes(store: &[Arc<EndpointSlice>]) -> Vec<usize> {
        let mut v: Vec<usize> = store.iter().map(|s| s.endpoints.len()).collect();
        v.sort();
        v
    }

    #[test]
    fn packs_at_most_max_per_slice_and_updates_in_place() {
        let s = svc();
        let pods: Vec<Arc<Pod>> = (0..250).map(|i| pod(i, 8080, true)).collect();
        let (mut store, mut n) = (vec![], 0);
        let p = plan(&s, &pods, &store, 100, &zone);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (3, 0, 0));
        apply(&mut store, p, &mut n);
        assert_eq!(sizes(&store), vec![50, 100, 100]);
        // nothing changed: nothing to write
        let p = plan(&s, &pods, &store, 100, &zone);
        assert!(p.create.is_empty() && p.update.is_empty() && p.delete.is_empty(), "{p:?}");
        // 30 more fill the partly full slice rather than a new one
        let more: Vec<Arc<Pod>> = (0..280).map(|i| pod(i, 8080, true)).collect();
        let p = plan(&s, &more, &store, 100, &zone);
        assert_eq!((p.create.len(), p.update.len()), (0, 1));
        apply(&mut store, p, &mut n);
        assert_eq!(sizes(&store), vec![80, 100, 100]);
        // one pod becomes unready: one slice updated in place
        let mut changed = more.clone();
        changed[5] = pod(5, 8080, false);
        let p = plan(&s, &changed, &store, 100, &zone);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let e = p.update[0].endpoints.iter().find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some("p005")).cloned().unwrap_or_default();
        assert_eq!(e.conditions.and_then(|c| c.ready), Some(false));
    }

    #[test]
    fn pods_of_different_ports_go_to_different_slices() {
        let s = svc();
        let pods = vec![pod(1, 8080, true), pod(2, 8080, true), pod(3, 9090, true)];
        let p = plan(&s, &pods, &[], 100, &zone);
        assert_eq!(p.create.len(), 2);
        let mut by_port: Vec<(i32, usize)> =
            p.create.iter().map(|s| (s.ports.as_deref().unwrap_or_default()[0].port.unwrap_or(0), s.endpoints.len())).collect();
        by_port.sort();
        assert_eq!(by_port, vec![(8080, 2), (9090, 1)]);
    }

    #[test]
    fn an_empty_service_keeps_one_placeholder_and_empty_slices_go() {
        let s = svc();
        let (mut store, mut n) = (vec![], 0);
        let p = plan(&s, &[], &store, 100, &zone);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty() && p.create[0].ports.as_deref().unwrap_or_default().is_empty());
        apply(&mut store, p, &mut n);
        let p = plan(&s, &[], &store, 100, &zone);
        assert!(p.create.is_empty() && p.update.is_empty() && p.delete.is_empty(), "{p:?}");
        // pods come: the placeholder is replaced by an update of it, not a create and a delete
        let pods: Vec<Arc<Pod>> = (0..3).map(|i| pod(i, 8080, true)).collect();
        let p = plan(&s, &pods, &store, 100, &zone);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-1"));
        apply(&mut store, p, &mut n);
        // and go: the slice is emptied into a placeholder again
        let p = plan(&s, &[], &store, 100, &zone);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert!(p.update[0].endpoints.is_empty());
        // two slices and no pods: one is deleted, the other becomes the placeholder
        let many: Vec<Arc<Pod>> = (0..150).map(|i| pod(i, 8080, true)).collect();
        let (mut store, mut n) = (vec![], 0);
        let p = plan(&s, &many, &store, 100, &zone);
        apply(&mut store, p, &mut n);
        let p = plan(&s, &[], &store, 100, &zone);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 1));
    }

    #[test]
    fn unknown_nodes_skip_the_pod_and_terminal_or_ipless_pods_are_left_out() {
        let s = svc();
        let nowhere = |_: &str| None;
        let p = plan(&s, &[pod(1, 8080, true)], &[], 100, &nowhere);
        assert_eq!(p.skipped.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        let mut done = (*pod(2, 8080, true)).clone();
        if let Some(st) = done.status.as_mut() {
            st.phase = Some("Failed".into());
        }
        let mut pending = (*pod(3, 8080, false)).clone();
        if let Some(st) = pending.status.as_mut() {
            st.pod_ip = None;
        }
        let p = plan(&s, &[Arc::new(done), Arc::new(pending)], &[], 100, &zone);
        assert!(p.create[0].endpoints.is_empty());
    }

    #[test]
    fn slices_of_another_owner_or_address_type_are_deleted_and_labels_follow_the_service() {
        let mut s = svc();
        let pods = vec![pod(1, 8080, true)];
        let mut created = plan(&s, &pods, &[], 100, &zone).create;
        created[0].metadata.name = Some("web-a".into());
        let mine = Arc::new(created[0].clone());
        let mut stranger = created[0].clone();
        stranger.metadata.name = Some("web-b".into());
        stranger.metadata.owner_references = None;
        let mut v6 = created[0].clone();
        v6.metadata.name = Some("web-c".into());
        v6.address_type = "IPv6".into();
        let p = plan(&s, &pods, &[mine.clone(), Arc::new(stranger), Arc::new(v6)], 100, &zone);
        let mut gone: Vec<String> = p.delete.iter().filter_map(|d| d.metadata.name.clone()).collect();
        gone.sort();
        assert_eq!(gone, vec!["web-b", "web-c"]);
        assert!(p.update.is_empty() && p.create.is_empty());
        s.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into()), ("tier".into(), "front".into())]));
        let p = plan(&s, &pods, &[mine], 100, &zone);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].metadata.labels.as_ref().and_then(|l| l.get("tier")).map(String::as_str), Some("front"));
    }

    #[test]
    fn prefer_close_hints_each_ready_endpoint_to_its_zone() {
        let mut s = svc();
        let pods = vec![pod(1, 8080, true), pod(2, 8080, false)];
        let (mut store, mut n) = (vec![], 0);
        let p = plan(&s, &pods, &store, 100, &zone);
        apply(&mut store, p, &mut n);
        assert!(store[0].endpoints.iter().all(|e| e.hints.is_none()));
        if let Some(sp) = s.spec.as_mut() {
            sp.traffic_distribution = Some("PreferClose".into());
        }
        let p = plan(&s, &pods, &store, 100, &zone);
        assert_eq!(p.update.len(), 1);
        let hinted: Vec<bool> = p.update[0].endpoints.iter().map(|e| e.hints.is_some()).collect();
        assert_eq!(hinted, vec![true, false]);
        apply(&mut store, p, &mut n);
        assert!(plan(&s, &pods, &store, 100, &zone).update.is_empty());
    }
}
