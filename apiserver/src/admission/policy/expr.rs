//! CEL expressions of ValidatingAdmissionPolicies and webhook matchConditions, on the `cel`
//! crate (a maintained CEL parser and interpreter): compiled once per expression text and kept,
//! evaluated against the request's variables (`object`, `oldObject`, `request`, `params`,
//! `namespaceObject`, `variables`, `authorizer`), the JSON ones converted once per request.
//!
//! What works: the standard macros and functions (`has`, `all`, `exists`, `exists_one`, `map`,
//! `filter`, `size`, `in`, `startsWith`, `endsWith`, `contains`, `matches`, conversions,
//! `timestamp`/`duration` with their arithmetic and accessors, optionals with `a.?b` and
//! `orValue`), and Kubernetes'
//! libraries ([`super::library`]): strings (cel-go's extension at Kubernetes' version 2, with
//! `format` and `strings.quote`), regex (`find`, `findAll`), lists, sets, URLs, quantities, IP
//! addresses and CIDRs, and the authorizer. Policy variables keep their CEL type.
//!
//! What does not: expressions are not type-checked against the resource's schema (upstream's
//! status.typeChecking is left empty; a misspelt field fails when evaluated, not when the
//! policy is written), there is no cost budget, variables are evaluated eagerly (a failing one
//! is left out: expressions that use it fail with `no such key`), Kubernetes 1.31+'s
//! `format.*` validators, semver and image libraries and two-variable comprehensions are not
//! there, and the `cel` crate's own differences remain where not worked around (`size` and
//! `matches` are: see `library::standard`): `string()` of a double or a duration is Rust's
//! rendering (`1234567`, `1m30s`; cel-go: `1.234567e+06`, `90s`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::common::types;
use cel::common::value::Val;
use serde_json::Value;

use super::library;
use super::library::authz::Scope;

/// Programs kept at most (the cache is emptied when full).
const KEEP: usize = 2048;

/// A parsed expression.
pub type Program = cel::parser::Expression;

fn cache() -> &'static Mutex<HashMap<String, Arc<Program>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Program>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The parsed expression (with the optional syntax, `a.?b` and `[?i]`, which Kubernetes 1.29+
/// enables), or upstream's `compilation failed: ...` words.
pub fn compile(expression: &str) -> Result<Arc<Program>, String> {
    if let Some(p) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(expression) {
        return Ok(p.clone());
    }
    let parser = cel::parser::Parser::new().enable_optional_syntax(true);
    let mut parsed = parser.parse(expression).map_err(|e| format!("compilation failed: {}", one_line(&e.to_string())))?;
    library::rewrite(&mut parsed);
    let program = Arc::new(parsed);
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= KEEP {
        c.clear();
    }
    c.insert(expression.to_string(), program.clone());
    Ok(program)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The variables of one request's evaluations: a child of the library's root context (the
/// standard functions and Kubernetes' libraries, registered once), holding the variables
/// converted once for all the expressions evaluated against them.
pub struct Bindings<'a> {
    ctx: cel::Context<'a>,
    /// The policy's `variables`, by name.
    named: HashMap<cel::objects::Key, cel::Value>,
}

impl Default for Bindings<'static> {
    fn default() -> Self {
        Bindings::new(None)
    }
}

impl<'a> Bindings<'a> {
    /// Bindings with the `authorizer` variable of `authorizer`'s request, or without one.
    pub fn new(authorizer: Option<&'a Scope<'a>>) -> Self {
        let mut ctx: cel::Context<'a> = library::root().new_inner_scope();
        if let Some(scope) = authorizer {
            ctx.set_variable_resolver(scope);
            ctx.add_variable_as_val("authorizer", scope.variable());
        }
        let mut b = Bindings { ctx, named: HashMap::new() };
        b.publish_variables();
        b
    }

    /// Binds `name` to a JSON value (an object, the request, params).
    pub fn set(&mut self, name: &'static str, value: Value) {
        self.ctx.add_variable_as_val(name, to_val(&value));
    }

