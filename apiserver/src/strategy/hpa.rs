//! HorizontalPodAutoscalers (autoscaling/v2): defaults (minReplicas 1, 80% average CPU when no
//! metric is given, the scaling rules of a behavior: [`defaulted_behavior`], which the
//! autoscaler applies too), validation of the replica bounds, the target and the behavior,
//! status cleared on create, and the REFERENCE/TARGETS/MINPODS/MAXPODS/REPLICAS columns.

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, MetricSpec, MetricStatus, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::age;

pub struct HorizontalPodAutoscalers;

/// The longest stabilization window and policy period upstream allows.
const MAX_STABILIZATION_WINDOW_SECONDS: i32 = 3600;
const MAX_PERIOD_SECONDS: i32 = 1800;

/// The default scale-up rules (no stabilization; 4 pods or 100 % per 15 s, whichever is more).
fn default_scale_up() -> HPAScalingRules {
    HPAScalingRules {
        stabilization_window_seconds: Some(0),
        select_policy: Some("Max".into()),
        policies: Some(vec![
            HPAScalingPolicy { type_: "Pods".into(), value: 4, period_seconds: 15 },
            HPAScalingPolicy { type_: "Percent".into(), value: 100, period_seconds: 15 },
        ]),
        ..Default::default()
    }
}

/// The default scale-down rules (100 % per 15 s; no window: the controller's
/// --horizontal-pod-autoscaler-downscale-stabilization applies).
fn default_scale_down() -> HPAScalingRules {
    HPAScalingRules {
        stabilization_window_seconds: None,
        select_policy: Some("Max".into()),
        policies: Some(vec![HPAScalingPolicy { type_: "Percent".into(), value: 100, period_seconds: 15 }]),
        ..Default::default()
    }
}

/// `rules` with the defaults where they say nothing.
fn rules_with_defaults(rules: Option<&HPAScalingRules>, mut defaults: HPAScalingRules) -> HPAScalingRules {
    if let Some(r) = rules {
        if r.select_policy.is_some() {
            defaults.select_policy = r.select_policy.clone();
        }
        if r.stabilization_window_seconds.is_some() {
            defaults.stabilization_window_seconds = r.stabilization_window_seconds;
        }
        if r.policies.is_some() {
            defaults.policies = r.policies.clone();
        }
        if r.tolerance.is_some() {
            defaults.tolerance = r.tolerance.clone();
        }
    }
    defaults
}

/// A behavior with upstream's defaults filled in (SetDefaults_HorizontalPodAutoscalerBehavior).
pub fn defaulted_behavior(b: &HorizontalPodAutoscalerBehavior) -> HorizontalPodAutoscalerBehavior {
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(rules_with_defaults(b.scale_up.as_ref(), default_scale_up())),
        scale_down: Some(rules_with_defaults(b.scale_down.as_ref(), default_scale_down())),
    }
}

fn validate_rules(path: &str, r: &HPAScalingRules) -> Vec<FieldError> {
    let mut errs = vec![];
    if let Some(w) = r.stabilization_window_seconds {
        if w < 0 {
            errs.push(FieldError::invalid(format!("{path}.stabilizationWindowSeconds"), w, "must be greater than or equal to zero"));
        }
        if w > MAX_STABILIZATION_WINDOW_SECONDS {
            errs.push(FieldError::invalid(
                format!("{path}.stabilizationWindowSeconds"),
                w,
                format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"),
            ));
        }
    }
    if let Some(p) = r.select_policy.as_deref() {
        const POLICIES: &[&str] = &["Disabled", "Max", "Min"];
        if !POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(format!("{path}.selectPolicy"), p, POLICIES));
        }
    }
    let policies = r.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        errs.push(FieldError::required(format!("{path}.policies"), "must specify at least one Policy"));
    }
    for (i, p) in policies.iter().enumerate() {
        let at = format!("{path}.policies[{i}]");
        const TYPES: &[&str] = &["Percent", "Pods"];
        if !TYPES.contains(&p.type_.as_str()) {
            errs.push(FieldError::not_supported(format!("{at}.type"), p.type_.as_str(), TYPES));
        }
        if p.value <= 0 {
            errs.push(FieldError::invalid(format!("{at}.value"), p.value, "must be greater than zero"));
        }
        if p.period_seconds <= 0 {
            errs.push(FieldError::invalid(format!("{at}.periodSeconds"), p.period_seconds, "must be greater than zero"));
        }
        if p.period_seconds > MAX_PERIOD_SECONDS {
            errs.push(FieldError::invalid(format!("{at}.periodSeconds"), p.period_seconds, format!("must be less than or equal to {MAX_PERIOD_SECONDS}")));
        }
    }
    errs
}

