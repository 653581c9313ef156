//! upstream's token controller for legacy service account token Secrets: a Secret of type
//! `kubernetes.io/service-account-token` annotated `kubernetes.io/service-account.name` gets
//! `token` (a non-expiring JWT naming the Secret and the service account), `ca.crt` and
//! `namespace` filled in, and the `.../service-account.uid` annotation; a Secret whose service
//! account does not exist (or has another uid) is deleted. The token authenticates while the
//! Secret holds it (`serviceaccount`).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

use super::jwt::Ref;
use crate::api::Api;
use crate::rest::delete::DeleteOptions;
use crate::rest::{Subresource, WriteOptions};

pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// Starts the controller over the secrets watch cache.
pub fn spawn(api: &Arc<Api>) {
    let Ok(secrets) = api.resource("", "secrets") else { return };
    let Ok(cache) = api.cache(&secrets) else { return };
    let prefix = secrets.prefix(api.store_prefix());
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            loop {
                let Ok(mut sub) = cache.subscribe(None, &prefix) else { return };
                for e in std::mem::take(&mut sub.initial) {
                    let Some(api) = weak.upgrade() else { return };
                    if let Ok(secret) = e.object.value() {
                        sync(&api, &secret).await;
                    }
                }
                loop {
                    match sub.live.recv().await {
                        Ok(e) if e.revision <= sub.after => {}
                        Ok(e) => {
                            let Some(api) = weak.upgrade() else { return };
                            if let Ok(secret) = e.object.value() {
                                sync(&api, &secret).await;
                            }
                        }
                        // missed events: start over from the current state
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        }
        .instrument(tracing::info_span!("token_controller")),
    );
}

/// Brings one Secret in line (nothing for other Secrets and for complete ones).
async fn sync(api: &Arc<Api>, secret: &Value) {
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) || secret.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
        return;
    }
    let s = |p: &str| secret.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let (ns, name) = (s("/metadata/namespace"), s("/metadata/name"));
    let annotations = secret.pointer("/metadata/annotations");
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
    let (sa_name, sa_uid) = (annotation(NAME_ANNOTATION), annotation(UID_ANNOTATION));
    let root_ca = STANDARD.encode(&api.authn.root_ca);
    let complete = ["token", "namespace"].iter().all(|k| secret.pointer(&format!("/data/{k}")).is_some_and(|v| v.as_str().is_some_and(|v| !v.is_empty())))
        && secret.pointer("/data/ca.crt").and_then(Value::as_str) == Some(root_ca.as_str())
        && !sa_uid.is_empty();
    let sa = match super::lookup(api, "serviceaccounts", Some(&ns), &sa_name).await {
        Ok(sa) => sa,
        Err(e) => return tracing::warn!(namespace = ns, secret = name, error = e, "looking up the service account"),
    };
    let uid = sa.as_ref().and_then(|sa| sa.pointer("/metadata/uid")).and_then(Value::as_str).unwrap_or("").to_string();
    if sa.is_none() || (!sa_uid.is_empty() && sa_uid != uid) {
        let Ok(res) = api.resource("", "secrets") else { return };
        match api.delete(&res, Some(&ns), &name, &DeleteOptions::default()).await {
            Ok(_) => tracing::info!(namespace = ns, secret = name, serviceaccount = sa_name, "deleted the token secret of a service account that is gone"),
            Err(e) if e.code == 404 => {}
            Err(e) => tracing::warn!(namespace = ns, secret = name, error = %e, "deleting a token secret"),
        }
        return;
    }
    if complete {
        return;
    }
    let token = match super::serviceaccount::legacy_token(&api.authn.service_accounts.key, &ns, &name, &Ref { name: sa_name.clone(), uid: uid.clone() }) {
        Ok(t) => t,
        Err(e) => return tracing::warn!(error = %e, "signing a legacy token"),
    };
    let mut updated = secret.clone();
    updated["metadata"]["annotations"][UID_ANNOTATION] = json!(uid);
    if !updated.get("data").is_some_and(Value::is_object) {
        updated["data"] = json!({});
    }
    updated["data"]["token"] = json!(STANDARD.encode(&token));
    updated["data"]["namespace"] = json!(STANDARD.encode(&ns));
    updated["data"]["ca.crt"] = json!(root_ca);
    let Ok(res) = api.resource("", "secrets") else { return };
    // a conflict means a newer version is on its way through the cache: that one is synced then
    match api.update(&res, Some(&ns), &name, updated, Subresource::Main, &WriteOptions::default()).await {
        Ok(_) => tracing::info!(namespace = ns, secret = name, "filled a service account token secret"),
        Err(e) if e.code == 409 || e.code == 404 => {}
        Err(e) => tracing::warn!(namespace = ns, secret = name, error = %e, "filling a token secret"),
    }
}