    /// Adds a policy variable (visible to later expressions as `variables.<name>`), keeping its
    /// CEL type (a Quantity stays one).
    pub fn set_variable(&mut self, name: &str, value: cel::Value) {
        self.named.insert(cel::objects::Key::String(Arc::new(name.to_string())), value);
        self.publish_variables();
    }

    fn publish_variables(&mut self) {
        let map = cel::objects::Map { map: Arc::new(self.named.clone()) };
        self.ctx.add_variable_from_value("variables", cel::Value::Map(map));
    }

    /// Evaluates `expression` to a CEL value, or upstream's words for why it failed.
    pub fn eval_value(&self, expression: &str) -> Result<cel::Value, String> {
        let program = compile(expression)?;
        self.ctx.resolve(&program).map_err(|e| describe(&e))
    }

    /// Evaluates `expression` to a JSON value.
    pub fn eval(&self, expression: &str) -> Result<Value, String> {
        self.eval_value(expression)?.json().map_err(|e| e.to_string())
    }

    /// Evaluates `expression`, which must give a bool.
    pub fn eval_bool(&self, expression: &str) -> Result<bool, String> {
        match self.eval_value(expression)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!("expected a bool, got {}", other.json().map(|j| j.to_string()).unwrap_or_else(|_| format!("{other:?}")))),
        }
    }
}

/// An evaluation error in cel-go's words where they differ (`no such key: x`, `no such
/// overload`), a library function's error as its bare message (cel-go's errors name no function).
fn describe(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::FunctionError { message, .. } => one_line(message),
        E::NoSuchKey(k) => format!("no such key: {k}"),
        E::NoSuchOverload => "no such overload".into(),
        E::UndeclaredReference(r) => format!("undeclared reference to '{r}'"),
        other => one_line(&other.to_string()),
    }
}

