//! Kubernetes' authorizer library: the `authorizer` variable of policies and webhook
//! matchConditions, and its checks, judged for the request's user by the API's authorization
//! chain (`crate::authz::decide`, the caches as they stand; no wait for them to catch up):
//! - `authorizer.group(g).resource(r)` then optionally `.subresource(s)`, `.namespace(ns)`,
//!   `.name(n)`, `.fieldSelector(s)`, `.labelSelector(s)`, then `.check(verb)`;
//! - `authorizer.path(p).check(httpVerb)` for a non-resource path;
//! - `authorizer.serviceAccount(ns, name)` for the same checks as that service account;
//! - `authorizer.requestResource`: a resource check of the request's own resource;
//! - a Decision's `allowed()`, `reason()`, `errored()`, `error()`.
//!
//! The functions are registered once in the shared root context, so they cannot hold the API:
//! an evaluation that has an authorizer gives its context a [`Scope`] (the API's decision and
//! the user, borrowed for the evaluation) as variable resolver, and `check` asks it through a
//! variable name no expression can write. Label selectors are carried but RBAC, like
//! upstream's, does not look at them.

use std::borrow::Cow;

use cel::common::traits::Indexer;
use cel::common::types::Type;
use cel::common::value::Val;
use cel::context::VariableResolver;
use cel::objects::Opaque;
use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};
use serde::{Deserialize, Serialize};

use super::{opaque, string, wrap, Call};
use crate::authz::attributes::{Attributes, ResourceTarget, Target};
use crate::User;

/// What decides a check: the API's authorization chain, or a test's stand-in.
pub trait Decider: Send + Sync {
    fn decide(&self, a: &Attributes) -> crate::authz::Decision;
}

impl Decider for crate::Api {
    fn decide(&self, a: &Attributes) -> crate::authz::Decision {
        crate::authz::decide(self, a)
    }
}

/// The request an evaluation's `authorizer` speaks for.
pub struct Scope<'a> {
    decider: &'a dyn Decider,
    user: User,
    request: ResourceCheck,
}

impl<'a> Scope<'a> {
    /// The authorizer of `user`'s request on `group`/`resource`/`subresource`, object
    /// `namespace`/`name` (`authorizer.requestResource`).
    pub fn new(decider: &'a dyn Decider, user: User, group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Self {
        let request = ResourceCheck {
            principal: None,
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        };
        Scope { decider, user, request }
    }

    /// The `authorizer` variable.
    pub(crate) fn variable(&self) -> Box<dyn Val> {
        Box::new(AuthorizerVariable { request: self.request.clone() })
    }

    fn answer(&self, q: &Query) -> Decision {
        let user = match &q.principal {
            Some((ns, name)) => crate::authn::serviceaccount::user_of(ns, name, ""),
            None => self.user.clone(),
        };
        let target = match &q.path {
            Some(path) => Target::Path(path.clone()),
            None => Target::Resource(ResourceTarget {
                group: q.group.clone(),
                version: "*".into(),
                resource: q.resource.clone(),
                subresource: q.subresource.clone(),
                namespace: q.namespace.clone(),
                name: q.name.clone(),
                field_selector: q.field_selector.clone(),
            }),
        };
        match self.decider.decide(&Attributes { user, verb: q.verb.clone(), target }) {
            crate::authz::Decision::Allow(reason) => Decision { allowed: true, reason },
            crate::authz::Decision::Refuse(reason) => Decision { allowed: false, reason },
        }
    }
}

/// The variable name `check` asks a [`Scope`] through (a NUL cannot be in an identifier).
const QUERY: &str = "\u{0}berth.authz\u{0}";

impl VariableResolver for Scope<'_> {
    fn resolve(&self, variable: &str) -> Option<Value> {
        let q: Query = serde_json::from_str(variable.strip_prefix(QUERY)?).ok()?;
        Some(wrap(self.answer(&q)))
    }
}

/// One check, as `check` sends it to the scope.
#[derive(Serialize, Deserialize, Default)]
struct Query {
    principal: Option<(String, String)>,
    verb: String,
    path: Option<String>,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    field_selector: String,
}

/// The `authorizer` variable: an Authorizer of the request's user that also has the field
/// `requestResource`.
#[derive(Debug, Clone)]
struct AuthorizerVariable {
    request: ResourceCheck,
}

static AUTHORIZER_TYPE: Type = Type::new_unspecified_type("kubernetes.authorization.Authorizer");

impl Val for AuthorizerVariable {
    fn get_type(&self) -> &Type {
        &AUTHORIZER_TYPE
    }
    fn as_indexer(&self) -> Option<&dyn Indexer> {
        Some(self)
    }
    fn into_indexer(self: Box<Self>) -> Option<Box<dyn Indexer>> {
        Some(self)
    }
    fn clone_as_boxed(&self) -> Box<dyn Val> {
        Box::new(self.clone())
    }
}

