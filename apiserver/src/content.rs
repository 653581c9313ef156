//! Content negotiation: request bodies in JSON, YAML or the Kubernetes protobuf encoding,
//! answers in JSON, Table when the Accept header asks for `as=Table;g=meta.k8s.io`, aggregated
//! discovery when it asks for `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::status::ApiError;

/// A JSON answer.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
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
}