fn q(q: Option<&Quantity>) -> String {
    q.map(|q| q.0.clone()).unwrap_or_else(|| "<unknown>".into())
}

fn percent(p: Option<i32>, none: &str) -> String {
    p.map(|p| format!("{p}%")).unwrap_or_else(|| none.into())
}

/// One metric as upstream's printer shows it (`cpu: 40%/80%`, `<unknown>/10 (avg)`).
fn metric(spec: &MetricSpec, status: Option<&MetricStatus>) -> String {
    let resource = |name: &str, target: &MetricTarget, current: Option<&k8s_openapi::api::autoscaling::v2::MetricValueStatus>| match &target.average_value {
        Some(t) => format!("{name}: {}/{}", q(current.and_then(|c| c.average_value.as_ref())), t.0),
        None => format!("{name}: {}/{}", percent(current.and_then(|c| c.average_utilization), "<unknown>"), percent(target.average_utilization, "<auto>")),
    };
    match spec.type_.as_str() {
        "Resource" => match &spec.resource {
            Some(r) => resource(&r.name, &r.target, status.and_then(|s| s.resource.as_ref()).map(|r| &r.current)),
            None => "<unknown type>".into(),
        },
        "ContainerResource" => match &spec.container_resource {
            Some(r) => resource(&r.name, &r.target, status.and_then(|s| s.container_resource.as_ref()).map(|r| &r.current)),
            None => "<unknown type>".into(),
        },
        "Pods" => match &spec.pods {
            Some(p) => {
                format!("{}/{}", q(status.and_then(|s| s.pods.as_ref()).and_then(|p| p.current.average_value.as_ref())), q(p.target.average_value.as_ref()))
            }
            None => "<unknown type>".into(),
        },
        "Object" | "External" => {
            let (target, current) = if spec.type_ == "Object" {
                (spec.object.as_ref().map(|o| &o.target), status.and_then(|s| s.object.as_ref()).map(|o| &o.current))
            } else {
                (spec.external.as_ref().map(|o| &o.target), status.and_then(|s| s.external.as_ref()).map(|o| &o.current))
            };
            match target.and_then(|t| t.average_value.as_ref()) {
                Some(avg) => format!("{}/{} (avg)", q(current.and_then(|c| c.average_value.as_ref())), avg.0),
                None => format!("{}/{}", q(current.and_then(|c| c.value.as_ref())), q(target.and_then(|t| t.value.as_ref()))),
            }
        }
        _ => "<unknown type>".into(),
    }
}

