//! Property tests of the parsers hostile input reaches first: the JSON body extractor
//! (`JsonBody`), fault plans and fault headers, and the `traceparent` extractor. Arbitrary
//! bytes never panic and get a clear 4xx (or, for a trace context, are ignored); valid input
//! round-trips. (`cargo fuzz` would need a nightly toolchain, which this project's machines
//! cannot fetch; proptest runs on stable, in the ordinary test run.)

mod fault_plan;
mod json_body;
mod traceparent;

use actix_web::{FromRequest, ResponseError, test::TestRequest};
use sample_app::routes::extractors::JsonBody;
use serde::de::DeserializeOwned;

/// Reads `body` with `content_type` through [`JsonBody`], as a handler would: the value, or
/// the status and JSON body of the error answer.
pub fn read_json<T: DeserializeOwned + 'static>(
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<T, (u16, serde_json::Value)> {
    let mut request = TestRequest::post();
    if let Some(content_type) = content_type {
        request = request.insert_header(("content-type", content_type));
    }
    let (request, mut payload) = request.set_payload(body).to_http_parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime
        .block_on(JsonBody::<T>::from_request(&request, &mut payload))
        .map(|body| body.0)
        .map_err(|error| {
            let response = error.error_response();
            let body = actix_web::body::to_bytes(response.into_body());
            let body = runtime.block_on(body).unwrap_or_default();
            (
                error.status_code().as_u16(),
                serde_json::from_slice(&body).unwrap_or_default(),
            )
        })
}

/// An error answer is a 4xx with the service's `{"error", "detail"}` body.
pub fn assert_clear_4xx(status: u16, body: &serde_json::Value) {
    assert!((400..500).contains(&status), "status {status}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty())
            && body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "not a clear error: {body}"
    );
}
