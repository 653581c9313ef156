//! The pods bound to this node, and the ConfigMaps and Secrets they use, followed with
//! kube-runtime watchers (list, then watch; a relist after a 410): the pods by
//! `spec.nodeName`, each used object by name (all a node's credential may read), and the
//! node's own Node (its labels and taints judge the pods it is given). PersistentVolumeClaims
//! are read (not watched: a node may only get them) with the hostPath or local
//! PersistentVolume they are bound to, again every 2 s while one is not bound yet. Each change publishes a
//! new [`ClusterPods`]; `synced` says the first complete list of pods is in, before which the
//! node must not treat missing pods as gone.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tokio::sync::{mpsc, watch};

use crate::node::service_env::{ServiceLink, ServiceLinks};
use crate::node::volumes::{ClaimVolume, Objects};

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
    /// The ConfigMaps and Secrets these pods use.
    pub objects: Objects,
    /// This node's Node object (for admission: its labels and taints).
    pub node: Option<k8s_openapi::api::core::v1::Node>,
}

/// One change of a followed kind.
enum Change {
    Pods(Box<Result<Event<Pod>, watcher::Error>>),
    Node(Box<Result<Event<k8s_openapi::api::core::v1::Node>, watcher::Error>>),
    Services(Box<Result<Event<Service>, watcher::Error>>),
    ConfigMap((String, String), Result<Event<ConfigMap>, watcher::Error>),
    Secret((String, String), Result<Event<Secret>, watcher::Error>),
}

/// (namespace, name) of a namespaced object.
type ObjectKey = (String, String);

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The watches of single ConfigMaps and Secrets, one task each, feeding one channel. A node may
/// read only what its pods use (the Node authorizer), so each object is watched by name
/// (`metadata.name=` in its namespace), as the kubelet's watch-based object manager does.
struct ObjectWatches {
    client: kube::Client,
    tx: mpsc::Sender<Change>,
    config_maps: BTreeMap<(String, String), tokio::task::JoinHandle<()>>,
    secrets: BTreeMap<(String, String), tokio::task::JoinHandle<()>>,
}

impl ObjectWatches {
    /// Watches exactly `config_maps` and `secrets` from now on; returns the keys no longer
    /// watched (their objects are dropped from the state).
    fn follow(&mut self, config_maps: BTreeSet<ObjectKey>, secrets: BTreeSet<ObjectKey>) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
        let gone_cms = Self::retain(&mut self.config_maps, &config_maps);
        let gone_secrets = Self::retain(&mut self.secrets, &secrets);
        for k in config_maps {
            if !self.config_maps.contains_key(&k) {
                let task = self.watch::<ConfigMap>(&k, Change::ConfigMap);
                self.config_maps.insert(k, task);
            }
        }
        for k in secrets {
            if !self.secrets.contains_key(&k) {
                let task = self.watch::<Secret>(&k, Change::Secret);
                self.secrets.insert(k, task);
            }
        }
        (gone_cms, gone_secrets)
    }

    fn retain(tasks: &mut BTreeMap<(String, String), tokio::task::JoinHandle<()>>, keep: &BTreeSet<(String, String)>) -> Vec<(String, String)> {
        let gone: Vec<_> = tasks.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for k in &gone {
            if let Some(t) = tasks.remove(k) {
                t.abort();
            }
        }
        gone
    }

    fn watch<K>(&self, key: &(String, String), wrap: fn(ObjectKey, Result<Event<K>, watcher::Error>) -> Change) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &key.0);
        let by_name = watcher::Config::default().fields(&format!("metadata.name={}", key.1));
        let (tx, key) = (self.tx.clone(), key.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(api, by_name));
            while let Some(e) = events.next().await {
                if tx.send(wrap(key.clone(), e)).await.is_err() {
                    return;
                }
            }
        })
    }
}

impl Drop for ObjectWatches {
    fn drop(&mut self) {
        for t in self.config_maps.values().chain(self.secrets.values()) {
            t.abort();
        }
    }
}

/// What the pods use, by (namespace, name).
#[derive(Default)]
struct Used {
    config_maps: BTreeSet<ObjectKey>,
    secrets: BTreeSet<ObjectKey>,
    claims: BTreeSet<ObjectKey>,
}

