//! The kubelet API's streaming endpoints, what the apiserver proxies `kubectl exec`, `attach`
//! and `port-forward` to: /exec/{namespace}/{pod}/{container}?command=...&input=1&output=1&
//! error=1&tty=1, /attach/{namespace}/{pod}/{container} and /portForward/{namespace}/{pod}. The
//! request is turned into its CRI call (so the runtime's checks and errors apply), and the
//! upgrade it carries (SPDY/3.1 or WebSocket) is handed to the runtime's streaming server
//! in-process: no second connection, no proxying of bytes.
use super::NodeShared;
use crate::cri::v1 as cri;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

fn text(code: StatusCode, msg: String) -> Response {
    (code, [("content-type", "text/plain; charset=utf-8")], msg + "\n").into_response()
}

/// The query's pairs in order (`command` repeats).
fn pairs(req: &Request) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default()
}

/// A boolean parameter as the kubelet reads them ("1" or "true").
fn flag(pairs: &[(String, String)], key: &str) -> bool {
    pairs.iter().any(|(k, v)| k == key && (v == "1" || v.eq_ignore_ascii_case("true")))
}

/// The pod the node runs under that name: its UID and object.
async fn find_pod(shared: &NodeShared, ns: &str, name: &str) -> Option<(String, k8s_openapi::api::core::v1::Pod)> {
    let statuses = shared.statuses.read().await;
    statuses
        .iter()
        .find(|(_, p)| p.metadata.name.as_deref() == Some(name) && p.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .map(|(uid, p)| (uid.clone(), p.clone()))
}

/// The runtime ID of the named container of a pod, when it runs.
async fn running_container(shared: &NodeShared, ns: &str, pod: &str, container: &str) -> Result<String, Response> {
    let Some((_, p)) = find_pod(shared, ns, pod).await else {
        return Err(text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found")));
    };
    let status = p.status.unwrap_or_default();
    let all = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .chain(status.ephemeral_container_statuses.iter().flatten());
    let found = all.filter(|c| c.name == container).find_map(|c| {
        let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
        c.container_id.as_deref().filter(|_| running).map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_string())
    });
    found.ok_or_else(|| text(StatusCode::NOT_FOUND, format!("container not found ({container:?})")))
}

/// Hands `req` (with its upgrade) to the streaming server at the token URL the CRI answered.
fn hand_over(shared: &NodeShared, url: &str, mut req: Request) -> Response {
    let Some(streaming) = shared.host.streaming() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "this node's runtime serves no streams".into());
    };
    let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string())).unwrap_or_default();
    match path.parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("the runtime answered a bad streaming URL {url:?}")),
    }
    streaming.serve_request(req).map(axum::body::Body::new)
}

fn cri_failed(what: &str, e: crate::cri::api::CriError) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {}", e.message))
}

pub async fn exec(State(shared): State<Arc<NodeShared>>, Path((ns, pod, container)): Path<(String, String, String)>, req: Request) -> Response {
    let q = pairs(&req);
    let cmd: Vec<String> = q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if cmd.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command".into());
    }
    let (stdin, stdout, stderr, tty) = (flag(&q, "input"), flag(&q, "output"), flag(&q, "error"), flag(&q, "tty"));
    if !stdin && !stdout && !stderr {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr".into());
    }
    let id = match running_container(&shared, &ns, &pod, &container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let asked = cri::ExecRequest { container_id: id, cmd, tty, stdin, stdout, stderr: stderr && !tty };
    match shared.runtime.exec(asked).await {
        Ok(r) => hand_over(&shared, &r.url, req),
        Err(e) => cri_failed("exec", e),
    }
}

pub async fn attach(State(shared): State<Arc<NodeShared>>, Path((ns, pod, container)): Path<(String, String, String)>, req: Request) -> Response {
    let q = pairs(&req);
    let (stdin, stdout, stderr, tty) = (flag(&q, "input"), flag(&q, "output"), flag(&q, "error"), flag(&q, "tty"));
    if !stdin && !stdout && !stderr {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr".into());
    }
    let id = match running_container(&shared, &ns, &pod, &container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let asked = cri::AttachRequest { container_id: id, stdin, tty, stdout, stderr: stderr && !tty };
    match shared.runtime.attach(asked).await {
        Ok(r) => hand_over(&shared, &r.url, req),
        Err(e) => cri_failed("attach", e),
    }
}

pub async fn port_forward(State(shared): State<Arc<NodeShared>>, Path((ns, pod)): Path<(String, String)>, req: Request) -> Response {
    let Some((uid, _)) = find_pod(&shared, &ns, &pod).await else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found"));
    };
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
        label_selector: [("io.kubernetes.pod.uid".to_string(), uid)].into_iter().collect(),
        ..Default::default()
    };
    let sandbox = match shared.runtime.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await {
        Ok(l) => l.items.into_iter().max_by_key(|s| s.created_at),
        Err(e) => return cri_failed("listing the pod's sandboxes", e),
    };
    let Some(sandbox) = sandbox else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} has no running sandbox"));
    };
    match shared.runtime.port_forward(cri::PortForwardRequest { pod_sandbox_id: sandbox.id, port: vec![] }).await {
        Ok(r) => hand_over(&shared, &r.url, req),
        Err(e) => cri_failed("port-forward", e),
    }
}
