//! Turns actix's extractor failures (bad JSON, wrong types, oversized bodies, bad query strings
//! or path segments) into the service's JSON errors instead of actix's plain-text ones, and
//! answers unknown routes and methods the same way.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::{JsonPayloadError, PathError, QueryPayloadError},
    web,
};

use crate::error::ApiError;

/// Largest JSON body accepted; the order API needs a few hundred bytes.
pub const JSON_LIMIT_BYTES: usize = 16 * 1024;

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(JSON_LIMIT_BYTES)
        .error_handler(|err, _req| {
            let api = match &err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge {
                    detail: format!("the JSON body must be at most {JSON_LIMIT_BYTES} bytes"),
                },
                JsonPayloadError::ContentType => ApiError::UnsupportedMediaType {
                    detail: "send the body with content-type: application/json".into(),
                },
                JsonPayloadError::Deserialize(e) => {
                    ApiError::bad_request("invalid_json", e.to_string())
                }
                other => ApiError::bad_request("invalid_body", other.to_string()),
            };
            actix_web::error::InternalError::from_response(err, api.error_response()).into()
        })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        let api = ApiError::bad_request("invalid_query", err.to_string());
        actix_web::error::InternalError::from_response(err, api.error_response()).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err: PathError, _req| {
        let api = ApiError::bad_request("invalid_path", err.to_string());
        actix_web::error::InternalError::from_response(err, api.error_response()).into()
    })
}

/// No route matched the path.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        error: "not_found",
        detail: format!("no route for {} {}", req.method(), shorten(req.path())),
    })
}

/// The route exists but not with this method.
pub async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        detail: format!("{} is not allowed on {}", req.method(), shorten(req.path())),
    })
}

/// Keeps error bodies small when someone sends a huge path.
fn shorten(path: &str) -> String {
    const MAX: usize = 80;
    match path.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &path[..cut], path.len()),
        None => path.to_owned(),
    }
}