fn used_objects(pods: &BTreeMap<String, Pod>) -> Used {
    let mut used = Used::default();
    for p in pods.values().filter(|p| !super::mirror::is_mirror(p)) {
        let refs = berth_apiserver::authz::node::pod_references(p);
        used.config_maps.extend(refs.config_maps.iter().map(|n| (refs.namespace.clone(), n.clone())));
        used.secrets.extend(refs.secrets.iter().map(|n| (refs.namespace.clone(), n.clone())));
        used.claims.extend(refs.claims.iter().map(|n| (refs.namespace.clone(), n.clone())));
    }
    used
}

/// Keeps `have` to the claims in `wanted`, looking up (GET, as the kubelet's volume manager:
/// a node may not watch claims) the PersistentVolume each unresolved one is bound to; whether
/// anything changed.
async fn resolve_claims(client: &kube::Client, wanted: &BTreeSet<ObjectKey>, have: &mut BTreeMap<ObjectKey, ClaimVolume>) -> bool {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let before = have.len();
    have.retain(|k, _| wanted.contains(k));
    let mut changed = have.len() != before;
    let missing: Vec<ObjectKey> = wanted.iter().filter(|k| !have.contains_key(*k)).cloned().collect();
    for key in &missing {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &key.0);
        let volume_name = match claims.get_opt(&key.1).await {
            Ok(Some(c)) => c.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty()),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(claim = %format!("{}/{}", key.0, key.1), error = %e, "reading the claim");
                None
            }
        };
        let Some(volume_name) = volume_name else { continue };
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let spec = match volumes.get_opt(&volume_name).await {
            Ok(Some(v)) => v.spec,
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(volume = %volume_name, error = %e, "reading the volume");
                None
            }
        };
        let Some(spec) = spec else { continue };
        let found = match (spec.host_path, spec.local) {
            (Some(h), _) => Some(ClaimVolume { path: h.path, kind: h.type_.unwrap_or_default() }),
            (None, Some(l)) => Some(ClaimVolume { path: l.path, kind: "Directory".into() }),
            _ => {
                tracing::warn!(claim = %format!("{}/{}", key.0, key.1), volume = %volume_name, "the claim's volume is neither hostPath nor local: not mountable here");
                None
            }
        };
        if let Some(cv) = found {
            have.insert(key.clone(), cv);
            changed = true;
        }
    }
    changed
}

