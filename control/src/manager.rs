//! The workload controllers of the controller manager, on shared informers: one watch each of
//! pods, ReplicaSets, ReplicationControllers, Deployments, Nodes and Services feeds every
//! controller that reads them (the HorizontalPodAutoscaler controller reads the pods too); beside them the namespace controller (its own namespace informer) and the garbage
//! collector (its own watches of every resource). Informers watch as the controller manager; each controller writes as its own
//! kube-system service account (upstream's --use-service-account-credentials).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use tokio_util::sync::CancellationToken;

use crate::informer::Informer;
use crate::selection::Selection;
use crate::volume::local_path::LocalPath;
use crate::{
    cronjob, daemonset, deployment, disruption, endpoints, endpointslice, garbagecollector, job, namespace, podautoscaler, podgc, replicaset, servicelb,
    statefulset, volume,
};

/// Settings of the workload controllers (kube-controller-manager's flags of the same names).
#[derive(Debug, Clone)]
pub struct Options {
    /// --terminated-pod-gc-threshold: finished pods kept before the oldest are deleted (0: all).
    pub terminated_pod_gc_threshold: usize,
    /// The local-path provisioner the PV binder runs (None: claims of its class wait for an
    /// external one).
    pub local_path: Option<LocalPath>,
    /// --max-endpoints-per-slice: most endpoints the EndpointSlice controller puts in a slice.
    pub max_endpoints_per_slice: usize,
    /// The --horizontal-pod-autoscaler-* flags.
    pub autoscaler: podautoscaler::Options,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            terminated_pod_gc_threshold: 12_500,
            local_path: None,
            max_endpoints_per_slice: endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            autoscaler: Default::default(),
        }
    }
}

/// Runs the workload controllers, the namespace controller and the garbage collector until
/// `stop`. `client_for(name)` is the client of the controller's service account `name`.
pub async fn run_workloads(
    informers: kube::Client,
    client_for: impl Fn(&str) -> kube::Client,
    selection: &Selection,
    options: &Options,
    stop: CancellationToken,
) {
    let on = |name: &str| selection.enabled(name);
    let housekeeping = async {
        if on("namespace") {
            let namespaces: Arc<Informer<Namespace>> = Informer::new();
            let nsc = namespace::Controller::new(client_for("namespace-controller"), namespaces.clone());
            tokio::join!(namespaces.run(kube::Api::all(informers.clone()), stop.clone()), nsc.run(stop.clone()));
        }
    };
    let collector = async {
        if on("garbagecollector") {
            garbagecollector::Collector::new(client_for("generic-garbage-collector")).run(stop.clone()).await;
        }
    };
    let workloads = run_workload_controllers(informers.clone(), &client_for, selection, options, stop.clone());
    tokio::join!(housekeeping, collector, workloads);
}

