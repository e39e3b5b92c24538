//! The one place every request is observed: it opens the server span (continuing the caller's
//! trace), counts the request in flight, and when the response is ready records the duration
//! histogram with the span's ids as exemplar and writes the access-log line inside the span.
//! Because all three come from the same span, a metric exemplar, a log line and a trace always
//! agree on the trace id.
//!
//! A sampled server span is also marked for span profiles ([`span_profiles`]): it gets
//! `pyroscope.profile.id`, CPU samples taken during its work carry its span id, and its final
//! name is remembered for their `span_name` label.
//!
//! Operational routes (probes, scrapes, profile pulls: [`is_operational`]) are only counted in
//! the metrics: no span, no access line. Methods are normalised ([`RequestMethod`]) so a client
//! cannot create label values or span names at will.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use cpu_sampler::SpanLabels;
use opentelemetry::trace::TraceContextExt;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{error::ApiError, routes::templates::is_operational};

use super::{
    http_method::RequestMethod,
    metrics::{
        ActiveRequestLabels, AppMetrics, ServerRequestLabels, TraceExemplar, UNMATCHED_ROUTE,
    },
    propagation,
    span_profiles::{self, SPAN_NAMES},
};

/// The route template of a resource, attached as resource data so the middleware learns it
/// from the routing actix does anyway (asking `match_pattern()` would route a second time).
#[derive(Clone, Copy, Debug)]
pub struct RouteTemplate(pub &'static str);

pub async fn observe_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(metrics) = req.app_data::<web::Data<AppMetrics>>().cloned() else {
        return next.call(req).await;
    };
    // Cloned because `req` moves into the handler (cheap: known methods are an enum tag).
    let sent_method = req.method().clone();
    let method = RequestMethod::of(&sent_method);
    let normalised = method.normalised;
    let operational = is_operational(req.path());
    let (span, profiled) = request_span(&req, method, operational);

    let active = metrics
        .active_requests
        .get_or_create(&ActiveRequestLabels {
            http_request_method: normalised.to_owned(),
        })
        .clone();
    active.inc();
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    active.dec();

    let (status, error_type, route) = match &result {
        Ok(res) => (
            res.status(),
            res.response()
                .error()
                .and_then(|e| e.as_error::<ApiError>())
                .map(ApiError::kind),
            res.request().app_data::<RouteTemplate>().map(|r| r.0),
        ),
        Err(err) => (err.as_response_error().status_code(), None, None),
    };
    let code = status.as_u16();
    if !operational {
        finish_span(&span, method, route, status, error_type);
        if let Some(labels) = profiled {
            SPAN_NAMES.record(labels.span_id, method.span_name_prefix(), route);
        }
    }
    let route = route.unwrap_or(UNMATCHED_ROUTE);

    let exemplar = TraceExemplar::of_span(&span);
    metrics
        .server_duration
        .get_or_create(&ServerRequestLabels {
            http_request_method: normalised.to_owned(),
            http_route: route.to_owned(),
            http_response_status_code: code.to_string(),
        })
        .observe(elapsed.as_secs_f64(), exemplar, None);

    if !operational {
        span.in_scope(|| access_log(method, route, code, elapsed.as_secs_f64() * 1000.0));
    }
    result
}

/// Names the span after its route and records the outcome.
fn finish_span(
    span: &Span,
    method: RequestMethod<'_>,
    route: Option<&'static str>,
    status: actix_web::http::StatusCode,
    error_type: Option<&str>,
) {
    // OpenTelemetry names a server span `METHOD /route` (`HTTP /route` for an unknown method),
    // and just `METHOD` when no route matched. Renamed on the OpenTelemetry span itself: once a
    // child needed its context, the span is built, and tracing-opentelemetry 0.34 then ignores
    // a recorded `otel.name`.
    if let Some(route) = route {
        let name = span_profiles::span_name(method.span_name_prefix(), Some(route));
        span.context().span().update_name(name);
        span.record("http.route", route);
    }
    let code = status.as_u16();
    span.record("http.response.status_code", i64::from(code));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record(
            "error.type",
            error_type.map_or_else(|| code.to_string(), str::to_owned),
        );
    }
}

/// The request's server span (none for operational routes), marked for span profiles when
/// they are on and the span is sampled.
fn request_span(
    req: &ServiceRequest,
    method: RequestMethod<'_>,
    operational: bool,
) -> (Span, Option<SpanLabels>) {
    if operational {
        return (Span::none(), None);
    }
    let span = server_span(req, method);
    let profiled = span_profiles::enabled()
        .then(|| span_profiles::mark_profiled(&span))
        .flatten();
    (span, profiled)
}

/// The server span, named `METHOD` until routing tells the route.
fn server_span(req: &ServiceRequest, method: RequestMethod<'_>) -> Span {
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = method.span_name_prefix(),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.normalised,
        http.request.method_original = method.original,
        http.route = Empty,
        url.path = %req.path(),
        url.scheme = %req.connection_info().scheme(),
        server.address = %req.connection_info().host(),
        user_agent.original = req.headers().get("user-agent").and_then(|v| v.to_str().ok()),
        http.response.status_code = Empty,
        error.type = Empty,
        fault.injected = Empty,
    );
    // Setting the parent fails only when the span is disabled (telemetry off): nothing to link.
    let _ = span.set_parent(propagation::extract(req.headers()));
    span
}

fn access_log(method: RequestMethod<'_>, route: &str, status: u16, duration_ms: f64) {
    let duration_ms = (duration_ms * 1000.0).round() / 1000.0;
    let (method, method_original) = (method.normalised, method.original);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(target: "access", method, method_original, route, status, duration_ms, "request completed")
        };
    }
    match status {
        500.. => line!(error),
        400..500 => line!(warn),
        _ => line!(info),
    }
}
