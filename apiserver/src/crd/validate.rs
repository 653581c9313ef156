//! Validation of a CustomResourceDefinition (as JSON, after defaulting), with upstream's field
//! paths and messages: the name is `<plural>.<group>`, the group a domain with a dot, the names
//! well-formed, the scope known, the versions unique with exactly one storage version, each
//! with a structural schema, valid subresource paths and printer columns.

use serde_json::Value;

use super::schema;
use crate::status::{go_raw, FieldError};

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The Go rendering upstream prints for the versions list in its errors (abbreviated).
fn versions_value(n: usize) -> Value {
    go_raw(format!("[]apiextensions.CustomResourceDefinitionVersion{{ /* {n} versions */ }}"))
}

fn dns1035(field: &str, value: &str, errs: &mut Vec<FieldError>) {
    let reasons = berth_names::dns1035_label(value);
    if !reasons.is_empty() {
        errs.push(FieldError::invalid(field, value, reasons.join(",")));
    }
}

/// `metadata.name` and the spec of a CRD.
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errs = validate_spec(crd);
    errs.extend(api_approval(crd, None));
    errs
}

/// The annotation a CRD in a group the Kubernetes project owns must carry.
const APPROVAL_ANNOTATION: &str = "api-approved.kubernetes.io";

/// Upstream's API review rule: a CRD in k8s.io, kubernetes.io or a subgroup of them names its
/// approval (a URL) or says it is unapproved ("unapproved, ..."); an update that leaves the
/// approval state as it was passes.
fn api_approval(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let group = text(&new["spec"]["group"]);
    let protected = ["k8s.io", "kubernetes.io"].iter().any(|g| group == *g || group.ends_with(&format!(".{g}")));
    if !protected {
        return vec![];
    }
    #[derive(PartialEq)]
    enum State {
        Missing,
        Invalid,
        Given,
    }
    let state = |crd: &Value| match crd.pointer("/metadata/annotations").and_then(|a| a.get(APPROVAL_ANNOTATION)).and_then(Value::as_str) {
        None => State::Missing,
        Some(v) if v.starts_with("unapproved") => State::Given,
        // upstream parses it as a request URI: an absolute URL or an absolute path
        Some(v) if url::Url::parse(v).is_ok() || v.starts_with('/') => State::Given,
        Some(_) => State::Invalid,
    };
    let now = state(new);
    if old.is_some_and(|o| state(o) == now) {
        return vec![];
    }
    let field = format!("metadata.annotations[{APPROVAL_ANNOTATION}]");
    let see = "see https://github.com/kubernetes/enhancements/pull/1111";
    match now {
        State::Given => vec![],
        State::Missing => vec![FieldError::required(field, format!("protected groups must have approval annotation {APPROVAL_ANNOTATION:?}, {see}"))],
        State::Invalid => {
            let value = new.pointer("/metadata/annotations").and_then(|a| a.get(APPROVAL_ANNOTATION)).cloned().unwrap_or(Value::Null);
            vec![FieldError::invalid(
                field,
                value,
                format!(
                    "protected groups must have approval annotation {APPROVAL_ANNOTATION:?} with either a URL or a reason starting with \"unapproved\", {see}"
                ),
            )]
        }
    }
}