fn metrics(specs: &[MetricSpec], statuses: &[MetricStatus]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let list: Vec<String> = specs.iter().enumerate().map(|(i, s)| metric(s, statuses.get(i))).collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

impl Kind for HorizontalPodAutoscalers {
    type Object = HorizontalPodAutoscaler;

    fn default(&self, h: &mut HorizontalPodAutoscaler) {
        let spec = h.spec.get_or_insert_with(Default::default);
        spec.min_replicas.get_or_insert(1);
        if spec.metrics.as_ref().is_none_or(|m| m.is_empty()) {
            spec.metrics = Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget { type_: "Utilization".into(), average_utilization: Some(80), ..Default::default() },
                }),
                ..Default::default()
            }]);
        }
        if let Some(b) = spec.behavior.as_ref() {
            spec.behavior = Some(defaulted_behavior(b));
        }
    }

    fn prepare_for_create(&self, h: &mut HorizontalPodAutoscaler) {
        h.status = Some(Default::default());
    }

    fn validate(&self, h: &HorizontalPodAutoscaler) -> Vec<FieldError> {
        let Some(spec) = &h.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = vec![];
        let min = spec.min_replicas.unwrap_or(1);
        if min < 1 {
            errs.push(FieldError::invalid("spec.minReplicas", min, "must be greater than or equal to 1"));
        }
        if spec.max_replicas < 1 {
            errs.push(FieldError::invalid("spec.maxReplicas", spec.max_replicas, "must be greater than or equal to 1"));
        }
        if spec.max_replicas < min {
            errs.push(FieldError::invalid("spec.maxReplicas", spec.max_replicas, "must be greater than or equal to `minReplicas`"));
        }
        let r = &spec.scale_target_ref;
        if r.kind.is_empty() {
            errs.push(FieldError::required("spec.scaleTargetRef.kind", ""));
        }
        if r.name.is_empty() {
            errs.push(FieldError::required("spec.scaleTargetRef.name", ""));
        }
        const TYPES: &[&str] = &["ContainerResource", "External", "Object", "Pods", "Resource"];
        for (i, m) in spec.metrics.iter().flatten().enumerate() {
            if !TYPES.contains(&m.type_.as_str()) {
                errs.push(FieldError::not_supported(format!("spec.metrics[{i}].type"), m.type_.as_str(), TYPES));
            }
        }
        if let Some(b) = &spec.behavior {
            for (name, rules) in [("scaleUp", &b.scale_up), ("scaleDown", &b.scale_down)] {
                if let Some(r) = rules {
                    errs.extend(validate_rules(&format!("spec.behavior.{name}"), r));
                }
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Reference", "string", "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource."),
            col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count."),
            col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
            col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
            col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
            AGE_COLUMN,
        ]
    }

    fn cells(&self, h: &HorizontalPodAutoscaler, now: Timestamp) -> Vec<Value> {
        let spec = h.spec.clone().unwrap_or_default();
        let st = h.status.clone().unwrap_or_default();
        vec![
            json!(h.metadata.name.clone().unwrap_or_default()),
            json!(format!("{}/{}", spec.scale_target_ref.kind, spec.scale_target_ref.name)),
            json!(metrics(spec.metrics.as_deref().unwrap_or_default(), st.current_metrics.as_deref().unwrap_or_default())),
            json!(spec.min_replicas.map(|m| m.to_string()).unwrap_or_else(|| "<unset>".into())),
            json!(spec.max_replicas),
            json!(st.current_replicas.unwrap_or(0)),
            json!(age(h.metadata.creation_timestamp.as_ref(), now)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_behavior_gets_upstreams_defaults_and_is_validated() {
        let mut h: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}
        }))
        .expect("hpa");
        HorizontalPodAutoscalers.default(&mut h);
        let b = h.spec.as_ref().and_then(|s| s.behavior.clone()).expect("behavior");
        let up = b.scale_up.expect("scale up");
        assert_eq!((up.stabilization_window_seconds, up.select_policy.as_deref(), up.policies.map(|p| p.len())), (Some(0), Some("Max"), Some(2)));
        let down = b.scale_down.expect("scale down");
        assert_eq!((down.stabilization_window_seconds, down.policies.map(|p| p[0].value)), (Some(5), Some(100)));
        assert!(HorizontalPodAutoscalers.validate(&h).is_empty());
        let bad = HPAScalingRules {
            stabilization_window_seconds: Some(4000),
            select_policy: Some("Most".into()),
            policies: Some(vec![HPAScalingPolicy { type_: "Pods".into(), value: 0, period_seconds: 1801 }]),
            ..Default::default()
        };
        let fields: Vec<String> = validate_rules("spec.behavior.scaleUp", &bad).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
                "spec.behavior.scaleUp.selectPolicy",
                "spec.behavior.scaleUp.policies[0].value",
                "spec.behavior.scaleUp.policies[0].periodSeconds"
            ]
        );
    }
}
