//! The pods bound to this node, and the ConfigMaps and Secrets in their namespaces, followed
//! with kube-runtime watchers (list, then watch; a relist after a 410). Each change publishes a
//! new [`ClusterPods`]; `synced` says the first complete list of pods is in, before which the
//! node must not treat missing pods as gone.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tokio::sync::watch;

use crate::node::volumes::Objects;

/// What the cluster asks of this node.
#[derive(Debug, Clone, Default)]
pub struct ClusterPods {
    /// The first full list of pods has been seen.
    pub synced: bool,
    /// Pods bound to this node, by UID (mirror pods excepted).
    pub pods: BTreeMap<String, Pod>,
    /// The mirror pods of this node's static pods in the API, by (namespace, name): shown,
    /// never run (`mirror`).
    pub mirrors: BTreeMap<(String, String), Pod>,
    /// ConfigMaps and Secrets of the namespaces these pods run in.
    pub objects: Objects,
}

/// One change of a followed kind.
enum Change {
    Pods(Box<Result<Event<Pod>, watcher::Error>>),
    ConfigMaps(Result<Event<ConfigMap>, watcher::Error>),
    Secrets(Result<Event<Secret>, watcher::Error>),
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Follows the cluster until `stop` fires, publishing on `tx`.
pub async fn follow(client: kube::Client, node_name: String, tx: watch::Sender<ClusterPods>, mut stop: watch::Receiver<bool>) {
    let by_node = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), by_node).map(|e| Change::Pods(Box::new(e)));
    let cms = watcher::watcher(Api::<ConfigMap>::all(client.clone()), watcher::Config::default()).map(Change::ConfigMaps);
    let secrets = watcher::watcher(Api::<Secret>::all(client), watcher::Config::default()).map(Change::Secrets);
    let mut changes = std::pin::pin!(futures_util::stream::select(pods, futures_util::stream::select(cms, secrets)));
    let mut state = ClusterPods::default();
    // what a relist is building, kind by kind
    let (mut pods_next, mut cms_next, mut secrets_next) = (None, None, None);
    loop {
        let change = tokio::select! {
            _ = stop.changed() => return,
            c = changes.next() => match c {
                Some(c) => c,
                None => return,
            },
        };
        let publish = match change {
            Change::Pods(e) => apply(*e, &mut pods_next, &mut state.pods, |p: &Pod| p.metadata.uid.clone().unwrap_or_default(), &mut state.synced),
            Change::ConfigMaps(e) => apply(e, &mut cms_next, &mut state.objects.config_maps, |c: &ConfigMap| key(&c.metadata), &mut false),
            Change::Secrets(e) => apply(e, &mut secrets_next, &mut state.objects.secrets, |s: &Secret| key(&s.metadata), &mut false),
        };
        match publish {
            Ok(true) => {
                let mut out = state.clone();
                let (mirrors, pods): (BTreeMap<_, _>, BTreeMap<_, _>) =
                    std::mem::take(&mut out.pods).into_iter().partition(|(_, p)| super::mirror::is_mirror(p));
                out.pods = pods;
                out.mirrors = mirrors.into_values().map(|p| (key(&p.metadata), p)).collect();
                tx.send_replace(out);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching the cluster (retrying)");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Folds one watcher event into `current` (a relist collects into `next` first and replaces
/// `current` when done, so objects deleted meanwhile go); whether to publish.
fn apply<K: Ord, T>(
    event: Result<Event<T>, watcher::Error>,
    next: &mut Option<BTreeMap<K, T>>,
    current: &mut BTreeMap<K, T>,
    key: impl Fn(&T) -> K,
    synced: &mut bool,
) -> Result<bool, watcher::Error> {
    Ok(match event? {
        Event::Init => {
            *next = Some(BTreeMap::new());
            false
        }
        Event::InitApply(o) => {
            next.get_or_insert_with(BTreeMap::new).insert(key(&o), o);
            false
        }
        Event::InitDone => {
            *current = next.take().unwrap_or_default();
            *synced = true;
            true
        }
        Event::Apply(o) => {
            current.insert(key(&o), o);
            true
        }
        Event::Delete(o) => {
            current.remove(&key(&o));
            true
        }
    })
}
