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

const IMMUTABLE: &str = "field is immutable";

/// Completions are fixed, except in an Indexed job, where they change together with
/// parallelism (elastic indexed jobs).
fn validate_completions_update(n: &JobSpec, o: &JobSpec) -> Vec<FieldError> {
    if n.completions == o.completions {
        return vec![];
    }
    if n.completion_mode.as_deref() != Some("Indexed") {
        return vec![FieldError::invalid("spec.completions", json!(n.completions), IMMUTABLE)];
    }
    match n.completions {
        Some(c) if Some(c) != n.parallelism => vec![FieldError::invalid("spec.completions", c, "can only be modified in tandem with spec.parallelism")],
        _ => vec![],
    }
}

/// Whether the new template is the old one; with `scheduling_mutable`, differences in node
/// selector, node affinity, tolerations, scheduling gates, labels and annotations do not count.
fn same_template(n: &JobSpec, o: &JobSpec, scheduling_mutable: bool) -> bool {
    let mut old = o.template.clone();
    if scheduling_mutable {
        let new = &n.template;
        let meta = old.metadata.get_or_insert_with(Default::default);
        meta.labels = new.metadata.as_ref().and_then(|m| m.labels.clone());
        meta.annotations = new.metadata.as_ref().and_then(|m| m.annotations.clone());
        if old.metadata.as_ref().is_some_and(|m| m == &Default::default()) && new.metadata.is_none() {
            old.metadata = None;
        }
        if let (Some(os), Some(ns)) = (old.spec.as_mut(), new.spec.as_ref()) {
            os.node_selector = ns.node_selector.clone();
            os.tolerations = ns.tolerations.clone();
            os.scheduling_gates = ns.scheduling_gates.clone();
            let node_affinity = ns.affinity.as_ref().and_then(|a| a.node_affinity.clone());
            match (os.affinity.as_mut(), ns.affinity.as_ref()) {
                (Some(a), Some(_)) => a.node_affinity = node_affinity,
                (Some(a), None) => {
                    a.node_affinity = None;
                    if a == &Default::default() {
                        os.affinity = None;
                    }
                }
                (None, Some(_)) => os.affinity = Some(k8s_openapi::api::core::v1::Affinity { node_affinity, ..Default::default() }),
                (None, None) => {}
            }
        }
    }
    old == n.template
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
            errs.extend(validate_completions_update(n, o));
            // A suspended job that never started may change where its pods go (upstream's
            // mutable scheduling directives); anything else in the template is fixed.
            let never_started = o.suspend == Some(true) && old.status.as_ref().is_none_or(|s| s.start_time.is_none());
            if !same_template(n, o, never_started) {
                errs.push(FieldError::invalid("spec.template", serde_json::to_value(&n.template).unwrap_or_default(), IMMUTABLE));
            }
            let fixed = [
                ("spec.completionMode", json!(n.completion_mode), json!(o.completion_mode)),
                ("spec.podFailurePolicy", json!(n.pod_failure_policy), json!(o.pod_failure_policy)),
                ("spec.backoffLimitPerIndex", json!(n.backoff_limit_per_index), json!(o.backoff_limit_per_index)),
            ];
            for (field, now, before) in fixed {
                if now != before {
                    errs.push(FieldError::invalid(field, now, IMMUTABLE));
                }
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

/// Field errors of a cron schedule, in the grammar the CronJob controller schedules by
/// ([`crate::cron`]).
fn validate_schedule(s: &str) -> Vec<FieldError> {
    if s.is_empty() {
        return vec![FieldError::required("spec.schedule", "")];
    }
    match crate::cron::Schedule::parse(s) {
        Ok(_) => vec![],
        Err(e) => vec![FieldError::invalid("spec.schedule", s, e.to_string())],
    }
}

/// Field errors of a CronJob's `timeZone`: empty, `Local`, or a zone the time zone database
/// does not know, in upstream's words.
fn validate_time_zone(tz: Option<&str>) -> Vec<FieldError> {
    const FIELD: &str = "spec.timeZone";
    match tz {
        None => vec![],
        Some("") => vec![FieldError::invalid(FIELD, "", "timeZone must be nil or non-empty string")],
        Some(name) => match crate::cron::time_zone(Some(name)) {
            Ok(_) => vec![],
            Err(e) => vec![FieldError::invalid(FIELD, name, e.to_string())],
        },
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
        errs.extend(validate_time_zone(spec.time_zone.as_deref()));
        match spec.concurrency_policy.as_deref() {
            None | Some("Allow") | Some("Forbid") | Some("Replace") => {}
            Some(p) => errs.push(FieldError::not_supported("spec.concurrencyPolicy", p, &["Allow", "Forbid", "Replace"])),
        }
        errs.extend(non_negative("spec.startingDeadlineSeconds", spec.starting_deadline_seconds));
        errs.extend(non_negative("spec.successfulJobsHistoryLimit", spec.successful_jobs_history_limit.map(i64::from)));
        errs.extend(non_negative("spec.failedJobsHistoryLimit", spec.failed_jobs_history_limit.map(i64::from)));
        match &spec.job_template.spec {
            Some(js) => {
                errs.extend(validate_job_spec(js, "spec.jobTemplate.spec"));
                // the controller makes each job's selector
                if let Some(sel) = &js.selector {
                    errs.push(FieldError::invalid("spec.jobTemplate.spec.selector", json!(format_label_selector(sel)), "`selector` will be auto-generated"));
                }
                if js.manual_selector == Some(true) {
                    errs.push(FieldError::not_supported("spec.jobTemplate.spec.manualSelector", true, &["nil", "false"]));
                }
            }
            None => errs.push(FieldError::required("spec.jobTemplate.spec", "")),
        }
        // On create only: the controller names its jobs <cronjob>-<11 characters>, and a job
        // name has at most 63. Older, longer cronjobs stay editable.
        if c.metadata.name.as_ref().is_some_and(|n| n.len() > 52) {
            errs.push(FieldError::invalid("metadata.name", c.metadata.name.clone().unwrap_or_default(), "must be no more than 52 characters"));
        }
        errs
    }

    fn validate_update(&self, new: &CronJob, _old: &CronJob) -> Vec<FieldError> {
        self.validate(new).into_iter().filter(|e| e.field != "metadata.name").collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobStatus, JobTemplateSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn job(suspend: bool, started: bool) -> Job {
        let template = PodTemplateSpec {
            spec: Some(PodSpec {
                containers: vec![Container { name: "c".into(), image: Some("busybox".into()), ..Default::default() }],
                restart_policy: Some("Never".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut j = Job { spec: Some(JobSpec { template, suspend: Some(suspend), ..Default::default() }), ..Default::default() };
        Jobs.default(&mut j);
        if started {
            j.status = Some(JobStatus { start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH)), ..Default::default() });
        }
        j
    }

    fn template_errors(old: &Job, edit: impl Fn(&mut PodTemplateSpec)) -> Vec<String> {
        let mut new = old.clone();
        edit(&mut new.spec.as_mut().unwrap().template);
        Jobs.validate_update(&new, old).iter().map(|e| e.to_string()).filter(|e| e.starts_with("spec.template")).collect()
    }

    #[test]
    fn a_jobs_template_is_fixed_except_where_a_suspended_unstarted_job_schedules() {
        let node_selector = |t: &mut PodTemplateSpec| t.spec.as_mut().unwrap().node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
        let image = |t: &mut PodTemplateSpec| t.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
        let running = job(false, true);
        let errs = template_errors(&running, node_selector);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].ends_with("field is immutable"), "{errs:?}");
        assert_eq!(template_errors(&running, image).len(), 1);
        let waiting = job(true, false);
        assert!(template_errors(&waiting, node_selector).is_empty());
        assert!(template_errors(&waiting, |t| t.metadata.get_or_insert_with(Default::default).labels = Some([("a".to_string(), "b".to_string())].into()))
            .is_empty());
        assert_eq!(template_errors(&waiting, image).len(), 1, "only scheduling directives may change");
        // suspended after it started: fixed again
        assert_eq!(template_errors(&job(true, true), node_selector).len(), 1);
    }

    #[test]
    fn completions_change_only_in_tandem_with_parallelism_in_indexed_jobs() {
        let old = job(false, true);
        let mut new = old.clone();
        new.spec.as_mut().unwrap().completions = Some(3);
        let errs: Vec<String> = Jobs.validate_update(&new, &old).iter().map(|e| e.to_string()).collect();
        assert!(errs.contains(&"spec.completions: Invalid value: 3: field is immutable".to_string()), "{errs:?}");
        let mut indexed = old.clone();
        indexed.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        let mut new = indexed.clone();
        new.spec.as_mut().unwrap().completions = Some(3);
        let errs: Vec<String> = Jobs.validate_update(&new, &indexed).iter().map(|e| e.to_string()).collect();
        assert!(errs.contains(&"spec.completions: Invalid value: 3: can only be modified in tandem with spec.parallelism".to_string()), "{errs:?}");
        new.spec.as_mut().unwrap().parallelism = Some(3);
        assert!(Jobs.validate_update(&new, &indexed).iter().all(|e| e.field != "spec.completions"));
        let mut new = old.clone();
        new.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        let errs: Vec<String> = Jobs.validate_update(&new, &old).iter().map(|e| e.to_string()).collect();
        assert!(errs.contains(&"spec.completionMode: Invalid value: \"Indexed\": field is immutable".to_string()), "{errs:?}");
    }

    #[test]
    fn cron_job_time_zones_follow_upstreams_rules() {
        let msgs = |tz: &str| validate_time_zone(Some(tz)).iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(msgs("Europe/Berlin").is_empty());
        assert!(msgs("UTC").is_empty());
        assert!(msgs("America/Argentina/Buenos_Aires").is_empty());
        assert!(validate_time_zone(None).is_empty());
        assert_eq!(msgs(""), ["spec.timeZone: Invalid value: \"\": timeZone must be nil or non-empty string"]);
        assert_eq!(msgs("Mars/Olympus"), ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]);
        assert_eq!(msgs("../etc/passwd"), ["spec.timeZone: Invalid value: \"../etc/passwd\": unknown time zone ../etc/passwd"]);
        assert_eq!(msgs("Europe/Berlin Now"), ["spec.timeZone: Invalid value: \"Europe/Berlin Now\": unknown time zone Europe/Berlin Now"]);
        assert_eq!(
            msgs("local"),
            ["spec.timeZone: Invalid value: \"local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"]
        );
    }

    #[test]
    fn cron_jobs_may_not_name_a_selector_nor_be_named_over_52_characters_on_create() {
        let template = JobTemplateSpec { spec: Some(job(false, false).spec.unwrap()), ..Default::default() };
        let mut c = CronJob { spec: Some(CronJobSpec { schedule: "*/5 * * * *".into(), job_template: template, ..Default::default() }), ..Default::default() };
        c.metadata.name = Some("x".repeat(53));
        let selector = ApiSelector { match_labels: Some([("a".to_string(), "b".to_string())].into()), ..Default::default() };
        c.spec.as_mut().unwrap().job_template.spec.as_mut().unwrap().selector = Some(selector);
        let errs: Vec<String> = CronJobs.validate(&c).iter().map(|e| e.to_string()).collect();
        assert!(errs.iter().any(|e| e.ends_with("must be no more than 52 characters")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("spec.jobTemplate.spec.selector") && e.ends_with("`selector` will be auto-generated")), "{errs:?}");
        c.spec.as_mut().unwrap().job_template.spec.as_mut().unwrap().selector = None;
        assert!(CronJobs.validate_update(&c, &c).is_empty(), "{:?}", CronJobs.validate_update(&c, &c));
    }
}
