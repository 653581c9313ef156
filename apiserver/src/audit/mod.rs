//! The audit log (`--audit-policy-file`, `--audit-log-path`): one JSON line per stage of each
//! request the policy ([`policy`]) gives a level other than None, as upstream's log backend
//! writes them (audit.k8s.io/v1 Event: auditID, stage, requestURI, verb, user, impersonatedUser,
//! sourceIPs, userAgent, objectRef, responseStatus, requestObject at Request and above,
//! responseObject at RequestResponse, requestReceivedTimestamp, stageTimestamp, annotations:
//! the authorization decision and reason, and what admission added ([`annotations`])). Stages: RequestReceived when the request is authenticated
//! and its attributes known, ResponseComplete when the answer is ready; a watch or a stream
//! (logs, exec, attach, port-forward) gets ResponseStarted instead, its body is not recorded.
//! Lines are written by a thread of the log's own ([`log`]), so no request waits on the disk.

pub mod annotations;
pub mod log;
pub mod policy;

use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::authz::attributes::{Attributes, Target};
use crate::User;
use policy::{Level, Policy};

/// Where and how to audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub policy_file: PathBuf,
    /// The log file, or `-` for standard output.
    pub log_path: PathBuf,
    /// Rotate when the file reaches this many megabytes (0: never).
    pub max_size_mb: u64,
    /// Rotated files kept (0: all).
    pub max_backups: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the audit policy {path}: {source}")]
    ReadPolicy { path: PathBuf, source: std::io::Error },
    #[error("the audit policy {path}: {source}")]
    Policy { path: PathBuf, source: policy::PolicyError },
    #[error("the audit log {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
}

/// The audit backend of a running API.
pub struct Auditor {
    policy: Policy,
    log: log::LogWriter,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("rules", &self.policy.rules.len()).finish()
    }
}

/// One audited request between its stages.
#[derive(Debug)]
pub struct Entry {
    id: String,
    level: Level,
    omit: Vec<String>,
    received: Timestamp,
    user: User,
    impersonated: Option<User>,
    attrs: Attributes,
    uri: String,
    source_ip: Option<String>,
    user_agent: String,
    /// The request body (kept at Request and above).
    pub request_object: Option<Value>,
    /// Set when authorization refused the request.
    pub forbidden: bool,
    /// Why authorization decided as it did (`RBAC: allowed by ...`; empty for system:masters).
    pub authorization_reason: String,
    /// What the request's admission added, kept when the level records them.
    annotations: Vec<(String, String)>,
}

impl Entry {
    /// Whether the answer's body is recorded.
    pub fn wants_response(&self) -> bool {
        self.level >= Level::RequestResponse
    }

    /// Keeps the annotations `items` (from [`annotations::collect`]) this entry's level records.
    pub fn annotate(&mut self, items: Vec<(Level, String, String)>) {
        let level = self.level;
        self.annotations.extend(items.into_iter().filter(|(at, _, _)| level >= *at).map(|(_, k, v)| (k, v)));
    }

    /// Whether the request's body is recorded.
    pub fn wants_request(&self) -> bool {
        self.level >= Level::Request
    }

    /// Whether the request streams (a watch, logs, exec, attach, port-forward).
    pub fn long_running(&self) -> bool {
        self.attrs.verb == "watch"
            || self.attrs.resource_target().is_some_and(|r| matches!(r.subresource.as_str(), "log" | "exec" | "attach" | "portforward" | "proxy"))
    }
}

fn now_text(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The request as it arrived, for [`Auditor::begin`].
pub struct Request<'a> {
    /// Who made it (the impersonator when impersonating).
    pub user: &'a User,
    pub impersonated: Option<&'a User>,
    pub attrs: &'a Attributes,
    pub uri: &'a str,
    pub source_ip: Option<String>,
    pub user_agent: &'a str,
}

impl Auditor {
    /// Reads the policy and opens the log.
    pub async fn open(config: &AuditConfig) -> Result<Auditor, AuditError> {
        let text =
            tokio::fs::read_to_string(&config.policy_file).await.map_err(|source| AuditError::ReadPolicy { path: config.policy_file.clone(), source })?;
        let policy = Policy::parse(&text).map_err(|source| AuditError::Policy { path: config.policy_file.clone(), source })?;
        let log = log::LogWriter::open(&config.log_path, config.max_size_mb, config.max_backups)
            .map_err(|source| AuditError::Log { path: config.log_path.clone(), source })?;
        Ok(Auditor { policy, log })
    }

