//! The generic REST verbs, once for every kind: create, get, list, watch, update, patch, delete,
//! deletecollection, and the status and scale subresources. Each verb is a method of
//! [`Api`](crate::api::Api) on JSON objects (one file per verb family); a kind's differences come
//! from its strategy. The HTTP adapter (`http.rs`) only parses requests and encodes answers.

mod action;
pub(crate) mod apply;
mod cascade;
pub mod connect;
mod create;
pub(crate) mod delete;
mod eviction;
pub(crate) mod http;
mod read;
mod update;
mod watch;

pub use read::ListOptions;
pub use update::Subresource;

use berth_store::StoreError;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::ApiError;

/// What to do with fields the kind does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!("fieldValidation parameter unsupported: {other}"))),
        }
    }
}

/// Options of the writing verbs.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who is writing, for `metadata.managedFields` (None: not recorded, as for the server's own writes).
    pub field_manager: Option<String>,
    /// The caller (None: the server's own writes), for admission.
    pub user: Option<crate::User>,
}

/// The answer of a writing verb.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    /// `Warning` headers (unknown fields under fieldValidation=Warn).
    pub warnings: Vec<String>,
    /// A new object was stored (201 Created).
    pub created: bool,
}

/// A store failure in the API's words.
pub(crate) fn store_error(res: &Resource, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { .. } => ApiError::not_found(res, name),
        StoreError::AlreadyExists { .. } => ApiError::already_exists(res, name),
        StoreError::Conflict { .. } => ApiError::conflict(res, name),
        StoreError::Compacted { requested, compact_revision } => ApiError::gone(format!("too old resource version: {requested} ({compact_revision})")),
        StoreError::FutureRevision { requested, .. } => ApiError::timeout(format!("Too large resource version: {requested}")),
        StoreError::ValueTooLarge { .. } => {
            ApiError { code: 413, reason: "RequestEntityTooLarge", message: format!("Request entity too large: {e}"), details: None }
        }
        StoreError::InvalidContinue { reason } => ApiError::bad_request(format!("continue key is not valid: {reason}")),
        StoreError::InvalidKey { .. } | StoreError::InvalidArgument(_) => ApiError::bad_request(e.to_string()),
        StoreError::Unavailable(m) => ApiError::unavailable(m),
        StoreError::WatcherTooSlow { .. } | StoreError::Internal(_) => ApiError::internal(e),
    }
}

/// Checks a request body's apiVersion and kind, decodes it through the kind's type, and reports
/// the fields the type does not have as `fieldValidation` asks.
pub(crate) fn admit_body(res: &Resource, mut input: Value, opts: &WriteOptions) -> Result<(Value, Vec<String>), ApiError> {
    if !input.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: the body is not a JSON object",
            res.kind, res.version, res.kind
        )));
    }
    let api_version = res.api_version();
    let stored_version = res.view.as_ref().map(|v| v.stored_api_version());
    match input.get("apiVersion").and_then(Value::as_str) {
        // a version served from another's storage: patches and applies come already converted
        Some(v) if Some(v) == stored_version => {}
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!("the API version in the data ({v}) does not match the expected API version ({api_version})")));
        }
        _ => {
            input["apiVersion"] = json!(api_version);
            input = res.stored(input);
        }
    }
    match input.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != res.kind => {
            return Err(ApiError::bad_request(format!("the kind of the object ({k}) does not match the expected kind ({})", res.kind)));
        }
        _ => input["kind"] = json!(res.kind),
    }
    let mut known = res
        .strategy
        .normalize(&input)
        .map_err(|e| ApiError::bad_request(format!("{} in version {:?} cannot be handled as a {}: {e}", res.kind, res.version, res.kind)))?;
    let unknown = if opts.field_validation == FieldValidation::Ignore { vec![] } else { crate::meta::unknown_fields(&input, &known) };
    let mut warnings = vec![];
    if !unknown.is_empty() {
        let list = unknown.iter().map(|f| format!("unknown field {f:?}")).collect::<Vec<_>>();
        if opts.field_validation == FieldValidation::Strict {
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                res.kind,
                res.version,
                res.kind,
                list.join(", ")
            )));
        }
        warnings = list;
    }
    crate::meta::drop_empty(&mut known);
    Ok((known, warnings))
}

/// The store form of an object: no resourceVersion (the store's mod revision is).
pub(crate) fn to_bytes(obj: &Value) -> Result<bytes::Bytes, ApiError> {
    let mut o = obj.clone();
    crate::meta::set(&mut o, "resourceVersion", Value::Null);
    serde_json::to_vec(&o).map(bytes::Bytes::from).map_err(ApiError::internal)
}

/// Parses a resourceVersion parameter ("" and absent: None).
pub(crate) fn parse_rv(rv: Option<&str>) -> Result<Option<i64>, ApiError> {
    match rv {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}"))),
    }
}
