//! One call of one webhook: the AdmissionReview request (upstream's admission.k8s.io v1 or
//! v1beta1 shape) POSTed over HTTPS to the webhook's URL, or to an endpoint of its service with
//! the service's DNS name for TLS, with `?timeout=Ns` and that timeout on the whole exchange;
//! the answer checked (same uid, allowed, a JSONPatch only as `patchType: JSONPatch`) and turned
//! into a [`Verdict`]. Errors are the words upstream puts after `failed calling webhook "x": `.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use super::matching::Webhook;
use crate::admission::{cached_one, Attributes, Operation};
use crate::api::Api;
use crate::status::ApiError;

/// The largest answer read from a webhook.
const MAX_ANSWER: usize = 3 * 1024 * 1024;

/// What a webhook said.
pub enum Verdict {
    Allowed {
        patch: Option<json_patch::Patch>,
        warnings: Vec<String>,
        /// The answer's auditAnnotations (key, value).
        audit_annotations: Vec<(String, String)>,
    },
    /// Denied, as the error the request fails with.
    Denied { error: ApiError, audit_annotations: Vec<(String, String)> },
}

/// Where to send a webhook's requests.
struct Endpoint {
    /// What errors show: `https://host:port/path?timeout=10s`.
    url: String,
    /// The address to dial.
    address: String,
    /// The name the certificate must carry.
    server_name: String,
    /// Path and query.
    target: String,
}

fn with_timeout(path: &str, secs: u64) -> String {
    let path = if path.is_empty() { "/" } else { path };
    format!("{path}?timeout={secs}s")
}

fn endpoint(api: &Api, hook: &Webhook) -> Result<Endpoint, String> {
    if let Some(u) = &hook.client.url {
        let parsed = url::Url::parse(u).map_err(|e| format!("invalid webhook URL {u:?}: {e}"))?;
        let host = parsed.host_str().ok_or_else(|| format!("invalid webhook URL {u:?}: no host"))?.trim_matches(|c| c == '[' || c == ']').to_string();
        let port = parsed.port().unwrap_or(443);
        let target = with_timeout(parsed.path(), hook.timeout_seconds);
        let shown_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        return Ok(Endpoint { url: format!("https://{shown_host}:{port}{target}"), address: format!("{shown_host}:{port}"), server_name: host, target });
    }
    let Some(svc) = &hook.client.service else { return Err("the webhook has neither a url nor a service".into()) };
    let port = svc.port.unwrap_or(443);
    let target = with_timeout(svc.path.as_deref().unwrap_or("/"), hook.timeout_seconds);
    let server_name = format!("{}.{}.svc", svc.name, svc.namespace);
    let url = format!("https://{server_name}:{port}{target}");
    let address =
        service_endpoint(api, &svc.namespace, &svc.name, port).ok_or_else(|| format!("Post {:?}: no endpoints available for service {:?}", url, svc.name))?;
    Ok(Endpoint { url, address, server_name, target })
}

/// An address of a ready endpoint of the service's port `port`.
fn service_endpoint(api: &Api, ns: &str, name: &str, port: i32) -> Option<String> {
    let service = cached_one(api, "", "services", Some(ns), name)?;
    let ports = service.pointer("/spec/ports")?.as_array()?;
    let sp = ports.iter().find(|p| p["port"].as_i64() == Some(i64::from(port)))?;
    let port_name = sp["name"].as_str().unwrap_or("");
    let endpoints = cached_one(api, "", "endpoints", Some(ns), name)?;
    for subset in endpoints.pointer("/subsets")?.as_array()? {
        let Some(target) =
            subset["ports"].as_array().and_then(|ps| ps.iter().find(|p| p["name"].as_str().unwrap_or("") == port_name)).and_then(|p| p["port"].as_i64())
        else {
            continue;
        };
        if let Some(ip) = subset["addresses"].as_array().and_then(|a| a.first()).and_then(|a| a["ip"].as_str()) {
            return Some(if ip.contains(':') { format!("[{ip}]:{target}") } else { format!("{ip}:{target}") });
        }
    }
    None
}