/// Follows the cluster until `stop` fires, publishing on `tx`.
pub async fn follow(client: kube::Client, node_name: String, tx: watch::Sender<ClusterPods>, mut stop: watch::Receiver<bool>) {
    let by_node = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), by_node).map(|e| Change::Pods(Box::new(e)));
    let own = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let nodes = watcher::watcher(Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()), own).map(|e| Change::Node(Box::new(e)));
    // every Service with a cluster IP: the containers' Service environment variables (the
    // kubelet's service lister; nothing is published before its first list)
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).map(|e| Change::Services(Box::new(e)));
    let mut pods = std::pin::pin!(futures_util::stream::select(futures_util::stream::select(pods, nodes), services));
    let mut services_next: Option<ServiceLinks> = None;
    let mut node_next = None;
    let (objects_tx, mut objects_rx) = mpsc::channel(256);
    let mut watches = ObjectWatches { client, tx: objects_tx, config_maps: BTreeMap::new(), secrets: BTreeMap::new() };
    let mut state = ClusterPods::default();
    let mut claims_wanted: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut claims_retry = tokio::time::interval(std::time::Duration::from_secs(2));
    // what a relist is building, kind by kind
    let mut pods_next = None;
    // one watch per object: a relist of it starts afresh (the object or nothing)
    let (mut cms_next, mut secrets_next) = (BTreeMap::new(), BTreeMap::new());
    loop {
        let change = tokio::select! {
            _ = stop.changed() => return,
            c = pods.next() => match c {
                Some(c) => c,
                None => return,
            },
            Some(c) = objects_rx.recv() => c,
            // claims not bound yet are looked up again
            _ = claims_retry.tick(), if claims_wanted.len() > state.objects.claims.len() => {
                if resolve_claims(&watches.client, &claims_wanted, &mut state.objects.claims).await {
                    publish_state(&tx, &state);
                }
                continue;
            }
        };
        let publish = match change {
            Change::Pods(e) => {
                let r = apply(*e, &mut pods_next, &mut state.pods, |p: &Pod| p.metadata.uid.clone().unwrap_or_default(), &mut state.synced);
                if matches!(r, Ok(true)) {
                    let used = used_objects(&state.pods);
                    claims_wanted = used.claims;
                    resolve_claims(&watches.client, &claims_wanted, &mut state.objects.claims).await;
                    let (gone_cms, gone_secrets) = watches.follow(used.config_maps, used.secrets);
                    for k in gone_cms {
                        state.objects.config_maps.remove(&k);
                        cms_next.remove(&k);
                    }
                    for k in gone_secrets {
                        state.objects.secrets.remove(&k);
                        secrets_next.remove(&k);
                    }
                }
                r
            }
            // (an event of a watch just ended is late news)
            Change::Node(e) => {
                let mut one = state.node.take().map(|n| BTreeMap::from([(String::new(), n)])).unwrap_or_default();
                let r = apply(*e, &mut node_next, &mut one, |_| String::new(), &mut false);
                state.node = one.into_values().next();
                r
            }
            Change::Services(e) => apply_services(*e, &mut services_next, &mut state.objects.services),
            Change::ConfigMap(k, _) if !watches.config_maps.contains_key(&k) => Ok(false),
            Change::Secret(k, _) if !watches.secrets.contains_key(&k) => Ok(false),
            Change::ConfigMap(k, e) => apply_one(e, &k, cms_next.entry(k.clone()).or_default(), &mut state.objects.config_maps),
            Change::Secret(k, e) => apply_one(e, &k, secrets_next.entry(k.clone()).or_default(), &mut state.objects.secrets),
        };
        match publish {
            Ok(true) => publish_state(&tx, &state),
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

/// Publishes `state`, the mirror pods apart; nothing before the Services are listed (a
/// container started before would miss their variables, as the kubelet refuses to).
fn publish_state(tx: &watch::Sender<ClusterPods>, state: &ClusterPods) {
    if state.objects.services.is_none() {
        return;
    }
    let mut out = state.clone();
    let (mirrors, pods): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut out.pods).into_iter().partition(|(_, p)| super::mirror::is_mirror(p));
    out.pods = pods;
    out.mirrors = mirrors.into_values().map(|p| (key(&p.metadata), p)).collect();
    tx.send_replace(out);
}

/// Folds one event of the Services' watch into `current` (None until the first list is done;
/// `next` collects a relist); whether a Service's variables changed.
fn apply_services(
    event: Result<Event<Service>, watcher::Error>,
    next: &mut Option<ServiceLinks>,
    current: &mut Option<std::sync::Arc<ServiceLinks>>,
) -> Result<bool, watcher::Error> {
    let (k, link) = match event? {
        Event::Init => {
            *next = Some(ServiceLinks::new());
            return Ok(false);
        }
        Event::InitApply(s) => {
            if let Some(link) = ServiceLink::of(&s) {
                next.get_or_insert_with(ServiceLinks::new).insert(key(&s.metadata), link);
            }
            return Ok(false);
        }
        Event::InitDone => {
            let listed = next.take().unwrap_or_default();
            let changed = current.as_deref() != Some(&listed);
            if changed {
                *current = Some(std::sync::Arc::new(listed));
            }
            return Ok(changed);
        }
        Event::Apply(s) => (key(&s.metadata), ServiceLink::of(&s)),
        Event::Delete(s) => (key(&s.metadata), None),
    };
    let Some(links) = current.as_mut() else { return Ok(false) };
    if links.get(&k) == link.as_ref() {
        return Ok(false);
    }
    let links = std::sync::Arc::make_mut(links);
    match link {
        Some(l) => links.insert(k, l),
        None => links.remove(&k),
    };
    Ok(true)
}

/// Folds one event of the watch of the single object `key` into `current`; `next` holds what a
/// relist found so far (at most that object).
fn apply_one<T>(
    event: Result<Event<T>, watcher::Error>,
    key: &(String, String),
    next: &mut Option<T>,
    current: &mut BTreeMap<(String, String), T>,
) -> Result<bool, watcher::Error> {
    Ok(match event? {
        Event::Init => {
            *next = None;
            false
        }
        Event::InitApply(o) => {
            *next = Some(o);
            false
        }
        Event::InitDone => {
            match next.take() {
                Some(o) => current.insert(key.clone(), o),
                None => current.remove(key),
            };
            true
        }
        Event::Apply(o) => {
            current.insert(key.clone(), o);
            true
        }
        Event::Delete(_) => {
            current.remove(key);
            true
        }
    })
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