impl Indexer for AuthorizerVariable {
    fn get<'a>(&'a self, idx: &dyn Val) -> Result<Cow<'a, dyn Val>, ExecutionError> {
        match <&str>::try_from(idx) {
            Ok("requestResource") => Ok(Cow::Owned(Box::<dyn Val>::try_from(wrap(self.request.clone()))?)),
            Ok(other) => Err(ExecutionError::no_such_key(other)),
            Err(_) => Err(ExecutionError::NoSuchOverload),
        }
    }
    fn steal(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val>, ExecutionError> {
        self.get(idx).map(Cow::into_owned)
    }
}

/// An Authorizer for a service account (`authorizer.serviceAccount(ns, name)`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authorizer {
    principal: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PathCheck {
    principal: Option<(String, String)>,
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupCheck {
    principal: Option<(String, String)>,
    group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ResourceCheck {
    principal: Option<(String, String)>,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    field_selector: String,
    label_selector: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Decision {
    allowed: bool,
    reason: String,
}

macro_rules! opaque_type {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Opaque for $t {
            fn runtime_type_name(&self) -> &str {
                $name
            }
        }
    )*};
}

opaque_type!(
    Authorizer => "kubernetes.authorization.Authorizer",
    PathCheck => "kubernetes.authorization.PathCheck",
    GroupCheck => "kubernetes.authorization.GroupCheck",
    ResourceCheck => "kubernetes.authorization.ResourceCheck",
    Decision => "kubernetes.authorization.Decision",
);

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function("path", |ftx: &FunctionContext| -> ResolveResult {
        let (principal, call) = authorizer(ftx)?;
        let [Value::String(path)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
        if path.trim().is_empty() {
            return Err(call.error("path must not be empty"));
        }
        Ok(wrap(PathCheck { principal, path: path.to_string() }))
    });
    ctx.add_function("group", |ftx: &FunctionContext| -> ResolveResult {
        let (principal, call) = authorizer(ftx)?;
        let [Value::String(group)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
        Ok(wrap(GroupCheck { principal, group: group.to_string() }))
    });
    ctx.add_function("serviceAccount", |ftx: &FunctionContext| -> ResolveResult {
        let (_, call) = authorizer(ftx)?;
        let [Value::String(ns), Value::String(name)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
        if !berth_names::dns1123_subdomain(name).is_empty() {
            return Err(call.error("Invalid service account name"));
        }
        if !berth_names::dns1123_label(ns).is_empty() {
            return Err(call.error("Invalid service account namespace"));
        }
        Ok(wrap(Authorizer { principal: Some((ns.to_string(), name.to_string())) }))
    });
    ctx.add_function("resource", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        let g = opaque::<GroupCheck>(call.receiver()?).ok_or(ExecutionError::NoSuchOverload)?;
        let [Value::String(resource)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
        if resource.trim().is_empty() {
            return Err(call.error("resource must not be empty"));
        }
        Ok(wrap(ResourceCheck { principal: g.principal.clone(), group: g.group.clone(), resource: resource.to_string(), ..Default::default() }))
    });
    ctx.add_function("subresource", |ftx: &FunctionContext| narrow(ftx, |r, s| r.subresource = s));
    ctx.add_function("namespace", |ftx: &FunctionContext| narrow(ftx, |r, s| r.namespace = s));
    ctx.add_function("name", |ftx: &FunctionContext| narrow(ftx, |r, s| r.name = s));
    ctx.add_function("fieldSelector", |ftx: &FunctionContext| narrow(ftx, |r, s| r.field_selector = s));
    ctx.add_function("labelSelector", |ftx: &FunctionContext| narrow(ftx, |r, s| r.label_selector = s));
    ctx.add_function("check", check);
    ctx.add_function("allowed", |ftx: &FunctionContext| decision(ftx, |d| Value::Bool(d.allowed)));
    ctx.add_function("reason", |ftx: &FunctionContext| decision(ftx, |d| string(d.reason.clone())));
    ctx.add_function("errored", |ftx: &FunctionContext| decision(ftx, |_| Value::Bool(false)));
    ctx.add_function("error", |ftx: &FunctionContext| decision(ftx, |_| string("")));
}

/// The principal of an Authorizer receiver (None: the request's user) and the call.
fn authorizer<'f, 'c, 'n>(ftx: &'f FunctionContext<'c, 'n>) -> Result<(Option<(String, String)>, Call<'f, 'c, 'n>), ExecutionError> {
    if ftx.this.as_ref().is_some_and(|t| t.downcast_ref::<AuthorizerVariable>().is_some()) {
        // the variable has no Value form: take the arguments alone
        let args = ftx.args.iter().map(|a| Value::try_from(a.as_ref())).collect::<Result<Vec<_>, _>>()?;
        return Ok((None, Call { ftx, this: None, args }));
    }
    let call = Call::of(ftx)?;
    let principal = opaque::<Authorizer>(call.receiver()?).ok_or(ExecutionError::NoSuchOverload)?.principal.clone();
    Ok((principal, call))
}

/// A ResourceCheck with one more restriction.
fn narrow(ftx: &FunctionContext, set: impl Fn(&mut ResourceCheck, String)) -> ResolveResult {
    let call = Call::of(ftx)?;
    let mut r = opaque::<ResourceCheck>(call.receiver()?).ok_or(ExecutionError::NoSuchOverload)?.clone();
    let [Value::String(s)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
    set(&mut r, s.to_string());
    Ok(wrap(r))
}

fn check(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let [Value::String(verb)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
    let this = call.receiver()?;
    let query = if let Some(p) = opaque::<PathCheck>(this) {
        Query { principal: p.principal.clone(), verb: verb.to_string(), path: Some(p.path.clone()), ..Default::default() }
    } else if let Some(r) = opaque::<ResourceCheck>(this) {
        Query {
            principal: r.principal.clone(),
            verb: verb.to_string(),
            path: None,
            group: r.group.clone(),
            resource: r.resource.clone(),
            subresource: r.subresource.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            field_selector: r.field_selector.clone(),
        }
    } else {
        return Err(ExecutionError::NoSuchOverload);
    };
    let key = format!("{QUERY}{}", serde_json::to_string(&query).map_err(|e| call.error(e))?);
    let answer = ftx.ptx.get_variable(&key).ok_or_else(|| call.error("no authorizer in this evaluation"))?;
    Value::try_from(answer.as_ref())
}

fn decision(ftx: &FunctionContext, f: impl Fn(&Decision) -> Value) -> ResolveResult {
    let call = Call::of(ftx)?;
    if !call.args.is_empty() {
        return Err(ExecutionError::NoSuchOverload);
    }
    opaque::<Decision>(call.receiver()?).map(f).ok_or(ExecutionError::NoSuchOverload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::policy::expr::Bindings;
    use crate::authz::Decision as Chain;
    use serde_json::json;

    /// Allows alice to get pods in `default` and the service account default/robot to delete
    /// deployments anywhere, and GET on /healthz; records nothing else.
    struct Rules;

    impl Decider for Rules {
        fn decide(&self, a: &Attributes) -> Chain {
            let ok = match (&a.user.name[..], &a.verb[..], &a.target) {
                ("alice", "get", Target::Resource(r)) => r.group.is_empty() && r.resource == "pods" && r.namespace == "default" && r.version == "*",
                ("alice", "get", Target::Path(p)) => p == "/healthz",
                ("alice", "approve", Target::Resource(r)) => r.resource == "certificatesigningrequests" && r.subresource == "approval" && r.name == "csr-1",
                ("system:serviceaccount:default:robot", "delete", Target::Resource(r)) => {
                    r.group == "apps" && r.resource == "deployments" && a.user.groups.contains(&"system:serviceaccounts:default".to_string())
                }
                _ => false,
            };
            if ok {
                Chain::Allow(format!("allowed {} {}", a.user.name, a.verb))
            } else {
                Chain::Refuse("no rule".into())
            }
        }
    }

    #[test]
    fn the_authorizer_checks_through_the_decider_for_the_user() {
        let scope =
            Scope::new(&Rules, User::new("alice", &["system:authenticated"]), "certificates.k8s.io", "certificatesigningrequests", "approval", "", "csr-1");
        let b = Bindings::new(Some(&scope));
        let cases = [
            ("authorizer.group('').resource('pods').namespace('default').check('get').allowed()", json!(true)),
            ("authorizer.group('').resource('pods').namespace('other').check('get').allowed()", json!(false)),
            ("authorizer.group('').resource('pods').namespace('default').check('get').reason()", json!("allowed alice get")),
            ("authorizer.group('').resource('pods').check('list').reason()", json!("no rule")),
            ("authorizer.group('').resource('pods').namespace('default').check('get').errored()", json!(false)),
            ("authorizer.group('').resource('pods').namespace('default').check('get').error()", json!("")),
            ("authorizer.path('/healthz').check('get').allowed()", json!(true)),
            ("authorizer.path('/readyz').check('get').allowed()", json!(false)),
            ("authorizer.serviceAccount('default', 'robot').group('apps').resource('deployments').check('delete').allowed()", json!(true)),
            ("authorizer.serviceAccount('default', 'robot').group('').resource('pods').namespace('default').check('get').allowed()", json!(false)),
            ("authorizer.requestResource.check('approve').allowed()", json!(true)),
            ("authorizer.requestResource.name('csr-2').check('approve').allowed()", json!(false)),
            ("[1].all(x, authorizer.group('').resource('pods').namespace('default').check('get').allowed())", json!(true)),
        ];
        for (expression, want) in cases {
            assert_eq!(b.eval(expression), Ok(want), "{expression}");
        }
        for (expression, want) in [
            ("authorizer.path('  ')", "path must not be empty"),
            ("authorizer.group('apps').resource('')", "resource must not be empty"),
            ("authorizer.serviceAccount('default', 'invalid@*name')", "Invalid service account name"),
            ("authorizer.serviceAccount('not@a#valid!namespace', 'validname')", "Invalid service account namespace"),
            ("authorizer.requestResource.check(1)", "no such overload"),
        ] {
            let e = b.eval(expression).expect_err(expression);
            assert!(e.contains(want), "{expression}: {e}");
        }
        // without an authorizer there is no such variable
        let plain = Bindings::default();
        assert!(plain.eval("authorizer.path('/healthz').check('get').allowed()").expect_err("no authorizer").contains("authorizer"));
    }
}