/// A JSON value as CEL sees a Kubernetes object: integers are `int` (as upstream's schema-typed
/// values are), only those beyond i64 `uint`. Built as the interpreter's own values, without
/// going through `cel::Value`.
fn to_val(v: &Value) -> Box<dyn Val> {
    match v {
        Value::Null => Box::new(types::CelNull),
        Value::Bool(b) => Box::new(types::CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(types::CelInt::from(i)),
            (None, Some(u)) => Box::new(types::CelUInt::from(u)),
            _ => Box::new(types::CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(types::CelString::from(s.as_str())),
        Value::Array(a) => Box::new(types::CelList::from(a.iter().map(to_val).collect::<Vec<_>>())),
        Value::Object(m) => {
            let map: HashMap<types::CelMapKey, Box<dyn Val>> = m.iter().map(|(k, v)| (types::CelMapKey::from(k.as_str()), to_val(v))).collect();
            Box::new(types::CelMap::from(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_see_the_object_request_and_variables() {
        let mut b = Bindings::default();
        b.set("object", json!({"metadata": {"name": "web", "labels": {"app": "x"}}, "spec": {"replicas": 7, "containers": [{"image": "a:1"}]}}));
        b.set("request", json!({"operation": "CREATE"}));
        b.set_variable("max", cel::Value::Int(5));
        assert_eq!(b.eval_bool("object.spec.replicas <= variables.max"), Ok(false));
        assert_eq!(b.eval_bool("has(object.metadata.labels) && object.metadata.labels.app == 'x'"), Ok(true));
        assert_eq!(b.eval_bool("object.spec.containers.all(c, c.image.endsWith(':1'))"), Ok(true));
        assert_eq!(b.eval_bool("request.operation in ['CREATE', 'UPDATE']"), Ok(true));
        assert_eq!(b.eval("'too many: ' + string(object.spec.replicas)"), Ok(json!("too many: 7")));
        b.set("params", json!({"data": {"max": "4"}}));
        b.set_variable("replicas", cel::Value::Int(7));
        assert_eq!(b.eval_bool("variables.replicas <= int(params.data.max)"), Ok(false), "JSON integers are CEL ints");
        assert!(b.eval_bool("object.spec.missing > 1").is_err());
        assert!(b.eval_bool("object.spec.replicas").is_err(), "not a bool");
    }

    #[test]
    fn timestamps_durations_regexes_and_library_values_work_and_errors_read_as_cel_gos() {
        let mut b = Bindings::default();
        b.set("object", json!({"metadata": {"name": "web-1", "creationTimestamp": "2024-05-01T10:00:00Z"}, "spec": {"limit": "512Mi"}}));
        assert_eq!(b.eval_bool("object.metadata.name.matches('^web-[0-9]+$')"), Ok(true));
        assert_eq!(b.eval_bool("timestamp(object.metadata.creationTimestamp) + duration('1h') > timestamp('2024-05-01T10:30:00Z')"), Ok(true));
        assert_eq!(b.eval("timestamp(object.metadata.creationTimestamp).getHours()"), Ok(json!(10)));
        assert_eq!(b.eval("duration('1h30m').getMinutes()"), Ok(json!(90)));
        // a variable keeps its CEL type: a Quantity stays one
        let limit = b.eval_value("quantity(object.spec.limit)").expect("quantity");
        b.set_variable("limit", limit);
        assert_eq!(b.eval_bool("variables.limit.isLessThan(quantity('1Gi'))"), Ok(true));
        assert_eq!(b.eval_bool("object.spec.missing == 1"), Err("no such key: missing".into()));
        assert_eq!(
            b.eval_bool("quantity('abc').sign() == 1"),
            Err("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".into())
        );
        assert_eq!(b.eval_bool("object.metadata.name.find(1) == ''"), Err("no such overload".into()));
        assert_eq!(b.eval_bool("nothing == 1"), Err("undeclared reference to 'nothing'".into()));
        // optionals, with the syntax Kubernetes enables
        assert_eq!(b.eval("object.?spec.?replicas.orValue(1)"), Ok(json!(1)));
        assert_eq!(b.eval("object.?spec.?limit.orValue('none')"), Ok(json!("512Mi")));
        assert_eq!(b.eval_bool("[1, 2].exists_one(x, x == 1)"), Ok(true));
    }

    /// What an evaluation costs: 10,000 evaluations of a typical validation against a pod, with
    /// a fresh Bindings each time (one request, one expression) and with one Bindings for all.
    /// `cargo test -p berth-apiserver --lib cel_evaluation_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn cel_evaluation_cost() {
        let containers: Vec<Value> = (0..3)
            .map(|i| json!({"name": format!("c{i}"), "image": format!("registry.example.com/app:{i}"), "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}, "env": [{"name": "A", "value": "b"}]}))
            .collect();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": containers, "restartPolicy": "Always", "nodeName": "n1"}});
        let standard = "object.spec.containers.all(c, c.image.startsWith('registry.example.com/')) && size(object.metadata.name) < 64";
        let n = 10_000u32;
        let fresh = std::time::Instant::now();
        for _ in 0..n {
            let mut b = Bindings::default();
            b.set("object", pod.clone());
            assert_eq!(b.eval_bool(standard), Ok(true));
        }
        let fresh = fresh.elapsed() / n;
        let mut b = Bindings::default();
        b.set("object", pod.clone());
        let reused = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(b.eval_bool(standard), Ok(true));
        }
        let reused = reused.elapsed() / n;
        println!("standard expression: {fresh:?} per evaluation with fresh bindings, {reused:?} with one bindings");
        let library = "object.spec.containers.all(c, quantity(c.resources.limits.memory).isLessThan(quantity('1Gi')) && c.name.matches('^c[0-9]$'))";
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(b.eval_bool(library), Ok(true));
        }
        println!("library expression: {:?} per evaluation with one bindings", t.elapsed() / n);
    }

    #[test]
    fn syntax_errors_are_compilation_failures() {
        let e = compile("object.spec.replicas <= ").expect_err("error");
        assert!(e.starts_with("compilation failed: "), "{e}");
        assert!(!e.contains('\n'));
    }
}
