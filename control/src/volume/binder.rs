//! The PersistentVolume binder, as kube-controller-manager's persistentvolume-binder: binds
//! Pending claims to Available volumes that fit ([`matching`]), provisions volumes for claims of
//! a class whose provisioner Berth runs ([`local_path`]), and reclaims the volumes of deleted
//! claims (Retain: Released; Delete: the volume and its directory deleted). Claims of a
//! WaitForFirstConsumer class wait until the scheduler names their node
//! (volume.kubernetes.io/selected-node). A binding is written in upstream's order — volume
//! claimRef, volume phase, claim volumeName and annotations, claim status — each step a PUT on
//! what the previous one returned, so a conflict ends the sync and the next one resumes.
//! Writes go through the persistent-volume-binder service account, which may update but not
//! patch. A released local-path volume on another node than the server's own is removed by a
//! helper pod there ([`helper_pod`]), one step per sync so that no worker waits on it: the pod is
//! made, its finishing (a pod watch event) or its deadline brings the volume back, and the volume
//! is deleted only after the pod succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::helper_pod::{self, Outcome};
use super::local_path::{self, DeleteError, LocalPath, Removal};
use super::matching::{self, NodeRef};
use super::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, NO_PROVISIONER,
};
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::recorder::{Recorder, NORMAL, WARNING};
use crate::workqueue::WorkQueue;

/// Upstream's --pvclaimbinder-sync-period: every claim and volume is looked at again this often.
const RESYNC: Duration = Duration::from_secs(15);
const WORKERS: usize = 2;
/// How soon a helper pod that is being deleted or replaced is looked at again.
const HELPER_RECHECK: Duration = Duration::from_secs(1);
pub const COMPONENT: &str = "persistentvolume-controller";

pub struct Controller {
    client: kube::Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
    nodes: Arc<Informer<Node>>,
    /// Only to hear of helper pods finishing.
    pods: Arc<Informer<Pod>>,
    claim_queue: Arc<WorkQueue<ObjectKey>>,
    volume_queue: Arc<WorkQueue<String>>,
    recorder: Recorder,
    /// The local-path provisioner, when this server runs it.
    local_path: Option<LocalPath>,
}

