//! The custom resources of one CRD: a [`Resource`] per served version (all sharing one storage,
//! `<group>/<plural>`, and one watch cache), each with a [`CustomStrategy`] driven by the
//! version's schema and printer columns, and a [`VersionView`] — conversion `None`: a request
//! body is stored under the storage version's apiVersion, a stored object is served under the
//! requested one, with the version's defaults filled in. Also the OpenAPI v3 schema of each
//! version (for `kubectl explain`).

use std::cmp::Ordering;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::columns::{self, PrinterColumn};
use super::{intern, schema};
use crate::patch::{BuiltinLists, ListMerge, ListRules};
use crate::resources::{Resource, ScaleSpec, ALL_VERBS};
use crate::status::FieldError;
use crate::strategy::{Column, Outcome, Refusal, Strategy};

/// What every served version of a CRD knows about itself.
pub struct Version {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// `<group>/<storage version>`: the apiVersion objects are stored under.
    pub stored_api_version: String,
    /// The version's `openAPIV3Schema` (`{}` when none).
    pub schema: Value,
    /// The same without the root's `metadata` (which the generic layer checks).
    pub body_schema: Value,
    pub printer: Vec<PrinterColumn>,
    pub status: bool,
    /// `selectableFields`: field selector names (`spec.color`) and where their values are.
    pub selectable: Vec<(&'static str, Vec<columns::Step>)>,
}

impl Version {
    fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The OpenAPI schema name, as upstream names CR schemas (`com.example.stable.v1.CronTab`).
    fn schema_name(&self) -> String {
        let reversed: Vec<&str> = self.group.split('.').rev().collect();
        format!("{}.{}.{}", reversed.join("."), self.version, self.kind)
    }
}

/// A custom resource's lists merge as its schema says (`x-kubernetes-list-type`: `map` by its
/// `x-kubernetes-list-map-keys`, `set`, or `atomic`, the default); its metadata as every
/// object's.
impl ListRules for Version {
    fn list_merge(&self, path: &[String], field: &str) -> ListMerge {
        if path.first().map(String::as_str) == Some("metadata") {
            return BuiltinLists.list_merge(path, field);
        }
        // a list's elements are at the list's path: step into `items` before a field
        fn step<'a>(node: &'a Value, seg: &str) -> Option<&'a Value> {
            let node = node.get("items").filter(|i| i.is_object()).unwrap_or(node);
            node.get("properties").and_then(|p| p.get(seg)).or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
        }
        let mut node = &self.body_schema;
        for seg in path.iter().map(String::as_str).chain(std::iter::once(field)) {
            match step(node, seg) {
                Some(next) => node = next,
                None => return ListMerge::Replace,
            }
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys: Vec<String> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect();
                if keys.is_empty() {
                    ListMerge::Replace
                } else {
                    ListMerge::Keys(intern::list(&keys))
                }
            }
            Some("set") => ListMerge::Set,
            _ => ListMerge::Replace,
        }
    }
}

/// The strategy of one served version of a CRD.
pub struct CustomStrategy(pub Arc<Version>);

impl Strategy for CustomStrategy {
    fn list_rules(&self) -> &dyn ListRules {
        self.0.as_ref()
    }
    fn normalize(&self, obj: &Value) -> Result<Value, String> {
        let mut o = obj.clone();
        schema::prune(&self.0.schema, &mut o, true);
        if let Some(m) = o.get("metadata").filter(|m| !m.is_null()) {
            let meta: ObjectMeta = serde_json::from_value(m.clone()).map_err(|e| e.to_string())?;
            o["metadata"] = serde_json::to_value(meta).map_err(|e| e.to_string())?;
        }
        Ok(o)
    }
    fn default(&self, obj: &mut Value) -> Result<(), String> {
        schema::default(&self.0.schema, obj);
        Ok(())
    }
    fn record_requestor(&self, _obj: &mut Value, _user: &crate::User) -> Result<(), String> {
        Ok(())
    }
    fn prepare_for_create(&self, obj: &mut Value) -> Result<(), String> {
        if self.0.status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        Ok(())
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) -> Result<(), String> {
        // without a status subresource, status is part of what generation counts (upstream's rule)
        if !self.0.status && new.get("status") != old.get("status") {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            crate::meta::set(new, "generation", json!(generation));
        }
        Ok(())
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut body = obj.clone();
        if let Some(m) = body.as_object_mut() {
            // the API's own fields are checked by the generic layer
            for k in ["apiVersion", "kind", "metadata"] {
                m.remove(k);
            }
        }
        schema::validate(&self.0.body_schema, &body, "")
    }
    fn validate_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        self.validate(new)
    }
    fn name_grammar(&self) -> fn(&str) -> Vec<String> {
        berth_names::dns1123_subdomain
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<Column> {
        columns::columns(&self.0.printer)
    }
    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        columns::cells(&self.0.printer, obj, now)
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        self.0.selectable.iter().map(|(name, path)| (*name, text(columns::lookup(obj, path)))).collect()
    }
    fn field_names(&self) -> Vec<&'static str> {
        self.0.selectable.iter().map(|(name, _)| *name).collect()
    }
    fn act(&self, action: &str, _obj: &mut Value, _body: &Value) -> Result<Outcome, Refusal> {
        Err(Refusal::Conflict(format!("{action} is not supported")))
    }
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value {
        openapi_schema(&self.0, gen)
    }
}