fn tls_config(api: &Api, hook: &Webhook) -> Result<Arc<rustls::ClientConfig>, String> {
    let bundle: Vec<u8> = match &hook.client.ca_bundle {
        Some(b) if !b.0.is_empty() => b.0.clone(),
        _ => api.ca_pem().map(|c| c.as_bytes().to_vec()).ok_or("the webhook has no caBundle and the API no CA")?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bundle) {
        let cert = cert.map_err(|e| format!("the caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("the caBundle: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The AdmissionReview sent for `a`.
pub fn review(a: &Attributes, uid: &str, version: &str) -> Value {
    let res = &a.resource;
    let kind = json!({"group": res.group, "version": res.version, "kind": res.kind});
    let resource = json!({"group": res.group, "version": res.version, "resource": res.plural});
    let user = a.user.as_ref().map(crate::authn::review::user_info).unwrap_or(json!({}));
    let options = match a.operation {
        Operation::Create => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
        Operation::Update => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
        Operation::Delete => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
        Operation::Connect => Value::Null,
    };
    let mut request = json!({
        "uid": uid,
        "kind": kind, "resource": resource,
        "requestKind": kind, "requestResource": resource,
        "name": a.name,
        "operation": a.operation.as_str(),
        "userInfo": user,
        "object": a.object.clone().unwrap_or(Value::Null),
        "oldObject": a.old_object.clone().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": options,
    });
    if !a.subresource.is_empty() {
        request["subResource"] = json!(a.subresource);
        request["requestSubResource"] = json!(a.subresource);
    }
    if let Some(ns) = &a.namespace {
        request["namespace"] = json!(ns);
    }
    json!({"apiVersion": format!("admission.k8s.io/{version}"), "kind": "AdmissionReview", "request": request})
}

/// Calls `hook` for `a`.
pub async fn call(api: &Api, hook: &Webhook, a: &Attributes) -> Result<Verdict, String> {
    let uid = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&review(a, &uid, hook.review_version)).map_err(|e| e.to_string())?;
    let ep = endpoint(api, hook)?;
    let tls = tls_config(api, hook)?;
    let exchange = post(&ep, tls, body);
    let answer = match tokio::time::timeout(Duration::from_secs(hook.timeout_seconds), exchange).await {
        Ok(r) => r.map_err(|why| format!("failed to call webhook: Post {:?}: {why}", ep.url))?,
        Err(_) => return Err(format!("failed to call webhook: Post {:?}: context deadline exceeded", ep.url)),
    };
    verdict(hook, &uid, &answer)
}

/// POSTs `body` and reads the answer's body (200 only).
async fn post(ep: &Endpoint, tls: Arc<rustls::ClientConfig>, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(&ep.address).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("dial tcp {}: connect: connection refused", ep.address),
        _ => format!("dial tcp {}: {e}", ep.address),
    })?;
    let name = ServerName::try_from(ep.server_name.clone()).map_err(|e| format!("tls: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("webhook connection: {e}");
        }
    });
    let req = hyper::Request::post(&ep.target)
        .header(header::HOST, ep.address.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, */*")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let answer = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = answer.status();
    let limited = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER);
    let bytes = limited.collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
    if !code.is_success() {
        return Err(format!("the server responded with the status code {} but did not return more information", code.as_u16()));
    }
    Ok(bytes.to_vec())
}

/// The webhook's AdmissionReview answer as a verdict.
fn verdict(hook: &Webhook, uid: &str, answer: &[u8]) -> Result<Verdict, String> {
    let v: Value = serde_json::from_slice(answer).map_err(|e| format!("received invalid webhook response: {e}"))?;
    let r = v.get("response").filter(|r| r.is_object()).ok_or("received invalid webhook response: response is nil")?;
    let got = r["uid"].as_str().unwrap_or("");
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let warnings: Vec<String> = r["warnings"].as_array().map(|w| w.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default();
    let audit_annotations: Vec<(String, String)> =
        r["auditAnnotations"].as_object().map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()).unwrap_or_default();
    if r["allowed"].as_bool() != Some(true) {
        return Ok(Verdict::Denied { error: denial(&hook.name, &r["status"]), audit_annotations });
    }
    let patch = match r.get("patch").and_then(Value::as_str).filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => {
            if r["patchType"].as_str() != Some("JSONPatch") {
                return Err(format!("received invalid webhook response: patchType {:?} is not JSONPatch", r["patchType"].as_str().unwrap_or("")));
            }
            let raw = base64::engine::general_purpose::STANDARD.decode(p).map_err(|e| format!("received invalid webhook response: the patch: {e}"))?;
            Some(serde_json::from_slice::<json_patch::Patch>(&raw).map_err(|e| format!("received invalid webhook response: the patch: {e}"))?)
        }
    };
    Ok(Verdict::Allowed { patch, warnings, audit_annotations })
}

/// upstream's ToStatusErr: the webhook's status with its message prefixed, code 400 at least.
fn denial(name: &str, status: &Value) -> ApiError {
    let denied_by = format!("admission webhook {} denied the request", berth_names::go_quote(name));
    let message = status["message"].as_str().filter(|m| !m.is_empty());
    let reason = status["reason"].as_str().filter(|m| !m.is_empty());
    let message = match (message, reason) {
        (Some(m), _) => format!("{denied_by}: {m}"),
        (None, Some(r)) => format!("{denied_by}: {r}"),
        (None, None) => format!("{denied_by} without explanation"),
    };
    let code = status["code"].as_u64().filter(|c| (400..600).contains(c)).unwrap_or(400) as u16;
    ApiError { code, reason: known_reason(reason.unwrap_or("")), message, details: status.get("details").cloned().filter(Value::is_object) }
}

/// A Status reason as one of the reasons the API knows ("" for any other).
fn known_reason(r: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    KNOWN.iter().find(|k| **k == r).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_read_as_upstream_writes_them() {
        let e = denial("deny.berth.test", &json!({"message": "no pods today", "code": 403, "reason": "Forbidden"}));
        assert_eq!((e.code, e.reason, e.message.as_str()), (403, "Forbidden", r#"admission webhook "deny.berth.test" denied the request: no pods today"#));
        let e = denial("d.b.t", &json!({}));
        assert_eq!((e.code, e.reason, e.message.as_str()), (400, "", r#"admission webhook "d.b.t" denied the request without explanation"#));
        let e = denial("d.b.t", &json!({"code": 200, "reason": "Custom"}));
        assert_eq!((e.code, e.reason, e.message.as_str()), (400, "", r#"admission webhook "d.b.t" denied the request: Custom"#));
    }

    #[test]
    fn timeouts_go_into_the_path() {
        assert_eq!(with_timeout("", 10), "/?timeout=10s");
        assert_eq!(with_timeout("/validate", 3), "/validate?timeout=3s");
    }
}