/// The checks of a CRD's names, versions, schemas and conversion.
fn validate_spec(crd: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let spec = &crd["spec"];
    let names = &spec["names"];
    let group = text(&spec["group"]);
    let plural = text(&names["plural"]);
    let name = crd.pointer("/metadata/name").map(text).unwrap_or("");
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
    }
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        let reasons = berth_names::dns1123_subdomain(group);
        if !reasons.is_empty() {
            errs.push(FieldError::invalid("spec.group", group, reasons.join(",")));
        } else if group.split('.').count() < 2 {
            errs.push(FieldError::invalid("spec.group", group, "should be a domain with at least one dot"));
        }
    }
    match text(&spec["scope"]) {
        "" => errs.push(FieldError::required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(FieldError::not_supported("spec.scope", other, &["Cluster", "Namespaced"])),
    }
    names_errors(names, "spec.names", &mut errs);
    let versions: Vec<&Value> = spec["versions"].as_array().into_iter().flatten().collect();
    if versions.is_empty() {
        errs.push(FieldError::required("spec.versions", "must have exactly one version marked as storage version"));
    }
    let mut seen: Vec<&str> = vec![];
    let mut unique = true;
    let mut storage = 0;
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let vname = text(&v["name"]);
        if v["storage"] == true {
            storage += 1;
        }
        if seen.contains(&vname) {
            unique = false;
        }
        seen.push(vname);
        if vname.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else {
            dns1035(&format!("{path}.name"), vname, &mut errs);
        }
        match v.pointer("/schema/openAPIV3Schema") {
            Some(s) if s.is_object() => errs.extend(schema::structural_errors(s, &format!("{path}.schema.openAPIV3Schema"))),
            _ => errs.push(FieldError::required(format!("{path}.schema.openAPIV3Schema"), "schemas are required")),
        }
        if let Some(scale) = v.pointer("/subresources/scale").filter(|s| s.is_object()) {
            scale_errors(scale, &format!("{path}.subresources.scale"), &mut errs);
        }
        let fields = v["selectableFields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 8 {
            errs.push(FieldError::too_many(format!("{path}.selectableFields"), fields.len(), 8));
        }
        for (j, f) in fields.iter().enumerate() {
            let jp = text(&f["jsonPath"]);
            let p = format!("{path}.selectableFields[{j}].jsonPath");
            if jp.is_empty() {
                errs.push(FieldError::required(p, ""));
            } else if !jp.starts_with('.') || super::columns::parse_path(jp).is_err() {
                errs.push(FieldError::invalid(p, jp, "must be a simple JSON path"));
            } else if jp.starts_with(".metadata") {
                errs.push(FieldError::invalid(p, jp, "metadata fields are selectable already"));
            }
        }
        for (j, c) in v["additionalPrinterColumns"].as_array().into_iter().flatten().enumerate() {
            column_errors(c, &format!("{path}.additionalPrinterColumns[{j}]"), &mut errs);
        }
    }
    if !unique {
        errs.push(FieldError::invalid("spec.versions", versions_value(versions.len()), "must contain unique version names"));
    }
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid("spec.versions", versions_value(versions.len()), "must have exactly one version marked as storage version"));
    }
    match text(spec.pointer("/conversion/strategy").unwrap_or(&Value::Null)) {
        "" | "None" => {}
        "Webhook" => errs.push(FieldError::forbidden("spec.conversion.strategy", "Webhook conversion is not supported by this server")),
        other => errs.push(FieldError::not_supported("spec.conversion.strategy", other, &["None", "Webhook"])),
    }
    errs
}

/// What an update may not change, besides the checks of [`validate`].
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_spec(new);
    errs.extend(api_approval(new, Some(old)));
    let (ns, os) = (text(&new["spec"]["scope"]), text(&old["spec"]["scope"]));
    if ns != os && !os.is_empty() {
        errs.push(FieldError::invalid("spec.scope", ns, "field is immutable"));
    }
    let established =
        old.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| c["type"] == "Established" && c["status"] == "True");
    if established {
        for field in ["kind", "listKind"] {
            let (n, o) = (text(&new["spec"]["names"][field]), text(&old["spec"]["names"][field]));
            if n != o {
                errs.push(FieldError::invalid(format!("spec.names.{field}"), n, "field is immutable"));
            }
        }
    }
    let served: Vec<&str> = new["spec"]["versions"].as_array().into_iter().flatten().map(|v| text(&v["name"])).collect();
    for (i, stored) in new.pointer("/status/storedVersions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if !served.contains(&text(stored)) {
            errs.push(FieldError::invalid(format!("status.storedVersions[{i}]"), text(stored), "must appear in spec.versions"));
        }
    }
    errs
}

fn names_errors(names: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let plural = text(&names["plural"]);
    let singular = text(&names["singular"]);
    let kind = text(&names["kind"]);
    let list_kind = text(&names["listKind"]);
    if plural.is_empty() {
        errs.push(FieldError::required(format!("{path}.plural"), ""));
    } else {
        dns1035(&format!("{path}.plural"), plural, errs);
    }
    if !singular.is_empty() {
        dns1035(&format!("{path}.singular"), singular, errs);
    }
    let kind_ok = |k: &str| {
        let lower = k.to_lowercase();
        berth_names::dns1035_label(&lower).is_empty()
    };
    if kind.is_empty() {
        errs.push(FieldError::required(format!("{path}.kind"), ""));
    } else if !kind_ok(kind) {
        errs.push(FieldError::invalid(format!("{path}.kind"), kind, "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"));
    }
    if list_kind.is_empty() {
        errs.push(FieldError::required(format!("{path}.listKind"), ""));
    } else if !kind_ok(list_kind) {
        errs.push(FieldError::invalid(format!("{path}.listKind"), list_kind, "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"));
    } else if list_kind == kind {
        errs.push(FieldError::invalid(format!("{path}.listKind"), list_kind, "kind and listKind may not be the same"));
    }
    for (i, s) in names["shortNames"].as_array().into_iter().flatten().enumerate() {
        dns1035(&format!("{path}.shortNames[{i}]"), text(s), errs);
    }
    for (i, c) in names["categories"].as_array().into_iter().flatten().enumerate() {
        dns1035(&format!("{path}.categories[{i}]"), text(c), errs);
    }
}

