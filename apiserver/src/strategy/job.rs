//! Jobs and CronJobs (batch/v1). Jobs: defaults (completions and parallelism, back-off limit,
//! completion mode, pod replacement policy, labels from the template), the generated selector
//! (`batch.kubernetes.io/controller-uid`) unless `manualSelector`, the template restarts
//! OnFailure or Never, the selector never changes, STATUS/COMPLETIONS/DURATION columns.
//! CronJobs: defaults (concurrency, history limits, suspend), schedule grammar, the columns.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use serde_json::{json, Value};

use super::workload::{containers_and_images, default_template, non_negative, selector_immutable, validate_selector_matches, validate_template};
use super::workload::{CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::{col, wide, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::selector::format_label_selector;
use crate::status::FieldError;
use crate::table::{age, human_duration};

const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";

fn default_job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    let limit = if spec.backoff_limit_per_index.is_some() { i32::MAX } else { 6 };
    spec.backoff_limit.get_or_insert(limit);
    spec.completion_mode.get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() { "Failed" } else { "TerminatingOrFailed" };
    spec.pod_replacement_policy.get_or_insert_with(|| replacement.into());
    // a job's template has no default restart policy: validation asks for one
    let unset = spec.template.spec.as_ref().is_some_and(|s| s.restart_policy.is_none());
    default_template(Some(&mut spec.template));
    if let Some(ps) = spec.template.spec.as_mut().filter(|_| unset) {
        ps.restart_policy = None;
    }
}

fn validate_job_spec(spec: &JobSpec, path: &str) -> Vec<FieldError> {
    let mut errs = non_negative(&format!("{path}.parallelism"), spec.parallelism.map(i64::from));
    errs.extend(non_negative(&format!("{path}.completions"), spec.completions.map(i64::from)));
    errs.extend(non_negative(&format!("{path}.backoffLimit"), spec.backoff_limit.map(i64::from)));
    if let Some(m) = spec.completion_mode.as_deref().filter(|m| *m != "NonIndexed" && *m != "Indexed") {
        errs.push(FieldError::not_supported(format!("{path}.completionMode"), m, &["NonIndexed", "Indexed"]));
    }
    if spec.template.spec.as_ref().is_some_and(|s| s.restart_policy.is_none()) {
        errs.push(FieldError::required(format!("{path}.template.spec.restartPolicy"), "valid values: \"OnFailure\", \"Never\""));
    }
    errs.extend(validate_template(Some(&spec.template), &format!("{path}.template"), JOB_RESTART_POLICIES));
    errs
}

pub struct Jobs;

impl Kind for Jobs {
    type Object = Job;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, j: &mut Job) {
        let spec = j.spec.get_or_insert_with(Default::default);
        if j.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            j.metadata.labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).filter(|l| !l.is_empty());
        }
        default_job_spec(spec);
    }

    fn prepare_for_create(&self, j: &mut Job) {
        j.status = Some(Default::default());
        let (uid, name) = (j.metadata.uid.clone().unwrap_or_default(), j.metadata.name.clone().unwrap_or_default());
        let spec = j.spec.get_or_insert_with(Default::default);
        if spec.manual_selector == Some(true) {
            return;
        }
        let labels = spec.template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in [(CONTROLLER_UID, &uid), ("batch.kubernetes.io/job-name", &name), ("controller-uid", &uid), ("job-name", &name)] {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
        if spec.selector.is_none() {
            spec.selector = Some(ApiSelector { match_labels: Some(BTreeMap::from([(CONTROLLER_UID.to_string(), uid)])), match_expressions: None });
        }
    }

    fn validate(&self, j: &Job) -> Vec<FieldError> {
        let Some(spec) = &j.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = match &spec.selector {
            Some(sel) => validate_selector_matches(sel, Some(&spec.template), "job"),
            None => vec![FieldError::required("spec.selector", "")],
        };
        errs.extend(validate_job_spec(spec, "spec"));
        errs
    }

    fn validate_update(&self, new: &Job, old: &Job) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let sel = |j: &Job| j.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        errs.extend(selector_immutable(&sel(new), &sel(old)));
        if let (Some(n), Some(o)) = (&new.spec, &old.spec) {
            if n.completions != o.completions {
                errs.push(FieldError::invalid("spec.completions", n.completions.unwrap_or(0), "field is immutable"));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The number of pods which reached phase Succeeded."),
            col("Duration", "string", "Time required to complete the job."),
            AGE_COLUMN,
            CONTAINERS_COLUMN,
            IMAGES_COLUMN,
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ]
    }

    fn cells(&self, j: &Job, now: Timestamp) -> Vec<Value> {
        let spec = j.spec.clone().unwrap_or_default();
        let st = j.status.clone().unwrap_or_default();
        let has = |t: &str| st.conditions.iter().flatten().any(|c| c.type_ == t && c.status == "True");
        let status = if has("Complete") {
            "Complete"
        } else if has("Failed") {
            "Failed"
        } else if j.metadata.deletion_timestamp.is_some() {
            "Terminating"
        } else if has("Suspended") {
            "Suspended"
        } else if has("FailureTarget") {
            "FailureTarget"
        } else if has("SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else {
            "Running"
        };
        let succeeded = st.succeeded.unwrap_or(0);
        let completions = match (spec.completions, spec.parallelism.unwrap_or(0)) {
            (Some(c), _) => format!("{succeeded}/{c}"),
            (None, p) if p > 1 => format!("{succeeded}/1 of {p}"),
            (None, _) => format!("{succeeded}/1"),
        };
        let duration = match (&st.start_time, &st.completion_time) {
            (None, _) => String::new(),
            (Some(s), None) => human_duration(now.duration_since(s.0)),
            (Some(s), Some(c)) => human_duration(c.0.duration_since(s.0)),
        };
        let (containers, images) = containers_and_images(Some(&spec.template));
        vec![
            json!(j.metadata.name.clone().unwrap_or_default()),
            json!(status),
            json!(completions),
            json!(duration),
            json!(age(j.metadata.creation_timestamp.as_ref(), now)),
            containers,
            images,
            json!(spec.selector.as_ref().map(format_label_selector).unwrap_or_else(|| "<none>".into())),
        ]
    }

    fn fields(&self, j: &Job) -> Vec<(&'static str, String)> {
        vec![("status.successful", j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0).to_string())]
    }
}

