//! The horizontal pod autoscaler controller, as kube-controller-manager's
//! (`horizontalpodautoscaling`): every sync period each HorizontalPodAutoscaler (autoscaling/v2;
//! v1 objects are the same objects) reads its target's scale subresource, computes the replicas
//! each metric asks for ([`replicas`], from the resource metrics API through [`source`]), takes
//! the largest, normalizes it ([`behavior`]) and writes the scale when it changes, recording
//! SuccessfulRescale; then writes the status (currentReplicas, desiredReplicas, currentMetrics,
//! lastScaleTime, and the AbleToScale / ScalingActive / ScalingLimited conditions with
//! upstream's reasons and messages). Failures are events and conditions in upstream's words.
//!
//! Object, Pods and External metrics need the custom and external metrics APIs, which this
//! cluster does not serve: such a metric fails as upstream's does without them (ScalingActive
//! False, FailedGetObjectMetric / FailedGetPodsMetric / FailedGetExternalMetric).
//!
//! HPAs are queued a sync period after they change and again a sync period after each pass, as
//! upstream's fixed-interval queue does; errors wait for the next pass.

pub mod behavior;
pub mod replicas;
pub mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_apiserver::selector::LabelSelector;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus,
    MetricTarget, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use crate::informer::{key_of, Informer, ObjectKey};
use crate::recorder::{Recorder, NORMAL, WARNING};
use crate::workqueue::WorkQueue;
use behavior::{Bounds, History};
use replicas::Calculator;

/// kube-controller-manager's flags for the autoscaler.
#[derive(Debug, Clone)]
pub struct Options {
    /// --horizontal-pod-autoscaler-sync-period.
    pub sync_period: Duration,
    /// --horizontal-pod-autoscaler-tolerance.
    pub tolerance: f64,
    /// --horizontal-pod-autoscaler-downscale-stabilization.
    pub downscale_stabilization: Duration,
    /// --horizontal-pod-autoscaler-cpu-initialization-period.
    pub cpu_initialization_period: Duration,
    /// --horizontal-pod-autoscaler-initial-readiness-delay.
    pub initial_readiness_delay: Duration,
    /// --concurrent-horizontal-pod-autoscaler-syncs.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_period: Duration::from_secs(15),
            tolerance: 0.1,
            downscale_stabilization: Duration::from_secs(300),
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
            workers: 5,
        }
    }
}

pub struct Controller {
    client: kube::Client,
    hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    pods: Arc<Informer<Pod>>,
    recorder: Recorder,
    queue: Arc<WorkQueue<ObjectKey>>,
    options: Options,
    calculator: Calculator,
    mapper: source::Mapper,
    /// Recommendations and scale events by HPA.
    histories: Mutex<HashMap<ObjectKey, History>>,
    /// The pod selector of each HPA's target, as last read (None: not read yet).
    selectors: Mutex<HashMap<ObjectKey, Option<LabelSelector>>>,
}

/// Upstream's setCondition: the condition of `type_` set, its transition time moved when its
/// status changes.
fn set_condition(hpa: &mut HorizontalPodAutoscaler, type_: &str, status: &str, reason: &str, message: String) {
    let conditions = hpa.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
    let i = match conditions.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conditions.push(HorizontalPodAutoscalerCondition { type_: type_.into(), ..Default::default() });
            conditions.len() - 1
        }
    };
    let c = &mut conditions[i];
    if c.status != status {
        c.last_transition_time = Some(Time(Timestamp::now()));
    }
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message);
}

/// A metric's failure: its ScalingActive condition (reason, message) and the error.
struct MetricFailure {
    reason: &'static str,
    condition: String,
    error: String,
}

/// What one metric asks for.
struct Proposal {
    replicas: i32,
    metric: String,
    status: MetricStatus,
}

/// Go's `%+v` of an optional label selector (what upstream's external metric errors print).
fn go_selector(s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>) -> String {
    let Some(s) = s else { return "nil".into() };
    let labels: Vec<String> = s.match_labels.iter().flatten().map(|(k, v)| format!("{k}: {v},")).collect();
    let expressions: Vec<String> = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| format!("LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}}", e.key, e.operator, e.values.clone().unwrap_or_default().join(" ")))
        .collect();
    format!("&LabelSelector{{MatchLabels:map[string]string{{{}}},MatchExpressions:[]LabelSelectorRequirement{{{}}},}}", labels.join(""), expressions.join(","))
}

