//! The HTTP adapter: parses a request (API path, query, headers, body), calls the verb on
//! [`Api`], and encodes the answer (object, list, Table, watch stream, Status). Everything a
//! Kubernetes client sends comes through [`router`], over TLS or in-process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tracing::Instrument;

use super::delete::DeleteOptions;
use super::read::ListMeta;
use super::watch::WatchRequest;
use super::{FieldValidation, ListOptions, Subresource, WriteOptions, Written};
use crate::api::Api;
use crate::content::{self, json_response};
use crate::patch::PatchType;
use crate::resources::Resource;
use crate::status::ApiError;
use crate::table::{self, IncludeObject};
use crate::{authn, authz, discovery, openapi, User};

/// The largest request body accepted (etcd's request limit plus room).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// How long a watch lasts when the client does not say (upstream: 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The router of the whole API. Requests must carry an authenticated [`User`] extension
/// (the TLS listener adds it from the client certificate; in-process callers add their own).
pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(dispatch).with_state(api)
}

/// The router for an in-process caller (controllers, scheduler, the local node agent): the
/// same door as HTTPS, every request made as `user`, no TCP.
pub fn in_process(api: Arc<Api>, user: User) -> Router {
    router(api).layer(axum::Extension(user))
}

async fn dispatch(State(api): State<Arc<Api>>, req: Request) -> Response {
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
    let mut audited = None;
    let served = if api.config.audit.is_some() {
        let (served, notes) = crate::audit::annotations::collect(serve(api.clone(), req, &mut audited).instrument(span)).await;
        if let Some(entry) = audited.as_mut() {
            entry.annotate(notes);
        }
        served
    } else {
        serve(api.clone(), req, &mut audited).instrument(span).await
    };
    let response = match served {
        Ok(r) => r,
        Err(e) => {
            if e.code >= 500 {
                tracing::warn!(code = e.code, message = %e.message, "request failed");
            }
            e.into_response()
        }
    };
    match (audited, api.config.audit.as_ref()) {
        (Some(entry), Some(auditor)) => audit_complete(auditor, entry, response).await,
        _ => response,
    }
}

/// Writes the audit line of a finished request (with its JSON answer when the level keeps it).
async fn audit_complete(auditor: &crate::audit::Auditor, entry: crate::audit::Entry, response: Response) -> Response {
    let code = response.status().as_u16();
    let json = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
    if !entry.wants_response() || entry.long_running() || code == 101 || !json {
        auditor.complete(entry, code, None);
        return response;
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            auditor.complete(entry, code, serde_json::from_slice(&bytes).ok());
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
        Err(e) => {
            auditor.complete(entry, code, None);
            ApiError::internal(format!("reading the answer: {e}")).into_response()
        }
    }
}

type Params = HashMap<String, String>;

fn text(code: StatusCode, body: &'static str) -> Response {
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
}

