//! The TokenRequest subresource (`POST .../serviceaccounts/NAME/token`, what `kubectl create
//! token` calls): checks the request and the object the token is bound to (a Pod, Secret or
//! Node, which must exist), and answers with a signed bound token and its expiry. Nothing is
//! stored.

use std::sync::Arc;

use serde_json::{json, Value};

use super::jwt::{Claims, KubernetesClaim, Ref};
use super::serviceaccount::{uid, user_name, Issuer};
use crate::api::Api;
use crate::status::{ApiError, FieldError};

/// Tokens may not be shorter-lived than this (seconds).
const MIN_EXPIRATION: i64 = 600;
const DEFAULT_EXPIRATION: i64 = 3600;
/// What the kubelet asks for pod tokens: upstream gives such tokens a year, with a `warnafter`
/// at the asked time (`--service-account-extend-token-expiration`, on by default).
const WARN_ONLY_EXPIRATION: i64 = 3607;
const EXTENDED_EXPIRATION: i64 = 365 * 24 * 3600;

/// The bound object of a TokenRequest, looked up and checked: its claim (a pod's with its node's).
enum Bound {
    Pod(Ref, Option<Ref>),
    Secret(Ref),
    Node(Ref),
}

impl Issuer {
    /// Answers a TokenRequest `body` for service account `name` in `namespace`.
    pub async fn request(&self, api: &Arc<Api>, namespace: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        // upstream's order: the names in the body, the service account, then the spec (whose
        // errors name no object)
        for (field, want) in [("name", name), ("namespace", namespace)] {
            if let Some(v) = body.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).filter(|v| !v.is_empty() && *v != want) {
                let err = FieldError::invalid(format!("metadata.{field}"), v, format!("must match the service account {field} if specified"));
                return Err(ApiError::invalid_kind("TokenRequest", "authentication.k8s.io", name, &[err]));
            }
        }
        let sa_res = api.resource("", "serviceaccounts")?;
        let sa = api.get(&sa_res, Some(namespace), name, None).await?;
        let spec = body.get("spec").cloned().unwrap_or(json!({}));
        let mut errs = vec![];
        let expiration = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION,
            Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request(format!("spec.expirationSeconds: expected an integer, got {v}")))?,
        };
        if expiration < MIN_EXPIRATION {
            errs.push(FieldError::invalid("spec.expirationSeconds", expiration, "may not specify a duration less than 10 minutes"));
        } else if expiration > 1 << 32 {
            errs.push(FieldError::invalid("spec.expirationSeconds", expiration, "may not specify a duration larger than 2^32 seconds"));
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid_kind("TokenRequest", "authentication.k8s.io", "", &errs));
        }
        let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            _ => self.audiences.clone(),
        };
        let bound = match spec.get("boundObjectRef").filter(|r| !r.is_null()) {
            None => None,
            Some(r) => Some(bound_object(api, namespace, name, r).await?),
        };
        let now = jiff::Timestamp::now().as_second();
        let jti = uuid::Uuid::new_v4().to_string();
        let mut private =
            KubernetesClaim { namespace: namespace.into(), serviceaccount: Ref { name: name.into(), uid: uid(&sa).into() }, ..Default::default() };
        // the kubelet's pod tokens for the API live a year, stale after the time asked for
        let mut lifetime = expiration;
        if matches!(bound, Some(Bound::Pod(..))) && expiration == WARN_ONLY_EXPIRATION && audiences.iter().all(|a| self.audiences.contains(a)) {
            lifetime = EXTENDED_EXPIRATION;
            private.warnafter = Some(now + expiration);
        }
        match bound {
            Some(Bound::Pod(pod, node)) => {
                private.pod = Some(pod);
                private.node = node;
            }
            Some(Bound::Secret(r)) => private.secret = Some(r),
            Some(Bound::Node(r)) => private.node = Some(r),
            None => {}
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user_name(namespace, name),
            aud: audiences.clone(),
            exp: Some(now + lifetime),
            iat: Some(now),
            nbf: Some(now),
            jti: Some(jti),
            kubernetes: Some(private),
            ..Default::default()
        };
        let token = self.key.sign(&claims).map_err(ApiError::internal)?;
        let at = |t: i64| jiff::Timestamp::from_second(t).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).map_err(ApiError::internal);
        let (created, expires) = (at(now)?, at(now + expiration)?);
        let mut spec = spec;
        spec["audiences"] = json!(audiences);
        spec["expirationSeconds"] = json!(expiration);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }))
    }
}

/// Looks up and checks the object a TokenRequest binds its token to.
async fn bound_object(api: &Arc<Api>, namespace: &str, sa_name: &str, r: &Value) -> Result<Bound, ApiError> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (api_version, kind, name, want_uid) = (s("apiVersion"), s("kind"), s("name"), s("uid"));
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let plural = match (group, kind.as_str()) {
        ("", "Pod") => "pods",
        ("", "Secret") => "secrets",
        ("", "Node") => "nodes",
        _ => {
            let version = api_version.rsplit('/').next().unwrap_or("");
            let gvk = if group.is_empty() { format!("/{version}, Kind={kind}") } else { format!("{group}/{version}, Kind={kind}") };
            return Err(ApiError::bad_request(format!("cannot bind token to object of type {gvk}")));
        }
    };
    let res = api.resource("", plural)?;
    let obj = api.get(&res, (plural != "nodes").then_some(namespace), &name, None).await?;
    let got = uid(&obj).to_string();
    if !want_uid.is_empty() && want_uid != got {
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
            details: Some(json!({"name": name, "kind": kind})),
        });
    }
    let r = Ref { name, uid: got };
    if plural == "pods" {
        let pod_sa = obj.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
        if pod_sa != sa_name {
            return Err(ApiError::bad_request(format!("cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name.")));
        }
        // the pod's node (only its name when the API does not know it)
        let node = match obj.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            Some(n) => {
                let node = super::lookup(api, "nodes", None, n).await.map_err(ApiError::internal)?;
                Some(Ref { name: n.to_string(), uid: node.as_ref().map(|x| uid(x).to_string()).unwrap_or_default() })
            }
            None => None,
        };
        return Ok(Bound::Pod(r, node));
    }
    Ok(if plural == "nodes" { Bound::Node(r) } else { Bound::Secret(r) })
}