async fn run_workload_controllers(
    informers: kube::Client,
    client_for: &impl Fn(&str) -> kube::Client,
    selection: &Selection,
    options: &Options,
    stop: CancellationToken,
) {
    let on = |name: &str| selection.enabled(name);
    if ![
        "replicaset",
        "replicationcontroller",
        "deployment",
        "job",
        "ttl-after-finished",
        "cronjob",
        "daemonset",
        "disruption",
        "podgc",
        "statefulset",
        "persistentvolume-binder",
        "endpoint",
        "endpointslice",
        "service-lb",
        "horizontalpodautoscaling",
    ]
    .iter()
    .any(|c| on(c))
    {
        return;
    }
    let pods: Arc<Informer<Pod>> = Informer::new();
    let replicasets: Arc<Informer<ReplicaSet>> = Informer::new();
    let controllers: Arc<Informer<ReplicationController>> = Informer::new();
    let deployments: Arc<Informer<Deployment>> = Informer::new();
    let rs = replicaset::Controller::new(client_for("replicaset-controller"), replicasets.clone(), pods.clone(), "replicaset-controller");
    let rc = replicaset::Controller::new(client_for("replication-controller"), controllers.clone(), pods.clone(), "replication-controller");
    let dc = deployment::Controller::new(client_for("deployment-controller"), deployments.clone(), replicasets.clone(), pods.clone());
    let jobs: Arc<Informer<Job>> = Informer::new();
    let jc = job::Controller::new(client_for("job-controller"), jobs.clone(), pods.clone());
    let ttl = job::ttl::Controller::new(client_for("ttl-after-finished-controller"), jobs.clone());
    let cronjobs: Arc<Informer<CronJob>> = Informer::new();
    let cjc = cronjob::Controller::new(client_for("cronjob-controller"), cronjobs.clone(), jobs.clone());
    let daemonsets: Arc<Informer<DaemonSet>> = Informer::new();
    let nodes: Arc<Informer<Node>> = Informer::new();
    let revisions: Arc<Informer<ControllerRevision>> = Informer::new();
    let budgets: Arc<Informer<PodDisruptionBudget>> = Informer::new();
    let pdbc = disruption::Controller::new(
        client_for("disruption-controller"),
        budgets.clone(),
        pods.clone(),
        replicasets.clone(),
        deployments.clone(),
        controllers.clone(),
    );
    let gc = podgc::Collector::new(client_for("pod-garbage-collector"), pods.clone(), nodes.clone(), options.terminated_pod_gc_threshold);
    let dsc = daemonset::Controller::new(client_for("daemon-set-controller"), daemonsets.clone(), pods.clone(), nodes.clone(), revisions.clone());
    let claims: Arc<Informer<PersistentVolumeClaim>> = Informer::new();
    let sets: Arc<Informer<StatefulSet>> = Informer::new();
    let ssc = statefulset::Controller::new(client_for("statefulset-controller"), sets.clone(), pods.clone(), claims.clone(), revisions.clone());
    let volumes: Arc<Informer<PersistentVolume>> = Informer::new();
    let classes: Arc<Informer<StorageClass>> = Informer::new();
    let pvc = volume::binder::Controller::new(
        client_for("persistent-volume-binder"),
        claims.clone(),
        volumes.clone(),
        classes.clone(),
        nodes.clone(),
        pods.clone(),
        options.local_path.clone(),
    );
    let services: Arc<Informer<Service>> = Informer::new();
    let slices: Arc<Informer<EndpointSlice>> = Informer::new();
    let endpoints_objects: Arc<Informer<Endpoints>> = Informer::new();
    let esc = endpointslice::Controller::new(
        client_for("endpointslice-controller"),
        services.clone(),
        pods.clone(),
        nodes.clone(),
        slices.clone(),
        options.max_endpoints_per_slice,
    );
    let epc = endpoints::Controller::new(client_for("endpoint-controller"), services.clone(), pods.clone(), endpoints_objects.clone());
    let lbc = servicelb::Controller::new(client_for("service-controller"), services.clone(), nodes.clone());
    let autoscalers: Arc<Informer<HorizontalPodAutoscaler>> = Informer::new();
    let hpac = podautoscaler::Controller::new(client_for("horizontal-pod-autoscaler"), autoscalers.clone(), pods.clone(), options.autoscaler.clone());
    let binder = on("persistentvolume-binder");
    let maybe = |enabled: bool, work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| async move {
        if enabled {
            work.await
        }
    };
    tokio::join!(
        pods.run(kube::Api::all(informers.clone()), stop.clone()),
        replicasets.run(kube::Api::all(informers.clone()), stop.clone()),
        maybe(on("replicationcontroller") || on("disruption"), Box::pin(controllers.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("deployment") || on("disruption"), Box::pin(deployments.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("disruption"), Box::pin(budgets.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("disruption"), Box::pin(pdbc.run(stop.clone()))),
        maybe(on("replicaset"), Box::pin(rs.run(stop.clone()))),
        maybe(on("replicationcontroller"), Box::pin(rc.run(stop.clone()))),
        maybe(on("deployment"), Box::pin(dc.run(stop.clone()))),
        maybe(on("job") || on("ttl-after-finished") || on("cronjob"), Box::pin(jobs.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("cronjob"), Box::pin(cronjobs.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("cronjob"), Box::pin(cjc.run(stop.clone()))),
        maybe(on("daemonset"), Box::pin(daemonsets.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(binder || on("statefulset"), Box::pin(claims.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(binder, Box::pin(volumes.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(binder, Box::pin(classes.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(binder, Box::pin(pvc.run(stop.clone()))),
        maybe(
            on("daemonset") || on("podgc") || binder || on("endpointslice") || on("service-lb"),
            Box::pin(nodes.run(kube::Api::all(informers.clone()), stop.clone()))
        ),
        maybe(on("endpointslice") || on("endpoint") || on("service-lb"), Box::pin(services.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("service-lb"), Box::pin(lbc.run(stop.clone()))),
        maybe(on("endpointslice"), Box::pin(slices.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("endpointslice"), Box::pin(esc.run(stop.clone()))),
        maybe(on("endpoint"), Box::pin(endpoints_objects.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("endpoint"), Box::pin(epc.run(stop.clone()))),
        maybe(on("podgc"), Box::pin(gc.run(stop.clone()))),
        maybe(on("horizontalpodautoscaling"), Box::pin(autoscalers.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("horizontalpodautoscaling"), Box::pin(hpac.run(stop.clone()))),
        maybe(on("daemonset") || on("statefulset"), Box::pin(revisions.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("statefulset"), Box::pin(sets.run(kube::Api::all(informers.clone()), stop.clone()))),
        maybe(on("statefulset"), Box::pin(ssc.run(stop.clone()))),
        maybe(on("daemonset"), Box::pin(dsc.run(stop.clone()))),
        maybe(on("job"), Box::pin(jc.run(stop.clone()))),
        maybe(on("ttl-after-finished"), Box::pin(ttl.run(stop))),
    );
}