fn annotation<'a>(meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn set_annotation(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str, value: &str) {
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn claim_label(c: &PersistentVolumeClaim) -> String {
    format!("{}/{}", c.metadata.namespace.as_deref().unwrap_or(""), c.metadata.name.as_deref().unwrap_or(""))
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Controller {
    pub fn new(
        client: kube::Client,
        claims: Arc<Informer<PersistentVolumeClaim>>,
        volumes: Arc<Informer<PersistentVolume>>,
        classes: Arc<Informer<StorageClass>>,
        nodes: Arc<Informer<Node>>,
        pods: Arc<Informer<Pod>>,
        local_path: Option<LocalPath>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), COMPONENT);
        let c = Arc::new(Controller {
            client,
            claims,
            volumes,
            classes,
            nodes,
            pods,
            claim_queue: WorkQueue::new(),
            volume_queue: WorkQueue::new(),
            recorder,
            local_path,
        });
        let (cq, vq) = (c.claim_queue.clone(), c.volume_queue.clone());
        c.claims.on_change(move |change| {
            let claim = change.object();
            cq.add(key_of(claim.as_ref()));
            // a deleted claim releases its volume
            if let (Change::Deleted(_), Some(v)) = (change, claim.spec.as_ref().and_then(|s| s.volume_name.clone())) {
                vq.add(v);
            }
        });
        let (cq, vq) = (c.claim_queue.clone(), c.volume_queue.clone());
        c.volumes.on_change(move |change| {
            let v = change.object();
            vq.add(v.metadata.name.clone().unwrap_or_default());
            if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                cq.add((r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()));
            }
        });
        // a helper pod that finished brings its volume back (not its deletion: a failed attempt
        // is retried after the queue's back-off)
        let vq = c.volume_queue.clone();
        c.pods.on_change(move |change| {
            let p = change.object();
            let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
            if matches!(change, Change::Deleted(_)) || !finished || p.metadata.deletion_timestamp.is_some() {
                return;
            }
            if p.metadata.namespace.as_deref() == Some(helper_pod::NAMESPACE) {
                if let Some(v) = p.metadata.name.as_deref().and_then(helper_pod::volume_of) {
                    vq.add(v.to_string());
                }
            }
        });
        let weak = Arc::downgrade(&c);
        c.classes.on_change(move |_| {
            if let Some(c) = weak.upgrade() {
                c.resync_claims();
            }
        });
        c
    }

    fn resync_claims(&self) {
        for claim in self.claims.list() {
            self.claim_queue.add(key_of(claim.as_ref()));
        }
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.claims.synced().await;
        self.volumes.synced().await;
        self.classes.synced().await;
        self.nodes.synced().await;
        let resync = {
            let (this, stop) = (self.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval(RESYNC);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    this.resync_claims();
                    for v in this.volumes.list() {
                        this.volume_queue.add(v.metadata.name.clone().unwrap_or_default());
                    }
                }
            }
        };
        let (c1, c2) = (self.clone(), self.clone());
        let claims = self.claim_queue.clone().run_workers(WORKERS, stop.clone(), move |k| {
            let c = c1.clone();
            let span = tracing::debug_span!("sync-claim", claim = %format!("{}/{}", k.0, k.1));
            async move { c.sync_claim(&k).await }.instrument(span)
        });
        let volumes = self.volume_queue.clone().run_workers(WORKERS, stop.clone(), move |name| {
            let c = c2.clone();
            let span = tracing::debug_span!("sync-volume", volume = %name);
            async move { c.sync_volume(&name).await }.instrument(span)
        });
        tokio::join!(resync, claims, volumes);
    }

    // ---- claims ----

    async fn sync_claim(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(claim) = self.claims.get(&k.0, &k.1) else { return Ok(()) };
        if annotation(&claim.metadata, ANN_BIND_COMPLETED).is_some() {
            return self.sync_bound_claim(&claim).await;
        }
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        self.sync_unbound_claim(&claim).await
    }

    fn class_of(&self, claim: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
        let name = matching::claim_class(claim);
        (!name.is_empty()).then(|| self.classes.get("", name)).flatten()
    }

    async fn sync_unbound_claim(&self, claim: &Arc<PersistentVolumeClaim>) -> Result<(), String> {
        let wanted = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
        if !wanted.is_empty() {
            return self.sync_claim_wanting(claim, &wanted).await;
        }
        let class = self.class_of(claim);
        let delay = matching::delays_binding(class.as_deref());
        let selected = annotation(&claim.metadata, ANN_SELECTED_NODE).filter(|n| !n.is_empty()).map(String::from);
        let node_obj = selected.as_deref().and_then(|n| self.nodes.get("", n));
        let fallback: BTreeMap<String, String> = selected.iter().map(|n| ("kubernetes.io/hostname".to_string(), n.clone())).collect();
        let node = match (&selected, &node_obj) {
            (Some(name), Some(n)) => Some(NodeRef { name, labels: n.metadata.labels.as_ref().unwrap_or(&fallback) }),
            (Some(name), None) => Some(NodeRef { name, labels: &fallback }),
            _ => None,
        };
        let volumes = self.volumes.list();
        let found = matching::find_best_match(claim, &volumes, node.filter(|_| delay), delay);
        if let Some(v) = found {
            return self.bind(&v, claim).await;
        }
        let class_name = matching::claim_class(claim).to_string();
        if delay && selected.is_none() {
            self.recorder.event(claim.as_ref(), NORMAL, "WaitForFirstConsumer", "waiting for first consumer to be created before binding".into());
        } else if !class_name.is_empty() {
            return self.provision(claim, &class_name, class, selected.as_deref()).await;
        } else {
            self.recorder.event(claim.as_ref(), NORMAL, "FailedBinding", "no persistent volumes available for this claim and no storage class is set".into());
        }
        self.set_claim_phase(claim, "Pending").await
    }

    /// A claim that names its volume (spec.volumeName).
    async fn sync_claim_wanting(&self, claim: &Arc<PersistentVolumeClaim>, wanted: &str) -> Result<(), String> {
        let Some(v) = self.volumes.get("", wanted) else { return self.set_claim_phase(claim, "Pending").await };
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            None => match matching::check_satisfies(&v, claim) {
                Ok(()) => self.bind(&v, claim).await,
                Err(m) => {
                    self.recorder.event(claim.as_ref(), WARNING, "VolumeMismatch", format!("Cannot bind to requested volume {wanted:?}: {m}"));
                    self.set_claim_phase(claim, "Pending").await
                }
            },
            Some(_) if matching::bound_to_claim(&v, claim) => self.bind(&v, claim).await,
            Some(_) => {
                self.recorder.event(claim.as_ref(), WARNING, "FailedBinding", format!("volume {wanted:?} already bound to a different claim."));
                self.set_claim_phase(claim, "Pending").await
            }
        }
    }

    async fn sync_bound_claim(&self, claim: &Arc<PersistentVolumeClaim>) -> Result<(), String> {
        let name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
        if name.is_empty() {
            return self.lose(claim, "ClaimLost", "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!").await;
        }
        let Some(v) = self.volumes.get("", &name) else {
            return self.lose(claim, "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!").await;
        };
        let ref_uid = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).map(|r| r.uid.clone().unwrap_or_default());
        match ref_uid {
            None => self.bind(&v, claim).await,
            Some(uid) if Some(uid.as_str()) == claim.metadata.uid.as_deref() => self.bind(&v, claim).await,
            Some(_) => self.lose(claim, "ClaimMisbound", "Two claims are bound to the same volume, this one is bound incorrectly").await,
        }
    }

    async fn lose(&self, claim: &PersistentVolumeClaim, reason: &str, message: &str) -> Result<(), String> {
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Lost") {
            self.recorder.event(claim, WARNING, reason, message.into());
        }
        self.set_claim_phase(claim, "Lost").await
    }

    async fn set_claim_phase(&self, claim: &PersistentVolumeClaim, phase: &str) -> Result<(), String> {
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let mut c = claim.clone();
        c.status.get_or_insert_with(Default::default).phase = Some(phase.into());
        self.replace_claim_status(&c).await.map(|_| ())
    }

    // ---- provisioning ----

    async fn provision(
        &self,
        claim: &Arc<PersistentVolumeClaim>,
        class_name: &str,
        class: Option<Arc<StorageClass>>,
        node: Option<&str>,
    ) -> Result<(), String> {
        let Some(class) = class else {
            self.recorder.event(claim.as_ref(), WARNING, "ProvisioningFailed", format!("storageclass.storage.k8s.io {class_name:?} not found"));
            return self.set_claim_phase(claim, "Pending").await;
        };
        let provisioner = class.provisioner.clone();
        if provisioner == NO_PROVISIONER {
            self.recorder.event(claim.as_ref(), WARNING, "ProvisioningFailed", format!("no volume plugin matched name: {provisioner}"));
            return self.set_claim_phase(claim, "Pending").await;
        }
        let claim = self.set_claim_provisioner(claim, &provisioner).await?;
        let Some(lp) = self.local_path.as_ref().filter(|_| provisioner == local_path::PROVISIONER) else {
            self.recorder.event(
                claim.as_ref(),
                NORMAL,
                "ExternalProvisioning",
                format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
            );
            return self.set_claim_phase(&claim, "Pending").await;
        };
        let volume_name = LocalPath::volume_name(&claim);
        if self.volumes.get("", &volume_name).is_some() {
            return Ok(()); // made before; binding follows its watch event
        }
        self.recorder.event(claim.as_ref(), NORMAL, "Provisioning", format!("External provisioner is provisioning volume for claim {:?}", claim_label(&claim)));
        let made = match lp.volume_for(&claim, &class, node) {
            Ok(v) => v,
            Err(e) => {
                self.recorder.event(claim.as_ref(), WARNING, "ProvisioningFailed", format!("failed to provision volume with StorageClass {class_name:?}: {e}"));
                return Err(e.to_string());
            }
        };
        if let Err(e) = lp.prepare(&made).await {
            self.recorder.event(claim.as_ref(), WARNING, "ProvisioningFailed", format!("failed to provision volume with StorageClass {class_name:?}: {e}"));
            return Err(e.to_string());
        }
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        match api.create(&PostParams::default(), &made).await {
            Err(kube::Error::Api(s)) if s.code != 409 => {
                let e = kube::Error::Api(s);
                self.recorder.event(claim.as_ref(), WARNING, "ProvisioningFailed", format!("failed to provision volume with StorageClass {class_name:?}: {e}"));
                Err(err("creating the volume", e))
            }
            Ok(_) | Err(kube::Error::Api(_)) => {
                tracing::info!(volume = %volume_name, claim = %claim_label(&claim), "provisioned");
                self.recorder.event(claim.as_ref(), NORMAL, "ProvisioningSucceeded", format!("Successfully provisioned volume {volume_name}"));
                Ok(())
            }
            Err(e) => {
                self.recorder.event(claim.as_ref(), WARNING, "ProvisioningFailed", format!("failed to provision volume with StorageClass {class_name:?}: {e}"));
                Err(err("creating the volume", e))
            }
        }
    }

    /// The claim's storage-provisioner annotations (both spellings), as upstream sets them.
    async fn set_claim_provisioner(&self, claim: &Arc<PersistentVolumeClaim>, provisioner: &str) -> Result<Arc<PersistentVolumeClaim>, String> {
        let set = |k| annotation(&claim.metadata, k) == Some(provisioner);
        if set(ANN_STORAGE_PROVISIONER) && set(ANN_BETA_STORAGE_PROVISIONER) {
            return Ok(claim.clone());
        }
        let mut c = (**claim).clone();
        set_annotation(&mut c.metadata, ANN_STORAGE_PROVISIONER, provisioner);
        set_annotation(&mut c.metadata, ANN_BETA_STORAGE_PROVISIONER, provisioner);
        self.replace_claim(&c).await.map(Arc::new)
    }

    // ---- binding ----

    /// Binds `volume` and `claim` both ways; each write only when something differs.
    async fn bind(&self, volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> Result<(), String> {
        let volume = self.bind_volume_to_claim(volume, claim).await?;
        let volume = self.set_volume_phase(&volume, "Bound", None).await?;
        let claim = self.bind_claim_to_volume(claim, &volume).await?;
        self.update_claim_status_bound(&claim, &volume).await
    }

    async fn bind_volume_to_claim(&self, volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> Result<PersistentVolume, String> {
        let current = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let complete =
            current.is_some_and(|r| r.uid.is_some() && r.uid == claim.metadata.uid && r.namespace == claim.metadata.namespace && r.name == claim.metadata.name);
        if complete {
            return Ok(volume.clone());
        }
        let mut v = volume.clone();
        let by_controller = !matching::bound_to_claim(volume, claim);
        v.spec.get_or_insert_with(Default::default).claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            ..Default::default()
        });
        if by_controller {
            set_annotation(&mut v.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        api.replace(v.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &v).await.map_err(|e| err("binding the volume", e))
    }

    async fn set_volume_phase(&self, volume: &PersistentVolume, phase: &str, message: Option<&str>) -> Result<PersistentVolume, String> {
        if volume_phase(volume) == phase {
            return Ok(volume.clone());
        }
        let mut v = volume.clone();
        let status = v.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.into());
        status.message = message.map(String::from);
        status.reason = None;
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        api.replace_status(v.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &v).await.map_err(|e| err("updating the volume's phase", e))
    }

    async fn bind_claim_to_volume(&self, claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> Result<PersistentVolumeClaim, String> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let mut c = claim.clone();
        let spec = c.spec.get_or_insert_with(Default::default);
        let mut changed = false;
        if spec.volume_name.as_deref() != Some(name.as_str()) {
            spec.volume_name = Some(name);
            set_annotation(&mut c.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
            changed = true;
        }
        if annotation(&c.metadata, ANN_BIND_COMPLETED) != Some("yes") {
            set_annotation(&mut c.metadata, ANN_BIND_COMPLETED, "yes");
            changed = true;
        }
        if !changed {
            return Ok(c);
        }
        self.replace_claim(&c).await
    }

    async fn update_claim_status_bound(&self, claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> Result<(), String> {
        let spec = volume.spec.clone().unwrap_or_default();
        let status = claim.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some("Bound") && status.access_modes == spec.access_modes && status.capacity == spec.capacity {
            return Ok(());
        }
        let mut c = claim.clone();
        let s = c.status.get_or_insert_with(Default::default);
        s.phase = Some("Bound".into());
        s.access_modes = spec.access_modes;
        s.capacity = spec.capacity;
        self.replace_claim_status(&c).await?;
        tracing::info!(claim = %claim_label(claim), volume = %volume.metadata.name.as_deref().unwrap_or(""), "bound");
        Ok(())
    }

    async fn replace_claim(&self, c: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim, String> {
        let api: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(self.client.clone(), c.metadata.namespace.as_deref().unwrap_or(""));
        api.replace(c.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), c).await.map_err(|e| err("updating the claim", e))
    }

    async fn replace_claim_status(&self, c: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim, String> {
        let api: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(self.client.clone(), c.metadata.namespace.as_deref().unwrap_or(""));
        api.replace_status(c.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), c).await.map_err(|e| err("updating the claim's status", e))
    }

    // ---- volumes ----

    async fn sync_volume(&self, name: &str) -> Result<(), String> {
        let Some(v) = self.volumes.get("", name) else { return Ok(()) };
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            return self.set_volume_phase(&v, "Available", None).await.map(|_| ());
        };
        let uid = r.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            // pre-bound to a claim that has not bound yet
            return self.set_volume_phase(&v, "Available", None).await.map(|_| ());
        }
        let (ns, claim_name) = (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default());
        let mut claim = self.claims.get(&ns, &claim_name);
        if claim.is_none() && !matches!(volume_phase(&v), "Released" | "Failed") {
            // the informer may lag behind a claim just made: ask the API before releasing
            let api: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(self.client.clone(), &ns);
            claim = api.get_opt(&claim_name).await.map_err(|e| err("reading the claim", e))?.map(Arc::new);
        }
        match claim {
            Some(c) if c.metadata.uid.as_deref() == Some(uid.as_str()) => {
                let claim_volume = c.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
                if claim_volume.is_empty() {
                    // the claim's side of the binding is the claim sync's
                    self.claim_queue.add((ns, claim_name));
                    Ok(())
                } else if claim_volume == name {
                    self.set_volume_phase(&v, "Bound", None).await.map(|_| ())
                } else if annotation(&v.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
                    // the claim went to another volume: give this one back
                    let mut free = (*v).clone();
                    if let Some(s) = free.spec.as_mut() {
                        s.claim_ref = None;
                    }
                    let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
                    let freed = api.replace(name, &PostParams::default(), &free).await.map_err(|e| err("unbinding the volume", e))?;
                    self.set_volume_phase(&freed, "Available", None).await.map(|_| ())
                } else {
                    Ok(())
                }
            }
            _ => self.reclaim(&v).await,
        }
    }

    /// The claim of a bound volume is gone: Released, then the reclaim policy.
    async fn reclaim(&self, v: &Arc<PersistentVolume>) -> Result<(), String> {
        let name = v.metadata.name.clone().unwrap_or_default();
        let v = match volume_phase(v) {
            "Released" | "Failed" => (**v).clone(),
            _ => self.set_volume_phase(v, "Released", None).await?,
        };
        if volume_phase(&v) == "Failed" || v.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        match v.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain") {
            "Retain" => Ok(()),
            "Delete" => self.delete_volume(&v, &name).await,
            other => {
                let message = format!("reclaim policy {other} is not supported by Berth");
                self.recorder.event(&v, WARNING, "VolumeFailedRecycle", message.clone());
                self.set_volume_phase(&v, "Failed", Some(&message)).await.map(|_| ())
            }
        }
    }

    async fn delete_volume(&self, v: &PersistentVolume, name: &str) -> Result<(), String> {
        let provisioned_by = annotation(&v.metadata, ANN_PROVISIONED_BY).unwrap_or("");
        match self.local_path.as_ref().filter(|_| provisioned_by == local_path::PROVISIONER) {
            Some(lp) => match lp.remove(v).await {
                Ok(Removal::Removed(path)) => tracing::info!(volume = %name, path = %path.display(), "removed the volume's directory"),
                Ok(Removal::OnNode { node, path }) => {
                    let removed = match lp.helper_pod(v) {
                        Ok(pod) => self.remove_on_node(v, name, pod).await?,
                        Err(e) => return self.fail_delete(v, e).await,
                    };
                    if !removed {
                        return Ok(()); // the helper pod brings the volume back when it is done
                    }
                    tracing::info!(volume = %name, %node, path = %path.display(), "a helper pod removed the volume's directory on its node");
                }
                Err(e) => return self.fail_delete(v, e).await,
            },
            None if !provisioned_by.is_empty() => return Ok(()), // its external provisioner deletes it
            None => {
                let message = format!("error getting deleter volume plugin for volume {name:?}: no deletable volume plugin matched");
                self.recorder.event(v, WARNING, "VolumeFailedDelete", message.clone());
                return self.set_volume_phase(v, "Failed", Some(&message)).await.map(|_| ());
            }
        }
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Err(kube::Error::Api(s)) if s.code != 404 => Err(err("deleting the volume", kube::Error::Api(s))),
            Ok(_) | Err(kube::Error::Api(_)) => {
                tracing::info!(volume = %name, "deleted the released volume");
                Ok(())
            }
            Err(e) => Err(err("deleting the volume", e)),
        }
    }

    /// A volume this provisioner will not delete (not its directory, no node): Failed.
    async fn fail_delete(&self, v: &PersistentVolume, e: DeleteError) -> Result<(), String> {
        self.recorder.event(v, WARNING, "VolumeFailedDelete", e.to_string());
        self.set_volume_phase(v, "Failed", Some(&e.to_string())).await.map(|_| ())
    }

    /// One step of removing a volume's directory with the helper pod `wanted` on its node: the
    /// pod is made when missing (or replaced when one of its name does other work), looked at
    /// again when it finishes or at its deadline; true once it succeeded (and is deleted). A
    /// failed or late pod is deleted and the attempt fails (VolumeFailedDelete), to be retried.
    async fn remove_on_node(&self, v: &PersistentVolume, name: &str, wanted: Pod) -> Result<bool, String> {
        let pod_name = wanted.metadata.name.clone().unwrap_or_default();
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), helper_pod::NAMESPACE);
        let current = pods.get_opt(&pod_name).await.map_err(|e| err("reading the helper pod", e))?;
        match helper_pod::outcome(current.as_ref(), &wanted, k8s_openapi::jiff::Timestamp::now(), helper_pod::TIMEOUT) {
            Outcome::Missing => {
                match pods.create(&PostParams::default(), &wanted).await {
                    Ok(_) => tracing::info!(volume = %name, pod = %pod_name, namespace = helper_pod::NAMESPACE, "created the helper pod"),
                    // made meanwhile (an earlier attempt): the next look decides
                    Err(kube::Error::Api(s)) if s.code == 409 => self.volume_queue.add_after(name.to_string(), HELPER_RECHECK),
                    Err(e) => return Err(err("creating the helper pod", e)),
                }
                self.volume_queue.add_after(name.to_string(), helper_pod::TIMEOUT);
                Ok(false)
            }
            Outcome::Terminating => {
                self.volume_queue.add_after(name.to_string(), HELPER_RECHECK);
                Ok(false)
            }
            Outcome::Stale => {
                tracing::info!(volume = %name, pod = %pod_name, "replacing a helper pod of an earlier attempt that does other work");
                self.delete_helper_pod(&pods, &pod_name).await?;
                self.volume_queue.add_after(name.to_string(), HELPER_RECHECK);
                Ok(false)
            }
            Outcome::Running(left) => {
                self.volume_queue.add_after(name.to_string(), left);
                Ok(false)
            }
            Outcome::Succeeded => {
                self.delete_helper_pod(&pods, &pod_name).await?;
                Ok(true)
            }
            Outcome::Failed(why) => {
                let message = format!("failed to delete volume {name}: {why}");
                self.recorder.event(v, WARNING, "VolumeFailedDelete", message.clone());
                if let Err(e) = self.delete_helper_pod(&pods, &pod_name).await {
                    tracing::warn!(volume = %name, pod = %pod_name, error = %e, "deleting the failed helper pod");
                }
                Err(message)
            }
        }
    }

    async fn delete_helper_pod(&self, pods: &kube::Api<Pod>, pod_name: &str) -> Result<(), String> {
        match pods.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(err("deleting the helper pod", e)),
        }
    }
}