async fn serve(api: Arc<Api>, req: Request, audited: &mut Option<crate::audit::Entry>) -> Result<Response, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    // the anonymous user reads only what authentication lets it (no authorization after that)
    let mut anonymous = false;
    // who asked to act as another user
    let mut impersonator = None;
    let user = match req.extensions().get::<User>().cloned() {
        // in-process callers come with their user
        Some(u) => u,
        None => {
            let cert = req.extensions().get::<authn::ClientCertificate>().map(|c| c.0.clone());
            let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
            let user = match api.authn.authenticate(&api, cert, authorization).await {
                authn::Outcome::User(u) => u,
                authn::Outcome::Anonymous if authn::anonymous_may_read(&path) => {
                    anonymous = true;
                    authn::anonymous()
                }
                authn::Outcome::Anonymous if req.method() == Method::GET && authn::anonymous_may_get(&path) => {
                    anonymous = true;
                    authn::anonymous()
                }
                authn::Outcome::Anonymous => return Err(ApiError::unauthorized()),
                authn::Outcome::Failed(why) => {
                    tracing::debug!(%why, "authentication failed");
                    return Err(ApiError::unauthorized());
                }
            };
            if !anonymous && authz::impersonation::requested(req.headers()) {
                let acting = authz::impersonation::impersonate(&api, &user, req.headers()).await?;
                impersonator = Some(user);
                acting
            } else {
                user
            }
        }
    };
    let params: Params = Query::<Params>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    let attrs = authz::attributes::Attributes::of_request(&user, req.method().as_str(), &path, &params);
    if let Some(auditor) = &api.config.audit {
        let uri = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let source_ip = req.extensions().get::<crate::serve::Peer>().map(|p| p.0.ip().to_string());
        let (by, acting) = match &impersonator {
            Some(i) => (i, Some(&user)),
            None => (&user, None),
        };
        *audited = auditor.begin(crate::audit::Request { user: by, impersonated: acting, attrs: &attrs, uri: &uri, source_ip, user_agent });
    }
    if ["/healthz", "/livez", "/readyz"].iter().any(|p| path == *p || path.starts_with(&format!("{p}/"))) {
        return Ok(text(StatusCode::OK, "ok"));
    }
    if !anonymous {
        let (allowed, reason) = authorize(&api, &attrs).await;
        if let Some(a) = audited.as_mut() {
            a.forbidden = allowed.is_err();
            a.authorization_reason = reason;
        }
        allowed?;
    }
    let mut headers = req.headers().clone();
    // an answer the audit log records whole is sent as JSON (what the client also accepts)
    if audited.as_ref().is_some_and(|a| a.wants_response()) && content::wants_protobuf(&headers) {
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    }
    let method = req.method().clone();
    let aggregated = content::wants_aggregated(&headers);
    let reg_arc = api.registry();
    let reg = reg_arc.as_ref();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match segs.as_slice() {
        ["version"] => return ok(discovery::version()),
        [".well-known", "openid-configuration"] => {
            return Ok(public_json(api.authn.openid_configuration(&api.config.advertise_address), "application/json"));
        }
        ["openid", "v1", "jwks"] => return Ok(public_json(api.authn.jwks(), "application/jwk-set+json")),
        ["api"] => {
            return match aggregated {
                Some(v) => Ok(aggregated_response(discovery::aggregated(reg, true, v), v)),
                None => ok(discovery::api_versions(&api.config.advertise_address)),
            }
        }
        ["apis"] => {
            return match aggregated {
                Some(v) => Ok(aggregated_response(discovery::aggregated(reg, false, v), v)),
                None => ok(discovery::api_group_list(reg)),
            }
        }
        ["api", v] => return discovery::resource_list(reg, "", v).map_or(Err(ApiError::path_not_found()), ok),
        ["apis", g] => return discovery::api_group(reg, g).map_or(Err(ApiError::path_not_found()), ok),
        ["apis", g, v] => return discovery::resource_list(reg, g, v).map_or(Err(ApiError::path_not_found()), ok),
        ["openapi", "v2"] if content::accepts_json_only(&headers) => return ok((*openapi::v2_json(reg)).clone()),
        ["openapi", "v2"] => return Ok(openapi::v2(reg)),
        ["openapi", "v3"] => return ok(openapi::index(reg)),
        ["openapi", "v3", rest @ ..] => return openapi::group_version(reg, &rest.join("/")).map_or(Err(ApiError::path_not_found()), |d| ok((*d).clone())),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    // The deprecated watch paths (/api/v1/watch/..., /apis/G/V/watch/...): a watch of the
    // collection, or of one object by name.
    let (legacy_watch, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        other => (false, other),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !(tail.is_empty() || tail.len() == 1 && matches!(tail[0], "status" | "finalize")) => (Some(ns.to_string()), tail),
        other => (None, other),
    };
    // pods/log, pods/exec, ..., nodes/proxy: answered by the node's kubelet, the request whole.
    if let Some(target) = super::connect::parse(group, version, ns.as_deref(), rest) {
        if legacy_watch {
            return Err(ApiError::path_not_found());
        }
        return super::connect::serve(&api, target, req).await;
    }
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return Err(ApiError::path_not_found()),
    };
    let mut params = params;
    let (name, sub) = if legacy_watch {
        if sub.is_some() || method != Method::GET {
            return Err(ApiError::path_not_found());
        }
        params.insert("watch".into(), "true".into());
        if let Some(n) = &name {
            let by_name = format!("metadata.name={n}");
            let fields = match params.get("fieldSelector").filter(|f| !f.is_empty()) {
                Some(f) => format!("{f},{by_name}"),
                None => by_name,
            };
            params.insert("fieldSelector".into(), fields);
        }
        (None, None)
    } else {
        (name, sub)
    };
    let res = reg.lookup(group, version, plural).cloned().ok_or_else(ApiError::path_not_found)?;
    if ns.is_some() && !res.namespaced {
        return Err(ApiError::path_not_found());
    }
    if res.resource_metrics {
        if sub.is_some() {
            return Err(ApiError::path_not_found());
        }
        return crate::metrics::serve::answer(&api, &res, ns.as_deref(), name.as_deref(), &method, &params, &headers).await;
    }
    let sub = match sub {
        None => Subresource::Main,
        Some("status") if res.status => Subresource::Status,
        Some("scale") if res.scale.is_some() => Subresource::Scale,
        Some("approval") if res.approval => Subresource::Approval,
        Some("finalize") if res.finalize => Subresource::Finalize,
        Some(a) => match res.actions.iter().find(|x| x.name == a) {
            Some(x) => Subresource::Action(x.name),
            None => return Err(ApiError::path_not_found()),
        },
    };
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            ApiError { code: 413, reason: "RequestEntityTooLarge", message: format!("Request entity too large: limit is {MAX_BODY}"), details: None }
        } else {
            ApiError::bad_request(format!("reading the request body: {e}"))
        }
    })?;
    if let Some(a) = audited.as_mut().filter(|a| a.wants_request() && !body.is_empty()) {
        a.request_object = content::decode_body(&headers, &body).ok();
    }
    if res.review {
        return match (method, name, sub) {
            (Method::POST, None, Subresource::Main) => {
                let body = content::decode_body(&headers, &body)?;
                let answer = crate::review::answer(&api, &user, &res, ns.as_deref(), body).await?;
                Ok(json_response(StatusCode::CREATED, &answer))
            }
            (m, _, _) => Err(ApiError::method_not_allowed(m.as_str())),
        };
    }
    let deprecation = res.deprecation.clone();
    let req = Req { api, res, ns, params, headers, user };
    let mut answer = req.answer(method, name, sub, &body).await;
    if let (Some(w), Ok(r)) = (deprecation, answer.as_mut()) {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {}", Value::String(w.to_string()))) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    answer
}