fn milli_quantity(milli: i64) -> Quantity {
    Quantity(berth_names::quantity::Quantity::from_millis(milli).canonical(berth_names::quantity::Format::DecimalSi))
}

fn target_milli(q: Option<&Quantity>) -> Option<i64> {
    q.and_then(|q| berth_names::quantity::Quantity::parse(&q.0).ok()).map(|q| q.milli_value())
}

/// `apiVersion` as group and version ("apps/v1", "v1", "").
fn group_version(api_version: &str) -> Result<(String, String), String> {
    match api_version.split('/').collect::<Vec<_>>().as_slice() {
        [""] => Ok((String::new(), String::new())),
        [v] => Ok((String::new(), v.to_string())),
        [g, v] => Ok((g.to_string(), v.to_string())),
        _ => Err(format!("unexpected GroupVersion string: {api_version}")),
    }
}

fn duration(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl Controller {
    pub fn new(client: kube::Client, hpas: Arc<Informer<HorizontalPodAutoscaler>>, pods: Arc<Informer<Pod>>, options: Options) -> Arc<Self> {
        let calculator = Calculator {
            tolerance: options.tolerance,
            cpu_initialization_period: duration(options.cpu_initialization_period),
            initial_readiness_delay: duration(options.initial_readiness_delay),
        };
        let c = Arc::new(Controller {
            recorder: Recorder::new(client.clone(), "horizontal-pod-autoscaler"),
            client,
            hpas,
            pods,
            queue: WorkQueue::new(),
            options,
            calculator,
            mapper: source::Mapper::default(),
            histories: Mutex::new(HashMap::new()),
            selectors: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&c);
        c.hpas.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let key = key_of(change.object().as_ref());
            if let crate::informer::Change::Deleted(_) = change {
                c.selectors.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                // the next pass finds it gone and forgets its history
            } else {
                c.selectors.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_insert(None);
            }
            c.queue.add_after(key, c.options.sync_period);
        });
        c
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.hpas.synced().await;
        self.pods.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(self.options.workers, stop, move |k| {
                let this = this.clone();
                async move {
                    this.sync(&k).await;
                    Ok(())
                }
            })
            .await;
    }

    /// One pass over one HPA; it comes back after a sync period while it exists.
    async fn sync(&self, key: &ObjectKey) {
        let Some(hpa) = self.hpas.get(&key.0, &key.1) else {
            self.histories.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            return;
        };
        if let Err(e) = self.reconcile(&hpa, key).await {
            tracing::info!(hpa = %format!("{}/{}", key.0, key.1), error = %e, "autoscaling");
        }
        self.queue.add_after(key.clone(), self.options.sync_period);
    }

    fn event(&self, hpa: &HorizontalPodAutoscaler, type_: &str, reason: &str, message: String) {
        self.recorder.event(hpa, type_, reason, message);
    }

    /// The ScalingActive condition of a metric that could not be read, its event recorded.
    fn unable(&self, hpa: &HorizontalPodAutoscaler, reason: &'static str, err: String, wrapped: String) -> MetricFailure {
        self.event(hpa, WARNING, reason, err.clone());
        MetricFailure { reason, condition: format!("the HPA was unable to compute the replica count: {err}"), error: wrapped }
    }

    async fn write_status(&self, original: &Option<HorizontalPodAutoscalerStatus>, hpa: &HorizontalPodAutoscaler) -> Result<(), String> {
        if *original == hpa.status {
            return Ok(());
        }
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let api: kube::Api<HorizontalPodAutoscaler> = kube::Api::namespaced(self.client.clone(), &ns);
        match api.replace_status(&name, &PostParams::default(), hpa).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let m = source::message(&e);
                self.event(hpa, WARNING, "FailedUpdateStatus", m.clone());
                Err(format!("failed to update status for {name}: {m}"))
            }
        }
    }

    /// The status with the current replicas and metrics (and desired replicas; lastScaleTime
    /// now when it rescaled), its conditions kept.
    fn set_status(hpa: &mut HorizontalPodAutoscaler, current: i32, desired: i32, metrics: Vec<MetricStatus>, rescaled: bool) {
        let old = hpa.status.clone().unwrap_or_default();
        hpa.status = Some(HorizontalPodAutoscalerStatus {
            current_replicas: Some(current),
            desired_replicas: desired,
            last_scale_time: if rescaled { Some(Time(Timestamp::now())) } else { old.last_scale_time },
            current_metrics: (!metrics.is_empty()).then_some(metrics),
            conditions: old.conditions,
            observed_generation: old.observed_generation,
        });
    }

    async fn reconcile(&self, shared: &HorizontalPodAutoscaler, key: &ObjectKey) -> Result<(), String> {
        let mut hpa = shared.clone();
        let original = hpa.status.clone();
        let spec = hpa.spec.clone().unwrap_or_default();
        let ns = key.0.clone();
        let target = spec.scale_target_ref.clone();
        let reference = format!("{}/{}/{}", target.kind, ns, target.name);
        let api_version = target.api_version.clone().unwrap_or_default();
        let (group, _) = match group_version(&api_version) {
            Ok(gv) => gv,
            Err(e) => {
                self.failed_get_scale(&original, &mut hpa, e.clone()).await;
                return Err(format!("invalid API version in scale target reference: {e}"));
            }
        };
        let resource = match self.mapper.resource(&self.client, &group, &target.kind).await {
            Ok(r) => r,
            Err(e) => {
                self.failed_get_scale(&original, &mut hpa, e.clone()).await;
                return Err(format!("unable to determine resource for scale target reference: {e}"));
            }
        };
        let mut scale = match source::get_scale(&self.client, &resource, &ns, &target.name).await {
            Ok(s) => s,
            Err(e) => {
                self.mapper.forget(&group, &target.kind);
                self.failed_get_scale(&original, &mut hpa, e.clone()).await;
                return Err(format!("failed to query scale subresource for {reference}: {e}"));
            }
        };
        set_condition(&mut hpa, "AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale".into());
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let now = Instant::now();
        behavior::record_initial(self.histories.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default(), current, now);
        let min = spec.min_replicas.unwrap_or(1);
        let mut rescale = true;
        let mut desired;
        let mut reason = String::new();
        let mut statuses = vec![];
        let mut deferred = None;
        if current == 0 && min != 0 {
            desired = 0;
            rescale = false;
            set_condition(&mut hpa, "ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero".into());
        } else if current > spec.max_replicas {
            reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = spec.max_replicas;
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let (proposed, metric, metric_statuses, err) = self.replicas_for_metrics(&mut hpa, &scale, spec.metrics.as_deref().unwrap_or_default()).await;
            statuses = metric_statuses;
            if let (Some(e), None) = (&err, proposed) {
                let previous = hpa.status.as_ref().map(|s| s.desired_replicas).unwrap_or(0);
                Self::set_status(&mut hpa, current, previous, statuses, false);
                if let Err(e) = self.write_status(&original, &hpa).await {
                    tracing::info!(error = %e, "autoscaler status");
                }
                self.event(&hpa, WARNING, "FailedComputeMetricsReplicas", e.clone());
                return Err(format!("failed to compute desired number of replicas based on listed metrics for {reference}: {e}"));
            }
            deferred = err;
            desired = proposed.unwrap_or(0).max(0);
            if desired > current {
                reason = format!("{metric} above target");
            }
            if desired < current {
                reason = "All metrics below target".into();
            }
            let bounds = Bounds { current, desired, min, max: spec.max_replicas };
            let normalized = {
                let mut histories = self.histories.lock().unwrap_or_else(|e| e.into_inner());
                let history = histories.entry(key.clone()).or_default();
                match &spec.behavior {
                    None => behavior::without_behavior(history, self.options.downscale_stabilization, bounds, now),
                    Some(b) => behavior::with_behavior(history, &self.behavior_of(b), bounds, now),
                }
            };
            set_condition(&mut hpa, "AbleToScale", "True", normalized.able.0, normalized.able.1.into());
            let (limited, why, message) = normalized.limited;
            set_condition(&mut hpa, "ScalingLimited", if limited { "True" } else { "False" }, why, message.into());
            desired = normalized.replicas;
            rescale = desired != current;
        }
        if rescale {
            scale.spec.get_or_insert_with(Default::default).replicas = Some(desired);
            if let Err(e) = source::update_scale(&self.client, &resource, &ns, &scale).await {
                self.event(&hpa, WARNING, "FailedRescale", format!("New size: {desired}; reason: {reason}; error: {e}"));
                set_condition(&mut hpa, "AbleToScale", "False", "FailedUpdateScale", format!("the HPA controller was unable to update the target scale: {e}"));
                let previous = hpa.status.as_ref().map(|s| s.desired_replicas).unwrap_or(0);
                Self::set_status(&mut hpa, current, previous, statuses, false);
                if let Err(e) = self.write_status(&original, &hpa).await {
                    tracing::info!(error = %e, "autoscaler status");
                }
                return Err(format!("failed to rescale {reference}: {e}"));
            }
            set_condition(&mut hpa, "AbleToScale", "True", "SucceededRescale", format!("the HPA controller was able to update the target scale to {desired}"));
            self.event(&hpa, NORMAL, "SuccessfulRescale", format!("New size: {desired}; reason: {reason}"));
            let behavior = spec.behavior.as_ref().map(|b| self.behavior_of(b));
            behavior::record_scale(
                self.histories.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default(),
                behavior.as_ref(),
                current,
                desired,
                now,
            );
            tracing::info!(hpa = %format!("{}/{}", key.0, key.1), current, desired, %reason, "successfully rescaled");
        } else {
            desired = current;
        }
        Self::set_status(&mut hpa, current, desired, statuses, rescale);
        self.write_status(&original, &hpa).await?;
        match deferred {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The target's scale could not be read: AbleToScale False, an event, the status written.
    async fn failed_get_scale(&self, original: &Option<HorizontalPodAutoscalerStatus>, hpa: &mut HorizontalPodAutoscaler, err: String) {
        self.event(hpa, WARNING, "FailedGetScale", err.clone());
        set_condition(hpa, "AbleToScale", "False", "FailedGetScale", format!("the HPA controller was unable to get the target's current scale: {err}"));
        if let Err(e) = self.write_status(original, hpa).await {
            tracing::info!(error = %e, "autoscaler status");
        }
    }

    /// A behavior with upstream's defaults and the controller's scale-down window.
    fn behavior_of(
        &self,
        b: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior,
    ) -> k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior {
        let mut b = behavior::defaulted(b);
        if let Some(down) = b.scale_down.as_mut() {
            down.stabilization_window_seconds.get_or_insert(i32::try_from(self.options.downscale_stabilization.as_secs()).unwrap_or(i32::MAX));
        }
        b
    }

    /// The pods of the target's scale selector, checked as upstream checks it (present, valid,
    /// not shared with another HPA's pods); on failure ScalingActive is False.
    fn selected_pods(&self, hpa: &mut HorizontalPodAutoscaler, selector: &str) -> Result<(LabelSelector, Vec<Arc<Pod>>), String> {
        if selector.is_empty() {
            let m = "selector is required".to_string();
            self.event(hpa, WARNING, "SelectorRequired", m.clone());
            set_condition(hpa, "ScalingActive", "False", "InvalidSelector", "the HPA target's scale is missing a selector".into());
            return Err(m);
        }
        let parsed = match LabelSelector::parse(selector) {
            Ok(s) => s,
            Err(e) => {
                let m = format!("couldn't convert selector into a corresponding internal selector object: {e}");
                self.event(hpa, WARNING, "InvalidSelector", m.clone());
                set_condition(hpa, "ScalingActive", "False", "InvalidSelector", m.clone());
                return Err(m);
            }
        };
        let key = key_of(&*hpa);
        let ns = key.0.clone();
        let pods: Vec<Arc<Pod>> =
            self.pods.list_namespace(&ns).into_iter().filter(|p| parsed.matches(&p.metadata.labels.clone().unwrap_or_default())).collect();
        let mut controlling: Vec<String> = {
            let mut selectors = self.selectors.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = selectors.get_mut(&key) {
                *s = Some(parsed.clone());
            }
            selectors
                .iter()
                .filter(|((other_ns, _), s)| {
                    *other_ns == ns && s.as_ref().is_some_and(|s| pods.iter().any(|p| s.matches(&p.metadata.labels.clone().unwrap_or_default())))
                })
                .map(|((n, name), _)| format!("{n}/{name}"))
                .collect()
        };
        if controlling.len() > 1 {
            controlling.sort();
            let m = format!("pods by selector {selector} are controlled by multiple HPAs: [{}]", controlling.join(" "));
            self.event(hpa, WARNING, "AmbiguousSelector", m.clone());
            set_condition(hpa, "ScalingActive", "False", "AmbiguousSelector", m.clone());
            return Err(m);
        }
        Ok((parsed, pods))
    }

    /// The largest proposal of the metrics (None: none could be computed, or some failed and
    /// the others would scale down), the metric behind it, the metric statuses and the first
    /// error.
    async fn replicas_for_metrics(
        &self,
        hpa: &mut HorizontalPodAutoscaler,
        scale: &Scale,
        specs: &[MetricSpec],
    ) -> (Option<i32>, String, Vec<MetricStatus>, Option<String>) {
        let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        let pods = match self.selected_pods(hpa, &selector) {
            Ok((_, pods)) => pods,
            Err(e) => return (None, String::new(), vec![], Some(e)),
        };
        let spec_replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut statuses = vec![MetricStatus::default(); specs.len()];
        let (mut replicas, mut metric) = (0, String::new());
        let (mut invalid, mut first): (usize, Option<MetricFailure>) = (0, None);
        for (i, spec) in specs.iter().enumerate() {
            match self.replicas_for_metric(hpa, spec, spec_replicas, &selector, &pods).await {
                Ok(p) => {
                    statuses[i] = p.status;
                    if replicas == 0 || p.replicas > replicas {
                        replicas = p.replicas;
                        metric = p.metric;
                    }
                }
                Err(f) => {
                    invalid += 1;
                    first.get_or_insert(f);
                }
            }
        }
        let error = first.as_ref().map(|f| format!("invalid metrics ({invalid} invalid out of {}), first error is: {}", specs.len(), f.error));
        if invalid >= specs.len() || (invalid > 0 && replicas < spec_replicas) {
            if let Some(f) = first {
                set_condition(hpa, "ScalingActive", "False", f.reason, f.condition);
            }
            return (None, String::new(), statuses, error);
        }
        set_condition(hpa, "ScalingActive", "True", "ValidMetricFound", format!("the HPA was able to successfully calculate a replica count from {metric}"));
        (Some(replicas), metric, statuses, error)
    }

    async fn replicas_for_metric(
        &self,
        hpa: &HorizontalPodAutoscaler,
        spec: &MetricSpec,
        spec_replicas: i32,
        selector: &str,
        pods: &[Arc<Pod>],
    ) -> Result<Proposal, MetricFailure> {
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        match spec.type_.as_str() {
            "Resource" | "ContainerResource" => {
                let (name, container, target) = match (&spec.resource, &spec.container_resource) {
                    (Some(r), _) if spec.type_ == "Resource" => (r.name.clone(), None, r.target.clone()),
                    (_, Some(c)) if spec.type_ == "ContainerResource" => (c.name.clone(), Some(c.container.clone()), c.target.clone()),
                    _ => return Err(self.unable(hpa, "InvalidMetricSourceType", "invalid metric source".into(), "invalid metric source".into())),
                };
                let (reason, wrapped) = match &container {
                    None => ("FailedGetResourceMetric", format!("failed to get {name} resource metric value")),
                    Some(c) => ("FailedGetContainerResourceMetric", format!("failed to get {c} container metric value")),
                };
                let (replicas, current, metric) = self
                    .resource_replicas(spec_replicas, &target, &name, &ns, container.as_deref(), selector, pods)
                    .await
                    .map_err(|e| self.unable(hpa, reason, e.clone(), format!("{wrapped}: {e}")))?;
                let status = match container {
                    None => MetricStatus { type_: "Resource".into(), resource: Some(ResourceMetricStatus { name, current }), ..Default::default() },
                    Some(container) => MetricStatus {
                        type_: "ContainerResource".into(),
                        container_resource: Some(ContainerResourceMetricStatus { name, container, current }),
                        ..Default::default()
                    },
                };
                Ok(Proposal { replicas, metric, status })
            }
            // the custom metrics API is not served
            "Pods" => {
                let name = spec.pods.as_ref().map(|p| p.metric.name.clone()).unwrap_or_default();
                let e = format!(
                    "unable to get metric {name}: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
                );
                Err(self.unable(hpa, "FailedGetPodsMetric", e.clone(), format!("failed to get pods metric value: {e}")))
            }
            "Object" => {
                let o = spec.object.clone().unwrap_or_default();
                let e = if o.target.value.is_some() || o.target.average_value.is_some() {
                    format!(
                        "unable to get metric {}: {} on {ns} {}/unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered",
                        o.metric.name, o.described_object.kind, o.described_object.name
                    )
                } else {
                    "invalid object metric source: neither a value target nor an average value target was set".into()
                };
                Err(self.unable(hpa, "FailedGetObjectMetric", e.clone(), format!("failed to get object metric value: {e}")))
            }
            "External" => {
                let x = spec.external.clone().unwrap_or_default();
                let name = x.metric.name.clone();
                let api_err = format!(
                    "unable to get external metric {ns}/{name}/{}: unable to fetch metrics from external metrics API: the server could not find the requested resource (get {name}.external.metrics.k8s.io)",
                    go_selector(x.metric.selector.as_ref())
                );
                let (e, wrapped) = if x.target.average_value.is_some() {
                    let e = format!("failed to get {name} external metric: {api_err}");
                    (api_err, e)
                } else if x.target.value.is_some() {
                    let e = format!("failed to get external metric {name}: {api_err}");
                    (api_err, e)
                } else {
                    let m = "invalid external metric source: neither a value target nor an average value target was set".to_string();
                    (m.clone(), m)
                };
                Err(self.unable(hpa, "FailedGetExternalMetric", e, format!("failed to get {name} external metric value: {wrapped}")))
            }
            other => {
                let e = format!("unknown metric source type \"{other}\"");
                Err(self.unable(hpa, "InvalidMetricSourceType", e.clone(), e))
            }
        }
    }

    /// A Resource or ContainerResource metric: (replicas, current value, metric description).
    #[allow(clippy::too_many_arguments)]
    async fn resource_replicas(
        &self,
        current: i32,
        target: &MetricTarget,
        resource: &str,
        ns: &str,
        container: Option<&str>,
        selector: &str,
        pods: &[Arc<Pod>],
    ) -> Result<(i32, MetricValueStatus, String), String> {
        let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let cpu = resource == "cpu";
        if let Some(avg) = target_milli(target.average_value.as_ref()) {
            let (metrics, _) = source::resource_metrics(&self.client, ns, selector, resource, container)
                .await
                .map_err(|e| format!("failed to get {resource} usage: unable to get metrics for resource {resource}: {e}"))?;
            let got = self
                .calculator
                .average_value_replicas(current, avg, cpu, &refs, metrics, Timestamp::now())
                .map_err(|e| format!("failed to get {resource} usage: {e}"))?;
            let status = MetricValueStatus { average_value: Some(milli_quantity(got.usage)), ..Default::default() };
            return Ok((got.replicas, status, format!("{resource} resource")));
        }
        let Some(utilization) = target.average_utilization else {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
        };
        let (metrics, _) = source::resource_metrics(&self.client, ns, selector, resource, container)
            .await
            .map_err(|e| format!("failed to get {resource} utilization: unable to get metrics for resource {resource}: {e}"))?;
        let requests = replicas::requests(&refs, container, resource);
        let got = self
            .calculator
            .utilization_replicas(current, utilization, cpu, &refs, metrics, requests, Timestamp::now())
            .map_err(|e| format!("failed to get {resource} utilization: {e}"))?;
        let status = MetricValueStatus { average_utilization: Some(got.utilization), average_value: Some(milli_quantity(got.raw)), ..Default::default() };
        let what = if container.is_some() { "container resource" } else { "resource" };
        Ok((got.replicas, status, format!("{resource} {what} utilization (percentage of request)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_move_their_transition_time_only_on_a_status_change() {
        let mut hpa = HorizontalPodAutoscaler::default();
        set_condition(&mut hpa, "AbleToScale", "True", "SucceededGetScale", "a".into());
        let first = hpa.status.as_ref().and_then(|s| s.conditions.as_ref()).map(|c| c[0].last_transition_time.clone());
        set_condition(&mut hpa, "ScalingActive", "False", "FailedGetResourceMetric", "b".into());
        set_condition(&mut hpa, "AbleToScale", "True", "ReadyForNewScale", "c".into());
        let cs = hpa.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        assert_eq!(cs.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["AbleToScale", "ScalingActive"]);
        assert_eq!((cs[0].reason.as_deref(), cs[0].message.as_deref()), (Some("ReadyForNewScale"), Some("c")));
        assert_eq!(Some(cs[0].last_transition_time.clone()), first);
    }

    #[test]
    fn group_versions_and_selectors_print_as_upstream() {
        assert_eq!(group_version("apps/v1"), Ok(("apps".into(), "v1".into())));
        assert_eq!(group_version("v1"), Ok((String::new(), "v1".into())));
        assert_eq!(group_version("a/b/c"), Err("unexpected GroupVersion string: a/b/c".into()));
        assert_eq!(go_selector(None), "nil");
        let s = serde_json::from_value(serde_json::json!({"matchLabels": {"app": "web"}})).expect("selector");
        assert_eq!(go_selector(Some(&s)), "&LabelSelector{MatchLabels:map[string]string{app: web,},MatchExpressions:[]LabelSelectorRequirement{},}");
        assert_eq!(milli_quantity(22).0, "22m");
        assert_eq!(milli_quantity(12_345_678_000).0, "12345678");
    }
}
