//! Content negotiation: request bodies in JSON, YAML or the Kubernetes protobuf encoding,
//! answers in JSON (or protobuf when the client prefers it and the kind has a message), Table when the Accept header asks for `as=Table;g=meta.k8s.io`, aggregated
//! discovery when it asks for `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::status::ApiError;

/// A JSON answer.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    json_bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON answer already encoded.
pub fn json_bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// The Content-Type of a request ("" when absent).
pub fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Decodes a request body by its Content-Type.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" | "application/json-patch+json" | "application/merge-patch+json" | "application/strategic-merge-patch+json" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
        }
        "application/yaml" | "application/apply-patch+yaml" => {
            let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
        }
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body).map_err(|e| ApiError::bad_request(format!("the protobuf body could not be decoded: {e}"))),
        _ => Err(ApiError::unsupported_media_type(&ct)),
    }
}

fn accepts(headers: &HeaderMap, needle: &[&str]) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|media| {
        let params: Vec<String> = media.split(';').map(|p| p.trim().replace(' ', "")).collect();
        needle.iter().all(|n| params.iter().any(|p| p == n))
    })
}

/// Whether the client prefers protobuf answers: the first media type of its Accept header that
/// the server can give is `application/vnd.kubernetes.protobuf` (without `as=...`).
pub fn wants_protobuf(headers: &HeaderMap) -> bool {
    let first = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(|media| {
        let mut parts = media.split(';').map(str::trim);
        let base = parts.next().unwrap_or("").to_ascii_lowercase();
        let converted = parts.any(|p| p.replace(' ', "").starts_with("as="));
        match base.as_str() {
            crate::protobuf::MEDIA_TYPE if !converted => Some(true),
            "application/json" | "application/yaml" | "*/*" | "application/*" => Some(false),
            _ => None,
        }
    });
    first == Some(true)
}

/// Whether the Accept header names JSON and no protobuf form (absent: false).
pub fn accepts_json_only(headers: &HeaderMap) -> bool {
    let medias: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| m.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .collect();
    medias.iter().any(|m| m == "application/json") && !medias.iter().any(|m| m.contains("protobuf"))
}

/// A protobuf answer.
pub fn protobuf_response(code: StatusCode, bytes: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static(crate::protobuf::MEDIA_TYPE))], bytes).into_response()
}

/// Whether the client asked for a meta.k8s.io Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    accepts(headers, &["as=Table", "g=meta.k8s.io"])
}

/// The aggregated discovery version asked for (v2 or v2beta1), if any.
pub fn wants_aggregated(headers: &HeaderMap) -> Option<&'static str> {
    if accepts(headers, &["as=APIGroupDiscoveryList", "g=apidiscovery.k8s.io", "v=v2"]) {
        Some("v2")
    } else if accepts(headers, &["as=APIGroupDiscoveryList", "g=apidiscovery.k8s.io", "v=v2beta1"]) {
        Some("v2beta1")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bodies_decode_by_content_type() {
        let yaml = headers(&[("content-type", "application/yaml")]);
        assert_eq!(decode_body(&yaml, b"kind: ConfigMap\ndata:\n  a: '1'\n").unwrap(), serde_json::json!({"kind": "ConfigMap", "data": {"a": "1"}}));
        let err = decode_body(&headers(&[("content-type", "application/json")]), b"{nope").unwrap_err();
        assert_eq!(err.code, 400);
        let err = decode_body(&headers(&[("content-type", "text/plain")]), b"x").unwrap_err();
        assert_eq!(err.code, 415);
    }

    #[test]
    fn accept_headers_choose_tables_and_aggregated_discovery() {
        assert!(wants_table(&headers(&[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        )])));
        assert!(!wants_table(&headers(&[("accept", "application/json")])));
        let h = headers(&[("accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")]);
        assert_eq!(wants_aggregated(&h), Some("v2"));
        assert_eq!(wants_aggregated(&headers(&[("accept", "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")])), Some("v2beta1"));
    }

    #[test]
    fn protobuf_answers_only_when_preferred() {
        assert!(wants_protobuf(&headers(&[("accept", "application/vnd.kubernetes.protobuf,application/json")])));
        assert!(!wants_protobuf(&headers(&[("accept", "application/json, application/vnd.kubernetes.protobuf")])));
        assert!(!wants_protobuf(&headers(&[("accept", "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json")])));
        assert!(!wants_protobuf(&headers(&[])));
    }
}