/// Field errors of a cron schedule: five fields or a `@` macro, with an optional TZ= prefix refused.
fn validate_schedule(s: &str) -> Vec<FieldError> {
    if s.is_empty() {
        return vec![FieldError::required("spec.schedule", "")];
    }
    if s.contains("TZ=") {
        return vec![FieldError::invalid("spec.schedule", s, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")];
    }
    let macros = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
    let fields: Vec<&str> = s.split_whitespace().collect();
    let ok = macros.contains(&s)
        || s.starts_with("@every ")
        || (fields.len() == 5 && fields.iter().all(|f| f.bytes().all(|c| c.is_ascii_alphanumeric() || b"*/,-?".contains(&c))));
    if ok {
        vec![]
    } else {
        vec![FieldError::invalid("spec.schedule", s, format!("expected exactly 5 fields, found {}: {s}", fields.len()))]
    }
}

pub struct CronJobs;

impl Kind for CronJobs {
    type Object = CronJob;

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, c: &mut CronJob) {
        let spec = c.spec.get_or_insert_with(Default::default);
        spec.concurrency_policy.get_or_insert_with(|| "Allow".into());
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        if let Some(js) = spec.job_template.spec.as_mut() {
            default_job_spec(js);
        }
    }

    fn prepare_for_create(&self, c: &mut CronJob) {
        c.status = Some(Default::default());
    }

    fn validate(&self, c: &CronJob) -> Vec<FieldError> {
        let Some(spec) = &c.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = validate_schedule(&spec.schedule);
        match spec.concurrency_policy.as_deref() {
            None | Some("Allow") | Some("Forbid") | Some("Replace") => {}
            Some(p) => errs.push(FieldError::not_supported("spec.concurrencyPolicy", p, &["Allow", "Forbid", "Replace"])),
        }
        errs.extend(non_negative("spec.startingDeadlineSeconds", spec.starting_deadline_seconds));
        errs.extend(non_negative("spec.successfulJobsHistoryLimit", spec.successful_jobs_history_limit.map(i64::from)));
        errs.extend(non_negative("spec.failedJobsHistoryLimit", spec.failed_jobs_history_limit.map(i64::from)));
        match &spec.job_template.spec {
            Some(js) => errs.extend(validate_job_spec(js, "spec.jobTemplate.spec")),
            None => errs.push(FieldError::required("spec.jobTemplate.spec", "")),
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
            Column { kind: "boolean", ..col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions.") },
            col("Active", "integer", "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
            AGE_COLUMN,
            CONTAINERS_COLUMN,
            IMAGES_COLUMN,
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ]
    }

    fn cells(&self, c: &CronJob, now: Timestamp) -> Vec<Value> {
        let spec = c.spec.clone().unwrap_or_default();
        let st = c.status.clone().unwrap_or_default();
        let js = spec.job_template.spec.clone().unwrap_or_default();
        let (containers, images) = containers_and_images(Some(&js.template));
        let suspend = match spec.suspend {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let last = st.last_schedule_time.as_ref().map(|t| human_duration(now.duration_since(t.0))).unwrap_or_else(|| "<none>".into());
        vec![
            json!(c.metadata.name.clone().unwrap_or_default()),
            json!(spec.schedule),
            json!(spec.time_zone.clone().unwrap_or_else(|| "<none>".into())),
            json!(suspend),
            json!(st.active.as_ref().map_or(0, |a| a.len())),
            json!(last),
            json!(age(c.metadata.creation_timestamp.as_ref(), now)),
            containers,
            images,
            json!(js.selector.as_ref().map(format_label_selector).unwrap_or_else(|| "<none>".into())),
        ]
    }
}
