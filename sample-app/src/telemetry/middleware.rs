//! The one place every request is observed: it opens the server span (continuing the caller's
//! trace), counts the request in flight, and when the response is ready records the duration
//! histogram with the span's ids as exemplar and writes the access-log line in the request's scope
//! (so it carries the span's ids).
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

use std::{
    borrow::Cow,
    future::Future,
    pin::Pin,
    task::{self, Poll},
    time::Instant,
};

use crate::{error::ApiError, routes::templates::is_operational};
use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{StatusCode, header},
    middleware::Next,
    web,
};
use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};
use prometheus_client::metrics::gauge::Gauge;

use super::{
    http_method::RequestMethod,
    ids::SpanIds,
    metrics::{AppMetrics, TraceExemplar, UNMATCHED_ROUTE},
    propagation,
    request_scope::RequestScope,
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
    let operational = is_operational(req.path());
    let mut server = (!operational).then(|| ServerSpan::start(&req, method));

    let in_flight = InFlight::start(metrics.active_requests_of(method.normalised));
    let started = Instant::now();
    let result = match &server {
        Some(server) => InSpan::new(server.scope, &server.context, next.call(req)).await,
        None => next.call(req).await,
    };
    let elapsed = started.elapsed();
    drop(in_flight);

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
    if let Some(server) = &mut server {
        let injected = result.as_ref().ok().and_then(|res| {
            let extensions = res.request().extensions();
            extensions.get::<InjectedFaults>().map(|f| f.0.clone())
        });
        server.finish(method, route, status, error_type, injected);
    }
    let exemplar = server
        .as_ref()
        .and_then(|s| s.scope)
        .map(|scope| scope.ids)
        .filter(|ids| ids.sampled)
        .map(|ids| TraceExemplar::of_ids(&ids));
    let route = route.unwrap_or(UNMATCHED_ROUTE);
    metrics.observe_server_request(
        method.normalised,
        route,
        code,
        elapsed.as_secs_f64(),
        exemplar,
    );

    if let Some(server) = &server {
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        access_log(server.scope, method, route, code, duration_ms);
    }
    result
}

/// A request counted in `http_server_active_requests` until this is dropped: when the handler
/// has answered, and also when actix drops the request's future before (at a shutdown
/// timeout), which would otherwise leave the gauge one too high for good.
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `future` polled inside the server span: its OpenTelemetry context attached (the parent of
/// the spans the handler opens) and its [`RequestScope`] entered (the ids of the handler's log
/// lines, the labels of its CPU samples), for every poll. The handler's future is boxed
/// (`Unpin`), so it is polled in place, and dropped inside the poll that finishes it. A request
/// whose future is dropped mid-flight (when actix gives up on it, e.g. at a shutdown timeout; a
/// client closing its connection did not, measured) is dropped inside the span too, as
/// `tracing`'s `Instrumented` does, so the child spans the drop ends are still the server
/// span's children.
struct InSpan<'a, F> {
    /// `None` when the span has no ids (no tracer).
    scope: Option<RequestScope>,
    context: &'a Context,
    /// `None` once it has finished (and been dropped).
    future: Option<F>,
}

impl<'a, F> InSpan<'a, F> {
    fn new(scope: Option<RequestScope>, context: &'a Context, future: F) -> Self {
        Self {
            scope,
            context,
            future: Some(future),
        }
    }
}

impl<F: Future + Unpin> Future for InSpan<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.scope.map(RequestScope::enter);
        let _attached = this.context.clone().attach();
        let Some(future) = this.future.as_mut() else {
            panic!("InSpan polled after it finished");
        };
        let output = Pin::new(future).poll(cx);
        if output.is_ready() {
            this.future = None;
        }
        output
    }
}

impl<F> Drop for InSpan<'_, F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            let _entered = self.scope.map(RequestScope::enter);
            let _attached = self.context.clone().attach();
            drop(future);
        }
    }
}

/// The tracer server spans are made with: app data, present when telemetry is on.
#[derive(Clone, Debug)]
pub struct ServerTracer(pub SdkTracer);

/// The faults the fault middleware applied to a request, for the server span's
/// `fault.injected` (a request extension; absent when none was applied).
#[derive(Clone, Debug)]
pub struct InjectedFaults(pub String);

/// Attributes a server span can have: six from the request, `pyroscope.profile.id`, three from
/// the response and `fault.injected`. Room for all of them from the start: the span never
/// reallocates them.
const SERVER_SPAN_ATTRIBUTES: usize = 11;

