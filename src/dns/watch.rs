//! The cluster's Services and EndpointSlices (discovery.k8s.io/v1), followed with kube-runtime
//! watchers (list, then watch; a relist after a 410 replaces what the index holds) into the
//! index, one object at a time as its event arrives. The node's credential may list and watch
//! both (the nodes have kube-proxy's role, `system:node-proxier`).

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use super::index::{Index, Listed};

/// Follows Services and EndpointSlices into `index` until `stop`.
pub async fn follow(client: kube::Client, index: Arc<Index>, mut stop: watch::Receiver<bool>) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff();
    let mut services = std::pin::pin!(services);
    let mut slices = std::pin::pin!(slices);
    let mut relisted_services: Option<Vec<Service>> = None;
    let mut relisted_slices: Option<Vec<EndpointSlice>> = None;
    loop {
        tokio::select! {
            _ = super::stopped(&mut stop) => return,
            e = services.next() => match e {
                None => return,
                Some(Err(e)) => tracing::debug!(error = %e, "the Service watch failed; retrying"),
                Some(Ok(e)) => on_event(&index, e, &mut relisted_services, Listed::Services, |r, s| r.apply_service(s), |r, s| {
                    if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                        r.delete_service(&(ns.clone(), name.clone()));
                    }
                }, |r, list| r.replace_services(list)),
            },
            e = slices.next() => match e {
                None => return,
                Some(Err(e)) => tracing::debug!(error = %e, "the EndpointSlice watch failed; retrying"),
                Some(Ok(e)) => on_event(&index, e, &mut relisted_slices, Listed::Slices, |r, s| r.apply_slice(s), |r, s| {
                    if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                        r.delete_slice(&(ns.clone(), name.clone()));
                    }
                }, |r, list| r.replace_slices(list)),
            },
        }
    }
}

type Records = super::index::Records;

/// Applies one watch event: a change at once; a relist's objects gathered until it is complete,
/// then put in place of the old ones.
fn on_event<K>(
    index: &Index,
    event: Event<K>,
    relist: &mut Option<Vec<K>>,
    which: Listed,
    apply: impl FnOnce(&mut Records, &K),
    delete: impl FnOnce(&mut Records, &K),
    replace: impl FnOnce(&mut Records, &[K]),
) {
    match event {
        Event::Init => *relist = Some(vec![]),
        Event::InitApply(obj) => {
            if let Some(r) = relist.as_mut() {
                r.push(obj);
            }
        }
        Event::InitDone => {
            if let Some(list) = relist.take() {
                index.update(|r| replace(r, &list));
                index.mark_listed(which);
                let (services, endpoints) = index.read().counts();
                tracing::debug!(kind = ?which, services, endpoints, "listed");
            }
        }
        Event::Apply(obj) => index.update(|r| apply(r, &obj)),
        Event::Delete(obj) => index.update(|r| delete(r, &obj)),
    }
}
