//! Errors as the Kubernetes API reports them: a metav1 `Status` with upstream's reason, code and
//! message words, plus field errors (`details.causes`) for 422 Invalid. Every failure the REST
//! layer returns is an [`ApiError`]; nothing here knows about HTTP routing.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::Resource;

/// One failed API call: becomes a `Status` object with `code` as the HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn object_details(res: &Resource, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": res.plural});
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        d
    }

    /// 404 `pods "x" not found`.
    pub fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", res.qualified())).with_details(Self::object_details(res, name))
    }

    /// 404 for a path that names nothing served.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    /// 409 `pods "x" already exists`.
    pub fn already_exists(res: &Resource, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.qualified())).with_details(Self::object_details(res, name))
    }

    /// 409 Conflict: the object changed since the client read it.
    pub fn conflict(res: &Resource, name: &str) -> Self {
        Self::conflict_because(res, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// 409 Conflict with upstream's `Operation cannot be fulfilled on ...` prefix.
    pub fn conflict_because(res: &Resource, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": {why}", res.qualified()))
            .with_details(Self::object_details(res, name))
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(res: &Resource, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(res.kind, res.group, name, errors)
    }

    /// 422 Invalid for an object of `kind` in `group` (also kinds that are only views, like Scale).
    pub fn invalid_kind(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let what = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list = match errors {
            [one] => one.to_string(),
            many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        };
        let mut details = json!({"name": name, "kind": kind, "causes": errors.iter().map(FieldError::cause).collect::<Vec<_>>()});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(422, "Invalid", format!("{what} \"{name}\" is invalid: {list}")).with_details(details)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(res: &Resource, name: &str, why: &str) -> Self {
        let message =
            if name.is_empty() { format!("{} is forbidden: {why}", res.qualified()) } else { format!("{} \"{name}\" is forbidden: {why}", res.qualified()) };
        Self::new(403, "Forbidden", message).with_details(Self::object_details(res, name))
    }

    /// 403 Forbidden for a group and resource that need not be served (upstream's NewForbidden:
    /// `pods "p" is forbidden: why`, `deployments.apps is forbidden: why`, and `forbidden: why`
    /// for a non-resource path), details with only what is known.
    pub fn forbidden_resource(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
        let message = if qualified.is_empty() {
            format!("forbidden: {why}")
        } else if name.is_empty() {
            format!("{qualified} is forbidden: {why}")
        } else {
            format!("{qualified} {} is forbidden: {why}", berth_names::go_quote(name))
        };
        let mut details = json!({});
        for (k, v) in [("name", name), ("group", group), ("kind", resource)] {
            if !v.is_empty() {
                details[k] = json!(v);
            }
        }
        Self::new(403, "Forbidden", message).with_details(details)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource ({what})")).with_details(json!({}))
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 410 Expired: a watch or list from a resource version older than what is kept.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The metav1 Status object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        // upstream leaves an empty reason out (a webhook's denial may have none)
        if self.reason.is_empty() {
            if let Some(m) = s.as_object_mut() {
                m.remove("reason");
            }
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::content::json_response(code, &self.status())
    }
}

/// The ways a field can be wrong (upstream's field.ErrorType).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    Required,
    Invalid(Value),
    NotSupported(Value, Vec<String>),
    Duplicate(Value),
    NotFound(Value),
    Forbidden,
    /// A string longer than allowed (upstream prints no value).
    TooLong,
    /// A list or map with too many entries (the count is the value).
    TooMany(Value),
}

/// One field error: the field's path, what is wrong, and a detail.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Required, detail: detail.into() }
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Invalid(value.into()), detail: detail.into() }
    }
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&'static str]) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(value.into(), supported.iter().map(|s| s.to_string()).collect()),
            detail: String::new(),
        }
    }
    /// NotSupported with values known only at run time (a schema's enum).
    pub fn not_supported_of(field: impl Into<String>, value: impl Into<Value>, supported: Vec<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::NotSupported(value.into(), supported), detail: String::new() }
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Duplicate(value.into()), detail: String::new() }
    }
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::NotFound(value.into()), detail: String::new() }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Forbidden, detail: detail.into() }
    }
    /// upstream's field.TooLong: `Too long: may not be more than N bytes`.
    pub fn too_long(field: impl Into<String>, max: i64) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        FieldError { field: field.into(), kind: FieldErrorKind::TooLong, detail: format!("may not be more than {max} {unit}") }
    }
    /// upstream's field.TooMany: `Too many: 4: must have at most 3 items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: i64) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::TooMany(Value::from(actual)), detail: format!("must have at most {max} items") }
    }

    /// The error without its field, as in `details.causes[].message`.
    pub fn body(&self) -> String {
        let with_detail = |head: String| if self.detail.is_empty() { head } else { format!("{head}: {}", self.detail) };
        match &self.kind {
            FieldErrorKind::Required => with_detail("Required value".into()),
            FieldErrorKind::Invalid(v) => with_detail(format!("Invalid value: {}", go_value(v))),
            FieldErrorKind::NotSupported(v, supported) => {
                let list = supported.iter().map(|s| berth_names::go_quote(s)).collect::<Vec<_>>().join(", ");
                format!("Unsupported value: {}: supported values: {list}", go_value(v))
            }
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {}", go_value(v)),
            FieldErrorKind::NotFound(v) => format!("Not found: {}", go_value(v)),
            FieldErrorKind::Forbidden => with_detail("Forbidden".into()),
            FieldErrorKind::TooLong => with_detail("Too long".into()),
            FieldErrorKind::TooMany(v) => with_detail(format!("Too many: {}", go_value(v))),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotFound(_) => "FieldValueNotFound",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany(_) => "FieldValueTooMany",
        }
    }

    fn cause(&self) -> Value {
        json!({"reason": self.reason(), "message": self.body(), "field": self.field})
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

const GO_RAW: &str = "$go";

/// A value for a field error printed as given (a Go `%#v` rendering such as `map[string]string{...}`).
pub fn go_raw(text: String) -> Value {
    serde_json::json!({ GO_RAW: text })
}

/// A value as upstream prints it in field errors: strings quoted, numbers and booleans bare.
fn go_value(v: &Value) -> String {
    if let Some(raw) = v.get(GO_RAW).and_then(Value::as_str) {
        return raw.to_string();
    }
    match v {
        Value::String(s) => berth_names::go_quote(s),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// The field errors of `value` at `field` under a name grammar of the `berth-names` crate.
pub fn check_name(field: &str, value: &str, grammar: fn(&str) -> Vec<String>) -> Vec<FieldError> {
    if value.is_empty() {
        return vec![FieldError::required(field, "")];
    }
    grammar(value).into_iter().map(|reason| FieldError::invalid(field, value, reason)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_read_as_upstream() {
        let e = FieldError::invalid("metadata.name", "X", "bad");
        assert_eq!(e.to_string(), "metadata.name: Invalid value: \"X\": bad");
        assert_eq!(FieldError::required("spec.x", "").to_string(), "spec.x: Required value");
        let e = FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]);
        assert_eq!(e.to_string(), "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\"");
        assert_eq!(
            FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0").to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }
}