    /// Starts auditing a request: None when the policy says None; else the RequestReceived line
    /// is written (unless omitted).
    pub fn begin(&self, r: Request<'_>) -> Option<Entry> {
        let subject = r.impersonated.unwrap_or(r.user);
        let decided = Attributes { user: subject.clone(), ..r.attrs.clone() };
        let (level, omit) = self.policy.decide(&decided);
        if level == Level::None {
            return None;
        }
        let entry = Entry {
            id: uuid::Uuid::new_v4().to_string(),
            level,
            omit,
            received: Timestamp::now(),
            user: r.user.clone(),
            impersonated: r.impersonated.cloned(),
            attrs: r.attrs.clone(),
            uri: r.uri.to_string(),
            source_ip: r.source_ip,
            user_agent: r.user_agent.to_string(),
            request_object: None,
            forbidden: false,
            authorization_reason: String::new(),
            annotations: vec![],
        };
        self.write(&entry, "RequestReceived", None, None);
        Some(entry)
    }

    /// Finishes auditing a request answered with `code` (and `response`, a JSON body, when the
    /// level records it).
    pub fn complete(&self, entry: Entry, code: u16, response: Option<Value>) {
        let stage = if entry.long_running() { "ResponseStarted" } else { "ResponseComplete" };
        self.write(&entry, stage, Some(code), response);
    }

    fn write(&self, e: &Entry, stage: &str, code: Option<u16>, response: Option<Value>) {
        if e.omit.iter().any(|s| s == stage) {
            return;
        }
        let user = |u: &User| crate::authn::review::user_info(u);
        let mut ev = Map::new();
        ev.insert("kind".into(), json!("Event"));
        ev.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        ev.insert("level".into(), json!(e.level.as_str()));
        ev.insert("auditID".into(), json!(e.id));
        ev.insert("stage".into(), json!(stage));
        ev.insert("requestURI".into(), json!(e.uri));
        ev.insert("verb".into(), json!(e.attrs.verb));
        ev.insert("user".into(), user(&e.user));
        if let Some(i) = &e.impersonated {
            ev.insert("impersonatedUser".into(), user(i));
        }
        if let Some(ip) = &e.source_ip {
            ev.insert("sourceIPs".into(), json!([ip]));
        }
        if !e.user_agent.is_empty() {
            ev.insert("userAgent".into(), json!(e.user_agent));
        }
        if let Target::Resource(r) = &e.attrs.target {
            let mut o = Map::new();
            o.insert("resource".into(), json!(r.resource));
            for (k, v) in [("namespace", &r.namespace), ("name", &r.name), ("subresource", &r.subresource)] {
                if !v.is_empty() {
                    o.insert(k.into(), json!(v));
                }
            }
            o.insert("apiGroup".into(), json!(r.group));
            o.insert("apiVersion".into(), json!(r.version));
            ev.insert("objectRef".into(), Value::Object(o));
        }
        if let Some(c) = code {
            ev.insert("responseStatus".into(), json!({"metadata": {}, "code": c}));
        }
        if e.wants_request() {
            if let Some(o) = &e.request_object {
                ev.insert("requestObject".into(), self.trimmed(o.clone()));
            }
        }
        if e.wants_response() {
            if let Some(o) = response {
                ev.insert("responseObject".into(), self.trimmed(o));
            }
        }
        ev.insert("requestReceivedTimestamp".into(), json!(now_text(e.received)));
        ev.insert("stageTimestamp".into(), json!(now_text(Timestamp::now())));
        if code.is_some() {
            let decision = if e.forbidden { "forbid" } else { "allow" };
            let mut notes = Map::new();
            notes.insert("authorization.k8s.io/decision".into(), json!(decision));
            notes.insert("authorization.k8s.io/reason".into(), json!(e.authorization_reason));
            for (k, v) in &e.annotations {
                notes.entry(k.clone()).or_insert_with(|| json!(v));
            }
            ev.insert("annotations".into(), Value::Object(notes));
        }
        self.log.line(Value::Object(ev).to_string());
    }

    /// `o` without managed fields when the policy says so.
    fn trimmed(&self, mut o: Value) -> Value {
        if self.policy.omit_managed_fields {
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
        }
        o
    }
}
