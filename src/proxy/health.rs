//! kube-proxy's HTTP health servers: the proxy's own (`/healthz`, `/livez` on
//! `--proxy-healthz-bind-address`) and one per LoadBalancer Service with externalTrafficPolicy
//! Local on its `spec.healthCheckNodePort`, which a load balancer asks whether to send traffic
//! to this node: 200 while the node has a ready endpoint of the Service (and the proxy is
//! healthy), 503 otherwise, with upstream's JSON body. Servers open and close as Services come,
//! change and go; each answers one request per connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use berth_control::informer::ObjectKey;

/// The taint the cluster autoscaler puts on a node it is about to delete: the node is then no
/// longer eligible for load-balancer traffic (`/healthz` answers 503).
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// How long a failed bind of the proxy's health server waits before the next try (upstream's).
const HEALTHZ_RETRY: Duration = Duration::from_secs(5);

/// The proxy's health: healthy unless a change has waited longer than the timeout for a sync
/// (upstream: twice the sync period).
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<State>,
}

struct State {
    last_updated: Option<jiff::Timestamp>,
    /// Since when a change waits for a sync.
    oldest_pending: Option<Instant>,
    node_eligible: bool,
}

impl ProxyHealth {
    pub fn new(timeout: Duration) -> Arc<ProxyHealth> {
        // eligible until the Node says otherwise, as upstream while it starts
        Arc::new(ProxyHealth { timeout, state: Mutex::new(State { last_updated: None, oldest_pending: None, node_eligible: true }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change waits for a sync.
    pub fn queued(&self) {
        let mut s = self.lock();
        s.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// The rules were written: nothing waits any more.
    pub fn updated(&self) {
        let mut s = self.lock();
        s.oldest_pending = None;
        s.last_updated = Some(jiff::Timestamp::now());
    }

    /// This node's Node changed (None: deleted).
    pub fn node_changed(&self, node: Option<&Node>) {
        let eligible = node.is_some_and(|n| {
            let tainted = n.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().any(|t| t.key == TO_BE_DELETED_TAINT);
            n.metadata.deletion_timestamp.is_none() && !tainted
        });
        self.lock().node_eligible = eligible;
    }

    /// Whether the proxy keeps up, and when it last wrote its rules.
    pub fn healthy(&self) -> (bool, Option<jiff::Timestamp>) {
        let s = self.lock();
        let late = s.oldest_pending.is_some_and(|t| t.elapsed() >= self.timeout);
        (!late, s.last_updated)
    }

    fn node_eligible(&self) -> bool {
        self.lock().node_eligible
    }
}

/// A time as Go prints a `time.Time` (what upstream's bodies hold), in UTC; the zero time when
/// there is none.
fn go_time(t: Option<jiff::Timestamp>) -> String {
    match t {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string(),
        None => "0001-01-01 00:00:00 +0000 UTC".to_string(),
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    r
}

/// The proxy's `/healthz` (also says whether the node is eligible) and `/livez`.
fn healthz_response(health: &ProxyHealth, path: &str) -> Response<Full<Bytes>> {
    let (healthy, last) = health.healthy();
    let now = jiff::Timestamp::now();
    // as upstream: a healthy proxy reports now as its last update
    let last = if healthy { Some(now) } else { last };
    match path {
        "/healthz" => {
            let eligible = health.node_eligible();
            let status = if healthy && eligible { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json_response(status, format!(r#"{{"lastUpdated": "{}","currentTime": "{}", "nodeEligible": {eligible}}}"#, go_time(last), go_time(Some(now))))
        }
        "/livez" => {
            let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json_response(status, format!(r#"{{"lastUpdated": "{}","currentTime": "{}"}}"#, go_time(last), go_time(Some(now))))
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

/// A Service health check's answer (any path): 200 with local endpoints and a healthy proxy.
fn service_response(namespace: &str, name: &str, endpoints: usize, proxy_healthy: bool) -> Response<Full<Bytes>> {
    let status = if endpoints > 0 && proxy_healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        q(namespace),
        q(name)
    );
    json_response(status, body)
}

/// A server's answer to a request for a path.
type Answer = Arc<dyn Fn(&str) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `answer` on `listener` (one request per connection) until `stop`.
async fn serve(listener: TcpListener, stop: CancellationToken, answer: Answer) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept");
                    continue;
                }
            },
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = answer(req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// Runs the proxy's health server on `addr` until `stop`, binding again every 5 s while the
/// address is taken.
pub async fn serve_healthz(addr: SocketAddr, health: Arc<ProxyHealth>, stop: CancellationToken) {
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => tracing::error!(%addr, error = %e, "the proxy's health server cannot listen; trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEALTHZ_RETRY) => {}
        }
    };
    tracing::info!(%addr, "serving the proxy's /healthz and /livez");
    serve(listener, stop, Arc::new(move |path: &str| healthz_response(&health, path))).await
}

/// Where health check node ports listen: the node port addresses (`--nodeport-addresses`):
/// a CIDR of everything means every address; otherwise the node's addresses in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddresses {
    Any,
    Ips(Vec<IpAddr>),
}

/// One Service's health check server.
struct Instance {
    port: u16,
    endpoints: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The health check servers of the Services that want one.
pub struct ServiceHealthServers {
    health: Arc<ProxyHealth>,
    bind: BindAddresses,
    services: HashMap<ObjectKey, Instance>,
}

/// What one Service wants: its health check node port and its local ready endpoints.
pub type Want = Option<(u16, usize)>;

impl ServiceHealthServers {
    pub fn new(health: Arc<ProxyHealth>) -> ServiceHealthServers {
        ServiceHealthServers { health, bind: BindAddresses::Ips(vec![]), services: HashMap::new() }
    }

    /// The ports open, by Service (for the log and tests).
    pub fn ports(&self) -> Vec<(ObjectKey, u16)> {
        let mut out: Vec<(ObjectKey, u16)> = self.services.iter().map(|(k, i)| (k.clone(), i.port)).collect();
        out.sort();
        out
    }

    /// Brings the servers of `changes` in line; with `all`, the Services not named close
    /// (a full sync names every one). New bind addresses reopen every server.
    pub async fn sync(&mut self, bind: BindAddresses, changes: Vec<(ObjectKey, Want)>, all: bool) {
        if bind != self.bind {
            self.services.clear();
            self.bind = bind;
        }
        if all {
            let named: std::collections::HashSet<&ObjectKey> = changes.iter().map(|(k, _)| k).collect();
            self.services.retain(|k, _| named.contains(k));
        }
        // closes first, so a port that moves between Services is free for its new owner
        for (key, want) in &changes {
            if self.services.get(key).is_some_and(|i| Some(i.port) != want.map(|w| w.0)) {
                tracing::debug!(service = %format!("{}/{}", key.0, key.1), "closing its health check");
                self.services.remove(key);
            }
        }
        for (key, want) in changes {
            let Some((port, endpoints)) = want else { continue };
            if let Some(i) = self.services.get(&key) {
                i.endpoints.store(endpoints, Ordering::Relaxed);
                continue;
            }
            match self.open(&key, port, endpoints).await {
                Ok(i) => {
                    self.services.insert(key, i);
                }
                Err(e) => tracing::warn!(service = %format!("{}/{}", key.0, key.1), port, error = %e, "cannot open the health check node port"),
            }
        }
    }

    async fn open(&self, key: &ObjectKey, port: u16, endpoints: usize) -> std::io::Result<Instance> {
        let listeners = match &self.bind {
            // the dual-stack wildcard, or IPv4's on hosts without IPv6
            BindAddresses::Any => match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
                Ok(l) => vec![l],
                Err(_) => vec![TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await?],
            },
            BindAddresses::Ips(ips) => {
                let mut out = vec![];
                for ip in ips {
                    out.push(TcpListener::bind((*ip, port)).await?);
                }
                out
            }
        };
        let instance = Instance { port, endpoints: Arc::new(AtomicUsize::new(endpoints)), stop: CancellationToken::new() };
        let (namespace, name) = key.clone();
        tracing::debug!(service = %format!("{namespace}/{name}"), port, "serving its health check");
        for l in listeners {
            let (namespace, name, count, health) = (namespace.clone(), name.clone(), instance.endpoints.clone(), self.health.clone());
            let answer = move |_: &str| service_response(&namespace, &name, count.load(Ordering::Relaxed), health.healthy().0);
            let span = tracing::debug_span!("health-check", port);
            tokio::spawn(serve(l, instance.stop.clone(), Arc::new(answer)).instrument(span));
        }
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response<Full<Bytes>>) -> (u16, String, String) {
        use http_body_util::BodyExt;
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let b = r.into_body().collect().await.expect("body").to_bytes();
        (status, ct, String::from_utf8_lossy(&b).to_string())
    }

    #[tokio::test]
    async fn a_service_health_check_says_how_many_local_endpoints() {
        let (status, ct, b) = body(service_response("default", "web", 2, true)).await;
        assert_eq!((status, ct.as_str()), (200, "application/json"));
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v, serde_json::json!({"service": {"namespace": "default", "name": "web"}, "localEndpoints": 2, "serviceProxyHealthy": true}));
        assert_eq!(body(service_response("default", "web", 0, true)).await.0, 503);
        assert_eq!(body(service_response("default", "web", 3, false)).await.0, 503, "an unhealthy proxy");
    }

    #[tokio::test]
    async fn healthz_turns_unhealthy_when_a_change_waits_too_long_or_the_node_goes() {
        let h = ProxyHealth::new(Duration::from_millis(0));
        h.updated();
        let (status, _, b) = body(healthz_response(&h, "/healthz")).await;
        assert_eq!(status, 200, "{b}");
        assert!(b.starts_with(r#"{"lastUpdated": "2"#) && b.contains(r#" +0000 UTC","currentTime": ""#) && b.ends_with(r#", "nodeEligible": true}"#), "{b}");
        h.queued();
        assert_eq!(body(healthz_response(&h, "/livez")).await.0, 503, "a change waited past the timeout");
        h.updated();
        let node: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]}}))
                .expect("node");
        h.node_changed(Some(&node));
        let (status, _, b) = body(healthz_response(&h, "/healthz")).await;
        assert_eq!(status, 503);
        assert!(b.ends_with(r#""nodeEligible": false}"#), "{b}");
        assert_eq!(body(healthz_response(&h, "/livez")).await.0, 200, "livez ignores the node");
        assert_eq!(body(healthz_response(&h, "/other")).await.0, 404);
        assert_eq!(go_time(None), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(Some("2026-01-02T03:04:05.5Z".parse().expect("ts"))), "2026-01-02 03:04:05.5 +0000 UTC");
    }
}