impl Req {
    /// The answer to a request for a resource (or one of its objects or subresources).
    async fn answer(&self, method: Method, name: Option<String>, sub: Subresource, body: &[u8]) -> Result<Response, ApiError> {
        if let Subresource::Action(action) = sub {
            return match (method, name) {
                (Method::POST, Some(name)) => self.act(&name, action, body).await,
                (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
            };
        }
        if sub == Subresource::Finalize && method != Method::PUT {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        match (method, name) {
            (Method::GET, None) if flag(&self.params, "watch") => self.watch().await,
            (Method::GET, None) => {
                self.check_list_options(false)?;
                self.list().await
            }
            (Method::GET, Some(name)) => self.get(&name, sub).await,
            (Method::POST, None) => self.create(body).await,
            (Method::PUT, Some(name)) => self.update(&name, sub, body).await,
            (Method::PATCH, Some(name)) => self.patch(&name, sub, body).await,
            (Method::DELETE, Some(name)) if sub == Subresource::Main => self.delete(&name, body).await,
            (Method::DELETE, None) => self.delete_collection(body).await,
            (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
        }
    }
}

/// Authorizes a request before anything reads it. A WebSocket GET of pods/exec, attach or
/// portforward also needs `create` there, as upstream checks since 1.30.
/// Whether the request may go on (upstream's 403 if not), and the authorizers' reason.
async fn authorize(api: &Api, attrs: &authz::attributes::Attributes) -> (Result<(), ApiError>, String) {
    let reason = match authz::authorize(api, attrs).await {
        authz::Decision::Allow(why) => why,
        authz::Decision::Refuse(why) => return (Err(authz::forbidden(attrs, &why)), why),
    };
    if let Some(r) = attrs.resource_target() {
        if attrs.verb == "get" && r.group.is_empty() && r.resource == "pods" && matches!(r.subresource.as_str(), "exec" | "attach" | "portforward") {
            let create = authz::attributes::Attributes { verb: "create".into(), ..attrs.clone() };
            if let authz::Decision::Refuse(why) = authz::authorize(api, &create).await {
                return (Err(authz::forbidden(&create, &why)), why);
            }
        }
    }
    (Ok(()), reason)
}

fn flag(params: &Params, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// A public document (the OIDC ones): `content_type`, cacheable for an hour as upstream serves them.
fn public_json(body: Value, content_type: &'static str) -> Response {
    let mut r = json_response(StatusCode::OK, &body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

fn aggregated_response(body: Value, version: &str) -> Response {
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    let mut r = json_response(StatusCode::OK, &body);
    if let Ok(v) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// One parsed resource request.
struct Req {
    api: Arc<Api>,
    res: Arc<Resource>,
    ns: Option<String>,
    params: Params,
    headers: HeaderMap,
    /// Who asks.
    user: User,
}

impl Req {
    fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    fn table(&self) -> Result<Option<IncludeObject>, ApiError> {
        if content::wants_table(&self.headers) {
            IncludeObject::parse(self.param("includeObject")).map(Some).map_err(ApiError::bad_request)
        } else {
            Ok(None)
        }
    }

    fn write_options(&self) -> Result<WriteOptions, ApiError> {
        let dry_run = match self.param("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => return Err(ApiError::bad_request(format!("Invalid dry run value: {other:?}: supported values: \"All\""))),
        };
        let user_agent = self.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let field_manager = match self.param("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => Some(m.to_string()),
            None => Some(crate::managed::manager_from_user_agent(user_agent)).filter(|m| !m.is_empty()),
        };
        Ok(WriteOptions { dry_run, field_validation: FieldValidation::parse(self.param("fieldValidation"))?, field_manager, user: Some(self.user.clone()) })
    }

    fn list_options(&self) -> Result<ListOptions, ApiError> {
        let mut opts = ListOptions::new(&self.res, self.param("labelSelector"), self.param("fieldSelector"))?;
        opts.limit = match self.param("limit") {
            None | Some("") | Some("0") => None,
            Some(l) => Some(l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?),
        };
        opts.continue_token = self.param("continue").filter(|c| !c.is_empty()).map(String::from);
        opts.resource_version = self.param("resourceVersion").filter(|c| !c.is_empty()).map(String::from);
        if opts.continue_token.is_some() && opts.resource_version.as_deref().is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        Ok(opts)
    }

    /// Whether to answer with a `kind` (of this resource's version) in protobuf.
    fn protobuf(&self, kind: &str) -> bool {
        content::wants_protobuf(&self.headers) && crate::protobuf::has_message(&self.res.api_version(), kind)
    }

    /// `body` (a `kind` of this resource's version) in protobuf when the client prefers it and
    /// the kind has a message, else JSON.
    fn encoded(&self, code: StatusCode, kind: &str, body: &Value) -> Response {
        if self.protobuf(kind) {
            match crate::protobuf::encode(&self.res.api_version(), kind, body) {
                Ok(bytes) => return content::protobuf_response(code, bytes),
                Err(e) => tracing::warn!(kind, error = %e, "encoding protobuf failed; answering JSON"),
            }
        }
        json_response(code, body)
    }

    /// An object answer (Table when asked for).
    fn object(&self, code: StatusCode, obj: &Value, warnings: &[String]) -> Result<Response, ApiError> {
        let mut r = match self.table()? {
            Some(include) => {
                let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
                json_response(code, &table::table(&self.res, std::slice::from_ref(obj), json!({"resourceVersion": rv}), include, true))
            }
            None => self.encoded(code, self.res.kind, &self.res.served(obj.clone())),
        };
        for w in warnings {
            if let Ok(v) = HeaderValue::from_str(&format!("299 - {}", serde_json::Value::String(w.clone()))) {
                r.headers_mut().append(header::WARNING, v);
            }
        }
        Ok(r)
    }

    /// The list metadata of an answer.
    fn list_metadata(meta: ListMeta) -> Value {
        let mut m = json!({"resourceVersion": meta.resource_version.to_string()});
        if let Some(c) = meta.continue_token {
            m["continue"] = json!(c);
        }
        if let Some(n) = meta.remaining {
            m["remainingItemCount"] = json!(n);
        }
        m
    }

    fn list_answer(&self, items: Vec<Value>, meta: ListMeta) -> Result<Response, ApiError> {
        let m = Self::list_metadata(meta);
        if let Some(include) = self.table()? {
            return Ok(json_response(StatusCode::OK, &table::table(&self.res, &items, m, include, true)));
        }
        let items: Vec<Value> = items
            .into_iter()
            .map(|o| {
                let mut o = self.res.served(o);
                if let Some(map) = o.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                o
            })
            .collect();
        // Built by moving the items in (json! would copy each of them).
        let kind = format!("{}List", self.res.kind);
        let mut list = serde_json::Map::new();
        list.insert("kind".into(), json!(kind));
        list.insert("apiVersion".into(), json!(self.res.api_version()));
        list.insert("metadata".into(), m);
        list.insert("items".into(), Value::Array(items));
        Ok(self.encoded(StatusCode::OK, &kind, &Value::Object(list)))
    }

    async fn get(&self, name: &str, sub: Subresource) -> Result<Response, ApiError> {
        let obj = self.api.get(&self.res, self.ns(), name, self.param("resourceVersion")).await?;
        if sub == Subresource::Scale {
            let scale = self.api.scale_of(&self.res, &obj)?;
            return Ok(match self.table()? {
                Some(include) => json_response(StatusCode::OK, &table::scale_table(&scale, include)),
                None => json_response(StatusCode::OK, &scale),
            });
        }
        self.object(StatusCode::OK, &obj, &[])
    }

    async fn list(&self) -> Result<Response, ApiError> {
        let opts = self.list_options()?;
        let kind = format!("{}List", self.res.kind);
        if self.table()?.is_none() && self.res.view.is_none() && !self.protobuf(&kind) {
            // Objects served as stored, in JSON: the answer is their JSON one after the other.
            let (items, meta) = self.api.list_encoded(&self.res, self.ns(), &opts).await?;
            let body = crate::encoded::list_body(&self.res.api_version(), &kind, &Self::list_metadata(meta), items.iter().map(|o| o.encoded.item()))
                .map_err(ApiError::internal)?;
            return Ok(content::json_bytes_response(StatusCode::OK, body));
        }
        let (items, meta) = self.api.list(&self.res, self.ns(), &opts).await?;
        self.list_answer(items, meta)
    }

    /// `sendInitialEvents` (None when absent).
    fn send_initial_events(&self) -> Result<Option<bool>, ApiError> {
        match self.param("sendInitialEvents") {
            None | Some("") => Ok(None),
            Some("true") | Some("1") | Some("True") | Some("TRUE") | Some("t") | Some("T") => Ok(Some(true)),
            Some("false") | Some("0") | Some("False") | Some("FALSE") | Some("f") | Some("F") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!("strconv.ParseBool: parsing {other:?}: invalid syntax"))),
        }
    }

    /// The combinations of resourceVersionMatch, sendInitialEvents and continue upstream refuses
    /// (422 Invalid ListOptions), for a list or a watch.
    fn check_list_options(&self, watch: bool) -> Result<(), ApiError> {
        use crate::status::FieldError;
        let send_initial = self.send_initial_events()?;
        let rv_match = self.param("resourceVersionMatch").unwrap_or("");
        let has_continue = self.param("continue").is_some_and(|c| !c.is_empty());
        let mut errs = vec![];
        if watch {
            if send_initial.is_some() && rv_match != "NotOlderThan" {
                errs.push(FieldError::forbidden("resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
            }
            if !rv_match.is_empty() {
                if send_initial.is_none() {
                    errs.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if rv_match != "NotOlderThan" {
                    errs.push(FieldError::not_supported("resourceVersionMatch", rv_match, &["NotOlderThan"]));
                }
                if has_continue {
                    errs.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"));
                }
            }
        } else {
            if !rv_match.is_empty() {
                let rv = self.param("resourceVersion").unwrap_or("");
                if rv.is_empty() {
                    errs.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is provided"));
                }
                if has_continue {
                    errs.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"));
                }
                if rv_match != "Exact" && rv_match != "NotOlderThan" {
                    errs.push(FieldError::not_supported("resourceVersionMatch", rv_match, &["Exact", "NotOlderThan", ""]));
                }
                if rv_match == "Exact" && rv == "0" {
                    errs.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""));
                }
            }
            if send_initial.is_some() {
                errs.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_kind("ListOptions", "meta.k8s.io", "", &errs))
        }
    }

    async fn watch(&self) -> Result<Response, ApiError> {
        self.check_list_options(true)?;
        let list = self.list_options()?;
        let send_initial = self.send_initial_events()?;
        let rv = match self.param("resourceVersion") {
            None | Some("") => None,
            Some(rv) => Some(rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?),
        };
        let from = match (send_initial, rv) {
            // a streaming list: the state (at least as new as rv; for "" as new as the store
            // now, a consistent read), then a bookmark that ends the initial events
            (Some(true), _) => {
                let min = match rv {
                    Some(r) => r,
                    None => self.api.store.current_revision().await.map_err(|e| ApiError::unavailable(e.to_string()))?,
                };
                let cache = self.api.cache(&self.res)?;
                if !cache.wait_for(min, Duration::from_secs(3)).await {
                    return Err(ApiError::timeout(format!("Too large resource version: {min}, current: {}", cache.revision())));
                }
                None
            }
            // no initial events: the changes after rv, or after now
            (Some(false), Some(0) | None) => Some(self.api.cache(&self.res)?.revision()),
            (_, Some(0) | None) => None,
            (_, Some(r)) => Some(r),
        };
        let timeout = match self.param("timeoutSeconds") {
            Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?),
            None => DEFAULT_WATCH_TIMEOUT,
        };
        let req = WatchRequest {
            res: self.res.clone(),
            namespace: self.ns.clone(),
            list,
            from,
            bookmarks: flag(&self.params, "allowWatchBookmarks"),
            initial_events_end: send_initial == Some(true),
            timeout,
            table: self.table()?,
            protobuf: false,
        };
        let protobuf = req.table.is_none() && self.protobuf(self.res.kind);
        let req = WatchRequest { protobuf, ..req };
        let ct = if protobuf { "application/vnd.kubernetes.protobuf;stream=watch" } else { "application/json" };
        let body = self.api.watch_body(req)?;
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(ct)), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))], body)
            .into_response())
    }

    async fn act(&self, name: &str, action: &str, body: &[u8]) -> Result<Response, ApiError> {
        let body = content::decode_body(&self.headers, body)?;
        let status = self.api.act(&self.res, self.ns(), name, action, &body, Some(&self.user)).await?;
        Ok(json_response(StatusCode::CREATED, &status))
    }

    async fn create(&self, body: &[u8]) -> Result<Response, ApiError> {
        let obj = content::decode_body(&self.headers, body)?;
        let w = self.api.create(&self.res, self.ns(), obj, &self.write_options()?).await?;
        self.written(w)
    }

    fn written(&self, w: Written) -> Result<Response, ApiError> {
        let code = if w.created { StatusCode::CREATED } else { StatusCode::OK };
        self.object(code, &w.object, &w.warnings)
    }

    async fn update(&self, name: &str, sub: Subresource, body: &[u8]) -> Result<Response, ApiError> {
        let obj = content::decode_body(&self.headers, body)?;
        let w = self.api.update(&self.res, self.ns(), name, obj, sub, &self.write_options()?).await?;
        self.sub_written(w, sub)
    }

    fn sub_written(&self, w: Written, sub: Subresource) -> Result<Response, ApiError> {
        if sub == Subresource::Scale {
            return Ok(json_response(StatusCode::OK, &self.api.scale_of(&self.res, &w.object)?));
        }
        self.written(w)
    }

    async fn patch(&self, name: &str, sub: Subresource, body: &[u8]) -> Result<Response, ApiError> {
        let ct = content::content_type(&self.headers);
        if ct.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml" {
            let applied = content::decode_body(&self.headers, body)?;
            let applied = if sub == Subresource::Scale { applied } else { self.res.stored(applied) };
            let manager = self.param("fieldManager").unwrap_or("");
            let force = flag(&self.params, "force");
            let w = self.api.apply(&self.res, self.ns(), name, &applied, manager, force, sub, &self.write_options()?).await?;
            return self.sub_written(w, sub);
        }
        let kind = match PatchType::from_content_type(&ct) {
            Some(PatchType::Strategic) if self.res.custom => return Err(crate::crd::strategic_merge_unsupported()),
            Some(k) => k,
            None => return Err(ApiError::unsupported_media_type(&ct)),
        };
        let patch = content::decode_body(&self.headers, body)?;
        let w = self.api.patch(&self.res, self.ns(), name, kind, &patch, sub, &self.write_options()?).await?;
        self.sub_written(w, sub)
    }

    fn delete_options(&self, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
            DeleteOptions::default()
        } else {
            let v = content::decode_body(&self.headers, body)?;
            serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        if let Some(g) = self.param("gracePeriodSeconds") {
            opts.grace_period_seconds = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}")))?);
        }
        if let Some(p) = self.param("propagationPolicy") {
            opts.propagation_policy = Some(p.to_string());
        }
        if self.param("dryRun") == Some("All") {
            opts.dry_run = Some(vec!["All".into()]);
        }
        opts.user = Some(self.user.clone());
        Ok(opts)
    }

    async fn delete(&self, name: &str, body: &[u8]) -> Result<Response, ApiError> {
        let opts = self.delete_options(body)?;
        let obj = self.api.delete(&self.res, self.ns(), name, &opts).await?;
        let pending = obj.pointer("/metadata/deletionTimestamp").is_some() && opts.dry_run.is_none();
        if pending {
            // upstream's rule: 202 only for an object still there after a delete that asked, the
            // deprecated way, not to orphan its dependents; else 200 with the object
            let code = if opts.orphan_dependents == Some(false) { StatusCode::ACCEPTED } else { StatusCode::OK };
            return Ok(json_response(code, &self.res.served(obj)));
        }
        if self.res.return_deleted {
            return Ok(json_response(StatusCode::OK, &self.res.served(obj)));
        }
        let mut details = json!({"name": name, "kind": self.res.plural, "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(json!(""))});
        if !self.res.group.is_empty() {
            details["group"] = json!(self.res.group);
        }
        Ok(json_response(StatusCode::OK, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})))
    }

    async fn delete_collection(&self, body: &[u8]) -> Result<Response, ApiError> {
        if !self.res.verbs.contains(&"deletecollection") {
            return Err(ApiError::method_not_allowed("deletecollection"));
        }
        let opts = self.delete_options(body)?;
        let list = self.list_options()?;
        let items = self.api.delete_collection(&self.res, self.ns(), &list, &opts).await?;
        let rv = self.api.store.current_revision().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.list_answer(items, ListMeta { resource_version: rv, ..Default::default() })
    }
}