/// Conversion `None` between a served version and the storage version: only apiVersion changes.
pub struct VersionView(pub Arc<Version>);

impl crate::convert::View for VersionView {
    fn stored(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(self.0.stored_api_version));
        }
        obj
    }
    fn served(&self, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut().filter(|m| m.contains_key("apiVersion")) {
            m.insert("apiVersion".into(), json!(self.0.api_version()));
        }
        // defaults added to the schema since the object was written show on reading, as upstream's
        schema::default(&self.0.schema, &mut obj);
        obj
    }
    fn stored_api_version(&self) -> &str {
        &self.0.stored_api_version
    }
    fn schema(&self, gen: &mut schemars::SchemaGenerator) -> Value {
        openapi_schema(&self.0, gen)
    }
}

/// Adds the OpenAPI v3 schema of a version (its schema, with apiVersion, kind and metadata as
/// every object has them) to `gen`; the reference to it.
fn openapi_schema(v: &Version, gen: &mut schemars::SchemaGenerator) -> Value {
    let meta_ref = gen.subschema_for::<ObjectMeta>().to_value();
    let mut s = if v.schema.is_object() && v.schema.as_object().is_some_and(|m| !m.is_empty()) {
        v.schema.clone()
    } else {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    };
    if !s.get("properties").is_some_and(Value::is_object) {
        s["properties"] = json!({});
    }
    let props = &mut s["properties"];
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
    props["metadata"] = json!({"allOf": [meta_ref], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
    s["x-kubernetes-group-version-kind"] = json!([{"group": v.group, "kind": v.kind, "version": v.version}]);
    let name = v.schema_name();
    gen.definitions_mut().insert(name.clone(), s);
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Orders versions as upstream's discovery does: GA before beta before alpha, higher first,
/// then the rest alphabetically.
pub fn version_order(a: &str, b: &str) -> Ordering {
    fn key(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (stage, rank) in [("beta", 2u8), ("alpha", 1u8)] {
            if let Some(n) = tail.strip_prefix(stage) {
                return n.parse().ok().map(|minor| (rank, major, minor));
            }
        }
        None
    }
    match (key(a), key(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// How stable a version name is: GA 3, beta 2, alpha 1, anything else 0.
fn stability(v: &str) -> u8 {
    let Some(rest) = v.strip_prefix('v') else { return 0 };
    let tail = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    if tail.len() == rest.len() {
        0
    } else if tail.is_empty() {
        3
    } else if tail.starts_with("beta") {
        2
    } else if tail.starts_with("alpha") {
        1
    } else {
        0
    }
}

/// Upstream's warning for a deprecated version without its own: the newest served, not
/// deprecated version at least as stable is recommended.
fn default_warning(group: &str, kind: &str, version: &str, versions: &[&Value]) -> String {
    let mut msg = format!("{group}/{version} {kind} is deprecated");
    let mut candidates: Vec<&str> = versions
        .iter()
        .filter(|v| v["served"] == true && v["deprecated"] != true)
        .filter_map(|v| v["name"].as_str())
        .filter(|n| *n != version && stability(n) >= stability(version))
        .collect();
    candidates.sort_by(|a, b| version_order(a, b));
    if let Some(newest) = candidates.first() {
        msg.push_str(&format!("; use {group}/{newest} {kind}"));
    }
    msg
}

/// `.spec.replicas` as the JSON pointer `/spec/replicas` ("" for none).
fn pointer(path: Option<&str>) -> &'static str {
    match path.and_then(|p| columns::parse_path(p).ok()) {
        Some(steps) if !steps.is_empty() => {
            let p: String = steps
                .iter()
                .map(|s| match s {
                    columns::Step::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
                    columns::Step::Index(i) => format!("/{i}"),
                })
                .collect();
            intern::str(&p)
        }
        _ => "",
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

/// The resources a CRD (as stored, defaulted) serves, one per served version, best version first.
pub fn resources_of(crd: &Value) -> Vec<Resource> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let group = intern::str(&text(&spec["group"]));
    let plural = intern::str(&text(&names["plural"]));
    let kind = intern::str(&text(&names["kind"]));
    let singular = text(&names["singular"]);
    let singular = intern::str(&if singular.is_empty() { kind.to_lowercase() } else { singular });
    let short_names = intern::list(&strings(names.get("shortNames")));
    let categories = intern::list(&strings(names.get("categories")));
    let namespaced = spec["scope"] == "Namespaced";
    let versions: Vec<&Value> = spec["versions"].as_array().into_iter().flatten().collect();
    let Some(storage_version) = versions.iter().find(|v| v["storage"] == true).and_then(|v| v["name"].as_str()) else { return vec![] };
    let storage = intern::str(&format!("{group}/{plural}"));
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let mut out = vec![];
    for v in versions.iter().filter(|v| v["served"] == true) {
        let name = intern::str(&text(&v["name"]));
        let subresources = &v["subresources"];
        let schema = v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or(json!({}));
        let mut body_schema = schema.clone();
        if let Some(p) = body_schema.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("metadata");
        }
        let version = Arc::new(Version {
            group,
            version: name,
            kind,
            stored_api_version: format!("{group}/{storage_version}"),
            schema,
            body_schema,
            printer: columns::printer_columns(v.get("additionalPrinterColumns")),
            status: subresources.get("status").is_some_and(|s| !s.is_null()),
            selectable: v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .filter_map(|p| columns::parse_path(p).ok().map(|steps| (intern::str(p.trim_start_matches('.')), steps)))
                .collect(),
        });
        let scale = subresources.get("scale").filter(|s| s.is_object()).map(|s| ScaleSpec {
            spec_replicas: pointer(s["specReplicasPath"].as_str()),
            status_replicas: pointer(s["statusReplicasPath"].as_str()),
            selector: pointer(s["labelSelectorPath"].as_str()),
        });
        let deprecation = if v["deprecated"] == true {
            let warning = v["deprecationWarning"].as_str().map(String::from).unwrap_or_else(|| default_warning(group, kind, name, &versions));
            Some(Arc::from(warning))
        } else {
            None
        };
        out.push(Resource {
            group,
            version: name,
            kind,
            plural,
            singular,
            short_names,
            categories,
            namespaced,
            verbs: ALL_VERBS,
            storage,
            status: version.status,
            scale,
            actions: &[],
            ttl: None,
            return_deleted: false,
            view: Some(Arc::new(VersionView(version.clone()))),
            deprecation,
            custom: true,
            terminating,
            review: false,
            approval: false,
            finalize: false,
            resource_metrics: false,
            strategy: Box::new(CustomStrategy(version)),
        });
    }
    out.sort_by(|a, b| version_order(a.version, b.version));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fill_new_defaults_and_status_counts_for_generation_without_a_status_subresource() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 2}}},
                "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}}}]}});
        let rs = resources_of(&crd);
        let served = rs[0].served(json!({"apiVersion": "example.com/v1", "spec": {}}));
        assert_eq!(served["spec"]["size"], 2);
        let old = json!({"metadata": {"generation": 4}, "spec": {"size": 1}});
        let mut new = json!({"metadata": {"generation": 4}, "spec": {"size": 1}, "status": {"ok": true}});
        rs[0].strategy.prepare_for_update(&mut new, &old).unwrap();
        assert_eq!(new["metadata"]["generation"], 5);
    }

    #[test]
    fn selectable_fields_select() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true, "selectableFields": [{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.size"}]}]}});
        let rs = resources_of(&crd);
        assert_eq!(rs[0].strategy.field_names(), vec!["spec.color", "spec.size"]);
        let fields = rs[0].strategy.fields(&json!({"spec": {"color": "red", "size": 3}}));
        assert_eq!(fields, vec![("spec.color", "red".to_string()), ("spec.size", "3".to_string())]);
    }

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec!["v1alpha1", "foo", "v1", "v2beta1", "v2", "v1beta2", "v10"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v, vec!["v10", "v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn a_crd_serves_each_served_version_from_one_storage() {
        let crd = json!({"spec": {"group": "stable.example.com", "scope": "Namespaced",
        "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"], "categories": ["all"]},
        "versions": [
            {"name": "v1beta1", "served": true, "storage": false, "deprecated": true},
            {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}}},
            {"name": "v0", "served": false, "storage": false}
        ]}});
        let rs = resources_of(&crd);
        assert_eq!(rs.iter().map(|r| r.version).collect::<Vec<_>>(), vec!["v1", "v1beta1"]);
        assert!(rs.iter().all(|r| r.storage == "stable.example.com/crontabs" && r.singular == "crontab"));
        let v1 = &rs[0];
        assert!(v1.status && v1.scale.is_some_and(|s| s.spec_replicas == "/spec/replicas" && s.selector == "/status/selector"));
        assert_eq!(rs[1].deprecation.as_deref(), Some("stable.example.com/v1beta1 CronTab is deprecated; use stable.example.com/v1 CronTab"));
        let stored = rs[1].stored(json!({"apiVersion": "stable.example.com/v1beta1"}));
        assert_eq!(stored["apiVersion"], "stable.example.com/v1");
        assert_eq!(rs[1].served(stored)["apiVersion"], "stable.example.com/v1beta1");
    }
}
