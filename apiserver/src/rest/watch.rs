//! watch: a stream of JSON lines (`{"type": ..., "object": ...}`, or length-prefixed protobuf
//! WatchEvents for clients that prefer protobuf) from the resource's watch
//! cache, starting with the current objects (resourceVersion "" or "0") or with the changes after
//! a resourceVersion (an ERROR event with a 410 Expired Status when that is too old), filtered by
//! namespace and selectors (an object that stops matching is sent as DELETED, one that starts
//! matching as ADDED), with BOOKMARK events when asked for, ending after timeoutSeconds. A
//! streaming list (sendInitialEvents=true) ends its initial events with a bookmark annotated
//! `k8s.io/initial-events-end`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use super::ListOptions;
use crate::api::Api;
use crate::cache::{CacheEvent, CachedObject, EventType};
use crate::resources::Resource;
use crate::table::{self, IncludeObject};

/// What a watch request asks for.
pub struct WatchRequest {
    pub res: Arc<Resource>,
    pub namespace: Option<String>,
    pub list: ListOptions,
    pub from: Option<i64>,
    pub bookmarks: bool,
    /// A streaming list (sendInitialEvents=true): after the initial events, a bookmark with the
    /// `k8s.io/initial-events-end` annotation (when bookmarks are allowed, as upstream sends it).
    pub initial_events_end: bool,
    pub timeout: Duration,
    /// Send Tables (kubectl get -w) with rows carrying this much of the object.
    pub table: Option<IncludeObject>,
    /// Length-prefixed protobuf WatchEvents instead of JSON lines.
    pub protobuf: bool,
}

struct Encoder {
    res: Arc<Resource>,
    table: Option<IncludeObject>,
    protobuf: bool,
    first: bool,
    /// The apiVersion and kind every object is sent with, as JSON fields.
    type_fields: String,
}

impl Encoder {
    fn new(res: Arc<Resource>, table: Option<IncludeObject>, protobuf: bool) -> Self {
        let type_fields = crate::encoded::type_fields(&res.api_version(), res.kind);
        Encoder { res, table, protobuf, first: true, type_fields }
    }

    /// The line of an object's event: written from the cached JSON when the object is sent as
    /// stored in JSON, through a Value for Tables, other versions and protobuf frames.
    fn event(&mut self, kind: &str, obj: &CachedObject) -> Option<Bytes> {
        if self.table.is_some() || self.res.view.is_some() || self.protobuf {
            return match obj.value() {
                Ok(v) => Some(self.line(kind, &v)),
                Err(e) => {
                    tracing::error!(error = %e.message, "skipping an undecodable object");
                    None
                }
            };
        }
        let mut out = BytesMut::with_capacity(obj.encoded.size() + self.type_fields.len() + 32);
        out.put_slice(b"{\"type\":");
        out.put_slice(Value::from(kind).to_string().as_bytes());
        out.put_slice(b",\"object\":");
        obj.encoded.write_with_type(&mut out, Some(&self.type_fields));
        out.put_slice(b"}\n");
        Some(out.freeze())
    }

    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = match self.table {
            Some(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
                let t = table::table(&self.res, std::slice::from_ref(obj), json!({"resourceVersion": rv}), include, self.first);
                self.first = false;
                t
            }
            _ => {
                let mut o = if kind == "ERROR" || kind == "BOOKMARK" { obj.clone() } else { self.res.served(obj.clone()) };
                if kind != "ERROR" {
                    o["kind"] = json!(self.res.kind);
                    o["apiVersion"] = json!(self.res.api_version());
                }
                o
            }
        };
        if self.protobuf {
            let (api_version, obj_kind) = if kind == "ERROR" { ("v1".to_string(), "Status") } else { (self.res.api_version(), self.res.kind) };
            match crate::protobuf::watch_frame(kind, &api_version, obj_kind, &object) {
                Ok(frame) => return Bytes::from(frame),
                Err(e) => tracing::warn!(error = %e, "encoding a protobuf watch event failed"),
            }
        }
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

/// The event to send for a cache event, after selectors (None: nothing to send).
fn selected(req: &WatchRequest, prefix: &str, ev: &CacheEvent) -> Option<&'static str> {
    if !ev.key.starts_with(prefix) {
        return None;
    }
    let now = req.list.matches_cached(&req.res, &ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| req.list.matches_cached(&req.res, p));
    match ev.kind {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

impl Api {
    /// The body of a watch response.
    pub(crate) fn watch_body(self: &Arc<Self>, req: WatchRequest) -> Result<Body, crate::status::ApiError> {
        let cache = self.cache(&req.res)?;
        let prefix = req.res.list_prefix(&self.store_prefix, req.namespace.as_deref());
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let mut enc = Encoder::new(req.res.clone(), req.table, req.protobuf);
        let subscription = cache.subscribe(req.from, &prefix);
        let interval = self.config.bookmark_interval;
        let span = tracing::debug_span!("watch", resource = %req.res.qualified(), namespace = ?req.namespace);
        tokio::spawn(
            async move {
                let mut sub = match subscription {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(enc.line("ERROR", &e.status())).await;
                        return;
                    }
                };
                let mut last_rv = sub.after;
                for ev in std::mem::take(&mut sub.initial) {
                    if let Some(line) = selected(&req, &prefix, &ev).and_then(|kind| enc.event(kind, &ev.object)) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    last_rv = last_rv.max(ev.revision);
                }
                if req.initial_events_end && req.bookmarks {
                    let end = json!({"metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                    if tx.send(enc.line("BOOKMARK", &end)).await.is_err() {
                        return;
                    }
                }
                let deadline = tokio::time::sleep(req.timeout);
                tokio::pin!(deadline);
                let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tokio::select! {
                        _ = &mut deadline => return,
                        _ = tx.closed() => return,
                        _ = bookmarks.tick(), if req.bookmarks => {
                            last_rv = last_rv.max(cache.revision());
                            let bookmark = json!({"metadata": {"resourceVersion": last_rv.to_string()}});
                            if tx.send(enc.line("BOOKMARK", &bookmark)).await.is_err() {
                                return;
                            }
                        }
                        ev = sub.live.recv() => match ev {
                            Ok(ev) if ev.revision <= sub.after => {}
                            Ok(ev) => {
                                last_rv = last_rv.max(ev.revision);
                                if let Some(line) = selected(&req, &prefix, &ev).and_then(|kind| enc.event(kind, &ev.object)) {
                                    if tx.send(line).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            }
            .instrument(span),
        );
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx)) });
        Ok(Body::from_stream(stream))
    }
}