/// A request's server span: an OpenTelemetry span built here with the SDK's tracer and ended by
/// [`Self::finish`], and what the rest of the request's telemetry needs of it.
///
/// Made by tracing-opentelemetry's layer instead, every request paid for a span builder behind
/// a shared lock in the registry, a registry lookup to set the caller as parent and another to
/// start it, a lookup and the lock on every exit, a lock and a `dyn` call per attribute through
/// the context that held the span, and a reallocated attribute list: 4,400 of the 21,700
/// instructions telemetry added per request (docs/benchmarks.md). Owned, it is changed in
/// place. There is no `tracing` span for the request either (see [`RequestScope`]).
///
/// Spans the handler opens are children of the OpenTelemetry span through its `context`,
/// attached to the thread while the handler is polled ([`InSpan`]): the OpenTelemetry layer
/// takes a contextual span's parent from the current context when no `tracing` span with an
/// OpenTelemetry span of its own is entered (tracing-opentelemetry 0.34 src/layer.rs:945-961).
struct ServerSpan {
    /// `None` when telemetry is off (no tracer).
    otel: Option<SdkSpan>,
    /// The caller's context with this span as the active one (empty when telemetry is off).
    context: Context,
    /// The span's ids and CPU-sample labels, which the handler's code runs under (`None` when
    /// the span has no valid ids: telemetry off).
    scope: Option<RequestScope>,
}

impl ServerSpan {
    /// The server span, continuing the caller's trace, with the HTTP semantic-convention
    /// attributes of the request, given at creation as the conventions ask (they are the ones
    /// a sampler may decide on). Named `METHOD` until routing tells the route.
    fn start(req: &ServiceRequest, method: RequestMethod<'_>) -> Self {
        let Some(ServerTracer(tracer)) = req.app_data::<ServerTracer>() else {
            return Self {
                otel: None,
                context: Context::new(),
                scope: None,
            };
        };
        let parent = propagation::extract(req.headers()).unwrap_or_default();
        let (scheme, host) = scheme_and_host(req);
        let mut attributes = Vec::with_capacity(SERVER_SPAN_ATTRIBUTES);
        attributes.push(KeyValue::new("http.request.method", method.normalised));
        if let Some(original) = method.original {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                original.to_owned(),
            ));
        }
        attributes.push(KeyValue::new("url.path", req.path().to_owned()));
        attributes.push(KeyValue::new("url.scheme", scheme));
        attributes.push(KeyValue::new("server.address", host.into_owned()));
        if let Some(agent) = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        let builder = tracer
            .span_builder(method.span_name_prefix())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        // The sampler decides here.
        let mut otel = tracer.build_with_context(builder, &parent);
        let ids = SpanIds::of(otel.span_context());
        let profile = ids
            .filter(|ids| ids.sampled && span_profiles::enabled())
            .map(|ids| ids.labels());
        if let (Some(ids), Some(_)) = (ids, profile) {
            otel.set_attribute(span_profiles::profile_attribute(&ids));
        }
        // The span stays here, to be changed without a lock; its children need only its
        // context (ids, flags, `is_remote` false: a child records a local parent).
        let context = parent.with_remote_span_context(otel.span_context().clone());
        Self {
            otel: Some(otel),
            context,
            scope: ids.map(|ids| RequestScope { ids, profile }),
        }
    }

    /// Names the span after its route, records the outcome and ends the span. OpenTelemetry
    /// names a server span `METHOD /route` (`HTTP /route` for an unknown method), and just
    /// `METHOD` when no route matched.
    fn finish(
        &mut self,
        method: RequestMethod<'_>,
        route: Option<&'static str>,
        status: StatusCode,
        error_type: Option<&str>,
        injected: Option<String>,
    ) {
        let prefix = method.span_name_prefix();
        let interned = route.and_then(|route| SPAN_NAMES.intern(prefix, Some(route)));
        if let (Some(labels), Some(name)) = (self.scope.and_then(|s| s.profile), interned) {
            SPAN_NAMES.record_interned(labels.span_id, name);
        }
        let Some(otel) = self.otel.as_mut() else {
            return;
        };
        if otel.is_recording() {
            let name: Cow<'static, str> = match (route, interned) {
                (_, Some(interned)) => Cow::Borrowed(interned.name),
                (Some(route), None) => Cow::Owned(span_profiles::span_name(prefix, Some(route))),
                (None, _) => Cow::Borrowed(prefix),
            };
            otel.update_name(name);
            let code = status.as_u16();
            if let Some(route) = route {
                otel.set_attribute(KeyValue::new("http.route", route));
            }
            otel.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
            if status.is_server_error() {
                otel.set_status(Status::error(""));
                otel.set_attribute(KeyValue::new(
                    "error.type",
                    error_type.map_or_else(|| code.to_string(), str::to_owned),
                ));
            }
            if let Some(injected) = injected {
                otel.set_attribute(KeyValue::new("fault.injected", injected));
            }
        }
        otel.end();
    }
}