fn scale_errors(scale: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let spec = text(&scale["specReplicasPath"]);
    if spec.is_empty() {
        errs.push(FieldError::required(format!("{path}.specReplicasPath"), ""));
    } else if !spec.starts_with(".spec.") {
        errs.push(FieldError::invalid(format!("{path}.specReplicasPath"), spec, "should be a json path under .spec"));
    }
    let status = text(&scale["statusReplicasPath"]);
    if status.is_empty() {
        errs.push(FieldError::required(format!("{path}.statusReplicasPath"), ""));
    } else if !status.starts_with(".status.") {
        errs.push(FieldError::invalid(format!("{path}.statusReplicasPath"), status, "should be a json path under .status"));
    }
    let selector = text(&scale["labelSelectorPath"]);
    if !(selector.is_empty() || selector.starts_with(".spec.") || selector.starts_with(".status.")) {
        errs.push(FieldError::invalid(format!("{path}.labelSelectorPath"), selector, "should be a json path under either .spec or .status"));
    }
}

fn column_errors(c: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if text(&c["name"]).is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    }
    const TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];
    match text(&c["type"]) {
        "" => errs.push(FieldError::required(format!("{path}.type"), "")),
        t if !TYPES.contains(&t) => errs.push(FieldError::not_supported(format!("{path}.type"), t, TYPES)),
        _ => {}
    }
    const FORMATS: &[&str] = &["int32", "int64", "float", "double", "byte", "date", "date-time", "password"];
    match text(&c["format"]) {
        "" => {}
        f if !FORMATS.contains(&f) => errs.push(FieldError::not_supported(format!("{path}.format"), f, FORMATS)),
        _ => {}
    }
    let jp = text(&c["jsonPath"]);
    if jp.is_empty() {
        errs.push(FieldError::required(format!("{path}.jsonPath"), ""));
    } else if let Err(e) = super::columns::parse_path(jp) {
        errs.push(FieldError::invalid(format!("{path}.jsonPath"), jp, e));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crd() -> Value {
        json!({"metadata": {"name": "crontabs.stable.example.com"}, "spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "listKind": "CronTabList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    fn messages(v: &Value) -> Vec<String> {
        validate(v).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_good_crd_passes_and_bad_ones_fail_in_upstream_words() {
        assert!(messages(&crd()).is_empty(), "{:?}", messages(&crd()));
        let mut bad = crd();
        bad["metadata"]["name"] = json!("crontab.stable.example.com");
        bad["spec"]["group"] = json!("example");
        bad["spec"]["scope"] = json!("Global");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        bad["spec"]["versions"][0]["schema"] = Value::Null;
        let errs = messages(&bad);
        assert!(
            errs.contains(&r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#.to_string()),
            "{errs:?}"
        );
        assert!(errs.contains(&r#"spec.group: Invalid value: "example": should be a domain with at least one dot"#.to_string()), "{errs:?}");
        assert!(errs.contains(&r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#.to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required".to_string()), "{errs:?}");
        assert!(errs.iter().any(|e| e.ends_with("must have exactly one version marked as storage version")), "{errs:?}");
    }

    #[test]
    fn crds_in_the_projects_groups_need_the_api_approval_annotation() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widgets.berth.k8s.io");
        c["spec"]["group"] = json!("berth.k8s.io");
        c["spec"]["names"]["plural"] = json!("widgets");
        assert_eq!(
            messages(&c),
            [
                r#"metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111"#
            ]
        );
        c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "maybe"});
        assert!(messages(&c)[0].contains(r#"with either a URL or a reason starting with "unapproved""#), "{:?}", messages(&c));
        for ok in ["unapproved, experimental", "https://github.com/kubernetes/kubernetes/pull/1"] {
            c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": ok});
            assert!(messages(&c).is_empty(), "{ok}: {:?}", messages(&c));
        }
        // an update that keeps a missing approval as it was passes
        let mut old = c.clone();
        old["metadata"]["annotations"] = json!({});
        let mut new = old.clone();
        new["spec"]["names"]["singular"] = json!("widget");
        assert!(validate_update(&new, &old).is_empty(), "{:?}", validate_update(&new, &old));
    }
}
