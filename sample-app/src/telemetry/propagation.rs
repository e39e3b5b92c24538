//! W3C Trace Context in and out: reads `traceparent`/`tracestate` from actix's request headers
//! (actix is on `http` 0.2, so the OpenTelemetry helper for `http` 1 does not fit) and writes
//! them into outgoing `reqwest` requests.

use actix_web::http::header::HeaderMap as ActixHeaders;
use opentelemetry::{Context, propagation::Extractor};
use opentelemetry_http::HeaderInjector;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct ActixExtractor<'a>(&'a ActixHeaders);

impl Extractor for ActixExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context, or an empty one (an invalid `traceparent` is ignored, as the
/// W3C spec requires: the request is served and starts a new trace).
pub fn extract(headers: &ActixHeaders) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&ActixExtractor(headers)))
}

/// Adds the context of `span` to an outgoing request's headers.
pub fn inject(span: &tracing::Span, headers: &mut reqwest::header::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}