/// `url.scheme` and `server.address` as actix's `ConnectionInfo` resolves them (`Forwarded`,
/// `X-Forwarded-Proto` / `-Host`, the request target, `Host`, the server's configuration),
/// without building a `ConnectionInfo` when no proxy header is present: that formats the
/// peer's IP address and allocates four strings, a tenth of the request's own work.
fn scheme_and_host(req: &ServiceRequest) -> (Cow<'static, str>, Cow<'_, str>) {
    // Header names as constants: a `&str` key is parsed into a name on every lookup.
    const X_FORWARDED_PROTO: header::HeaderName =
        header::HeaderName::from_static("x-forwarded-proto");
    const X_FORWARDED_HOST: header::HeaderName =
        header::HeaderName::from_static("x-forwarded-host");
    let headers = req.headers();
    let proxied = headers.contains_key(header::FORWARDED)
        || headers.contains_key(X_FORWARDED_PROTO)
        || headers.contains_key(X_FORWARDED_HOST);
    if proxied {
        let info = req.connection_info();
        return (
            Cow::Owned(info.scheme().to_owned()),
            Cow::Owned(info.host().to_owned()),
        );
    }
    let uri = req.uri();
    let scheme = match uri.scheme_str() {
        Some(scheme) => Cow::Owned(scheme.to_owned()),
        None if req.app_config().secure() => Cow::Borrowed("https"),
        None => Cow::Borrowed("http"),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_else(|| req.app_config().host());
    (scheme, Cow::Borrowed(host))
}

/// The access line, written in the request's scope so it carries the server span's ids (an
/// explicit root: no other span's ids apply, whatever the thread has entered).
fn access_log(
    scope: Option<RequestScope>,
    method: RequestMethod<'_>,
    route: &str,
    status: u16,
    duration_ms: f64,
) {
    let duration_ms = (duration_ms * 1000.0).round() / 1000.0;
    let (method, method_original) = (method.normalised, method.original);
    let _entered = scope.map(RequestScope::enter);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(target: "access", parent: None, method, method_original, route, status, duration_ms, "request completed")
        };
    }
    match status {
        500.. => line!(error),
        400..500 => line!(warn),
        _ => line!(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn scheme_and_host_match_connection_info_with_and_without_proxy_headers() {
        let cases = [
            TestRequest::get().uri("/api/orders/1"),
            TestRequest::get()
                .uri("/api/orders/1")
                .insert_header(("host", "shop.example:8080")),
            TestRequest::get()
                .uri("http://target.example/api/orders/1")
                .insert_header(("host", "shop.example")),
            TestRequest::get()
                .uri("/")
                .insert_header(("host", "shop.example"))
                .insert_header(("x-forwarded-proto", "https"))
                .insert_header(("x-forwarded-host", "public.example")),
            TestRequest::get()
                .uri("/")
                .insert_header(("forwarded", "for=1.2.3.4; proto=https; host=edge.example")),
        ];
        for (i, request) in cases.into_iter().enumerate() {
            let req = request.to_srv_request();
            let info = req.connection_info().clone();
            let (scheme, host) = scheme_and_host(&req);
            assert_eq!((&*scheme, &*host), (info.scheme(), info.host()), "case {i}");
        }
    }

    /// A handler's future that finishes at once or never, and opens a span when dropped.
    struct Handler {
        finishes: bool,
    }

    impl Future for Handler {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut task::Context<'_>) -> Poll<()> {
            if self.finishes {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Drop for Handler {
        fn drop(&mut self) {
            let _ = tracing::info_span!("dropped").entered();
        }
    }

    #[derive(Debug, Clone, Default)]
    struct Collected(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collected {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Starts a server span for a GET of /api/orders/1 from `caller` (a `traceparent`) as the
    /// middleware does (with the OpenTelemetry layer as `telemetry::init` installs it; the
    /// SDK's default sampler, parent-based),
    /// polls `future` in it once and drops it, then finishes the span when the future
    /// finished, or drops it unfinished; returns the spans exported.
    fn run<F: Future<Output = ()> + Unpin>(
        future: F,
        caller: &str,
    ) -> Vec<opentelemetry_sdk::trace::SpanData> {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let collected = Collected::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        let tracer = provider.tracer("test");
        let subscriber = tracing_subscriber::registry().with(otlp_tracing::SpansOnly::new(
            tracing_opentelemetry::layer()
                .with_tracer(tracer.clone())
                .with_context_activation(false),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let req = TestRequest::get()
                .uri("/api/orders/1")
                .insert_header(("traceparent", caller))
                .app_data(ServerTracer(tracer))
                .to_srv_request();
            let method = RequestMethod::of(req.method());
            let mut server = ServerSpan::start(&req, method);
            let finished = {
                let mut in_span =
                    std::pin::pin!(InSpan::new(server.scope, &server.context, future));
                let waker = futures_util::task::noop_waker();
                in_span
                    .as_mut()
                    .poll(&mut task::Context::from_waker(&waker))
                    .is_ready()
            };
            if finished {
                server.finish(method, Some("/api/orders/{id}"), StatusCode::OK, None, None);
            }
        });
        provider.force_flush().unwrap();
        collected.0.lock().unwrap().clone()
    }

    /// The server span (named after its route when it finished) and its child "dropped".
    fn server_and_child(
        spans: &[opentelemetry_sdk::trace::SpanData],
        finished: bool,
    ) -> (
        opentelemetry_sdk::trace::SpanData,
        opentelemetry_sdk::trace::SpanData,
    ) {
        let find = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
        };
        let server = find(if finished {
            "GET /api/orders/{id}"
        } else {
            "GET"
        });
        assert_eq!(spans.len(), 2, "one server span and its child: {spans:#?}");
        (server, find("dropped"))
    }

    #[actix_web::test]
    async fn a_request_dropped_mid_flight_is_no_longer_counted_in_flight() {
        use actix_web::{App, HttpResponse, dev::Service, middleware::from_fn, test};
        let metrics = AppMetrics::new("test", "0", Vec::new());
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(metrics.clone()))
                .wrap(from_fn(observe_request))
                .route("/hang", web::get().to(std::future::pending::<HttpResponse>)),
        )
        .await;
        let in_flight = metrics.active_requests_of("GET");
        let mut call = Box::pin(app.call(test::TestRequest::get().uri("/hang").to_request()));
        let waker = futures_util::task::noop_waker();
        assert!(
            call.as_mut()
                .poll(&mut task::Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(in_flight.get(), 1, "counted while the handler runs");
        drop(call);
        assert_eq!(
            in_flight.get(),
            0,
            "given back when actix drops the request"
        );
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED_CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn a_caller_that_did_not_sample_gets_no_spans_from_the_request_or_its_handler() {
        // A handler span parented to nothing would start a trace of its own and be sampled.
        for finishes in [true, false] {
            let spans = run(Handler { finishes }, UNSAMPLED_CALLER);
            assert!(spans.is_empty(), "{spans:#?}");
        }
    }

    #[test]
    fn a_finished_or_abandoned_handler_is_dropped_inside_the_server_span() {
        for (what, finished) in [("finished", true), ("abandoned", false)] {
            let spans = run(Handler { finishes: finished }, CALLER);
            let (server, dropped) = server_and_child(&spans, finished);
            assert_eq!(server.span_kind, SpanKind::Server, "{what}");
            assert_eq!(
                format!(
                    "{:032x}-{:016x}",
                    server.span_context.trace_id(),
                    server.parent_span_id
                ),
                "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "{what}: the server span continues the caller's trace"
            );
            assert!(server.parent_span_is_remote, "{what}");
            assert!(
                !dropped.parent_span_is_remote,
                "{what}: its parent is local"
            );
            assert_eq!(
                dropped.span_context.trace_id(),
                server.span_context.trace_id(),
                "{what}"
            );
            assert_eq!(
                dropped.parent_span_id,
                server.span_context.span_id(),
                "{what}: the drop's span is the server span's child"
            );
            assert!(
                server.end_time >= dropped.end_time,
                "{what}: the server span ends after what its drop did"
            );
        }
    }
}
