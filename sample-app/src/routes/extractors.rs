//! Turns actix's extractor failures (bad JSON, wrong types, oversized or stalled bodies, bad
//! query strings or path segments) into the service's JSON errors instead of actix's
//! plain-text ones, and answers unknown routes and methods the same way.

use std::time::Duration;

use actix_web::{
    FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError,
    dev::Payload,
    error::{PathError, QueryPayloadError},
    http::header::CONTENT_LENGTH,
    web::{self, BytesMut},
};
use futures_util::{StreamExt, future::LocalBoxFuture};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest JSON body accepted; the order API and fault plans need a few hundred bytes.
pub const JSON_LIMIT_BYTES: usize = 16 * 1024;

/// How long the whole JSON body may take to arrive once the handler reads it. actix gives a
/// request head 5 s and then nothing: a client that announced a length (or a chunked body)
/// and stopped sending held its request, and a connection, for as long as it liked. 5 s is
/// the same allowance as the head's: 16 KiB in 5 s is a 3 KiB/s link.
pub const JSON_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// A JSON request body whose every error is a JSON answer naming the problem: wrong content
/// type (415), too large (413, refused before reading when the length is announced), not
/// all there within [`JSON_BODY_TIMEOUT`] (408), or not the expected shape (400, naming the
/// field: `quantity: invalid type: string "three"…`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req.mime_type().ok().flatten().is_some_and(|m| {
            m.type_() == actix_web::mime::APPLICATION
                && (m.subtype() == actix_web::mime::JSON
                    || m.suffix() == Some(actix_web::mime::JSON))
        });
        let announced = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType {
                    detail: "send the body with content-type: application/json".into(),
                });
            }
            let too_large = || ApiError::PayloadTooLarge {
                detail: format!("the JSON body must be at most {JSON_LIMIT_BYTES} bytes"),
            };
            if announced.is_some_and(|n| n > JSON_LIMIT_BYTES) {
                return Err(too_large());
            }
            let read = async {
                let mut body = BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk =
                        chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
                    if body.len() + chunk.len() > JSON_LIMIT_BYTES {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            let body = tokio::time::timeout(JSON_BODY_TIMEOUT, read)
                .await
                .map_err(|_| ApiError::RequestTimeout {
                    detail: format!(
                        "the body did not arrive within {} s",
                        JSON_BODY_TIMEOUT.as_secs()
                    ),
                })??;
            let mut deserializer = serde_json::Deserializer::from_slice(&body);
            let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let path = e.path().to_string();
                let detail = if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                };
                ApiError::bad_request("invalid_json", detail)
            })?;
            deserializer
                .end()
                .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
            Ok(JsonBody(value))
        })
    }
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
