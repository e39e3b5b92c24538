//! Prometheus metrics with `prometheus-client`, named after the OpenTelemetry HTTP semantic
//! conventions in Prometheus form (base units), with exemplars that carry `trace_id` and
//! `span_id` so Grafana can jump from a latency bucket to the trace that landed in it.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, RwLock},
};

use opentelemetry::trace::TraceContextExt;
use prometheus_client::{
    collector::Collector,
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder, text::encode},
    metrics::{counter::Counter, exemplar::HistogramWithExemplars, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{ids::SpanIds, process::ProcessCollector};

/// The media type Prometheus needs to store exemplars: it parses exemplars only from
/// OpenMetrics, and only stores them with `--enable-feature=exemplar-storage`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The OpenTelemetry semantic-convention default buckets for HTTP durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The one `http_route` value for requests that matched no route (never the raw path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerRequestLabels {
    pub http_request_method: String,
    pub http_route: String,
    pub http_response_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActiveRequestLabels {
    pub http_request_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientRequestLabels {
    pub http_request_method: String,
    pub server_address: String,
    /// Empty when no response arrived (Prometheus drops empty labels).
    pub http_response_status_code: String,
    /// Empty on success; `timeout`, `connect`, `500`, … otherwise.
    pub error_type: String,
}

/// Why a request was refused before routing (`sample-app/src/server/rejection.rs`, `Reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolErrorLabels {
    pub reason: String,
}

/// An exemplar's labels: the ids of a sampled span, written as `trace_id` and `span_id` in hex
/// when the metrics are encoded (a scrape), not on every observation (two `String`s a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceExemplar(SpanIds);

impl TraceExemplar {
    /// The ids of `span`, only when it is sampled: an exemplar must point at a trace that
    /// will exist in Tempo.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let cx = span.context();
        let span_ref = cx.span();
        let sc = span_ref.span_context();
        SpanIds::of(sc)
            .filter(|ids| ids.sampled)
            .map(|ids| Self::of_ids(&ids))
    }

    pub fn of_ids(ids: &SpanIds) -> Self {
        Self(*ids)
    }
}

impl EncodeLabelSet for TraceExemplar {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (trace, span) = (self.0.trace_hex(), self.0.span_hex());
        // Hex digits are ASCII.
        let trace = std::str::from_utf8(&trace).map_err(|_| std::fmt::Error)?;
        let span = std::str::from_utf8(&span).map_err(|_| std::fmt::Error)?;
        ("trace_id", trace).encode(encoder.encode_label())?;
        ("span_id", span).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    service_name: String,
}

type DurationFamily<L> = Family<L, HistogramWithExemplars<TraceExemplar>>;

fn duration_histogram() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
}

/// A server series by its label values, all `&'static str` (method, route template) or a
/// number, compared by address: finding a request's series hashes three words instead of
/// three `String`s built for the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    method: (usize, usize),
    route: (usize, usize),
    status: u16,
}

impl SeriesKey {
    fn new(method: &'static str, route: &'static str, status: u16) -> Self {
        let address = |s: &'static str| (s.as_ptr() as usize, s.len());
        Self {
            method: address(method),
            route: address(route),
            status,
        }
    }
}

/// A multiplicative hash for [`SeriesKey`]'s few words (SipHash, the default, costs more than
/// the lookup it protects; the keys are label values the service chose, not client input).
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
    fn write_u16(&mut self, word: u16) {
        self.write_u64(u64::from(word));
    }
}

type SeriesCache<V> = RwLock<HashMap<SeriesKey, V, BuildHasherDefault<WordHasher>>>;

/// The series of `key` from `cache`, made by `create` (the family's `get_or_create`, which
/// allocates its label strings) only the first time.
fn cached<V: Clone>(cache: &SeriesCache<V>, key: SeriesKey, create: impl FnOnce() -> V) -> V {
    let known = cache
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    known.unwrap_or_else(|| {
        let series = create();
        cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, series.clone());
        series
    })
}

/// Every metric the service exposes, in its own registry (tests build as many as they like).
#[derive(Clone)]
pub struct AppMetrics {
    registry: Arc<Registry>,
    pub server_duration: DurationFamily<ServerRequestLabels>,
    pub active_requests: Family<ActiveRequestLabels, Gauge>,
    pub client_duration: DurationFamily<ClientRequestLabels>,
    protocol_errors: Family<ProtocolErrorLabels, Counter>,
    /// Handles to series of the two families above (a handle shares its series' state), so a
    /// request finds its series without building label `String`s. Bounded by the families'
    /// own series (methods are normalised, routes are templates, statuses are numbers).
    server_series: Arc<SeriesCache<HistogramWithExemplars<TraceExemplar>>>,
    active_series: Arc<SeriesCache<Gauge>>,
}

impl AppMetrics {
    /// Registers the service's metrics plus `collectors` (read at scrape time).
    pub fn new(service_name: &str, version: &str, collectors: Vec<Box<dyn Collector>>) -> Self {
        let mut registry = Registry::default();
        let server_duration =
            DurationFamily::<ServerRequestLabels>::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests, by method, route template and status",
            Unit::Seconds,
            server_duration.clone(),
        );
        let active_requests = Family::<ActiveRequestLabels, Gauge>::default();
        registry.register(
            "http_server_active_requests",
            "Number of HTTP server requests in flight",
            active_requests.clone(),
        );
        let client_duration =
            DurationFamily::<ClientRequestLabels>::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_client_request_duration",
            "Duration of HTTP calls to dependencies, by method, server and outcome",
            Unit::Seconds,
            client_duration.clone(),
        );
        let protocol_errors = Family::<ProtocolErrorLabels, Counter>::default();
        registry.register(
            "http_server_protocol_errors",
            "Requests refused before routing (400, 408, 431 from the HTTP/1 layer), by reason",
            protocol_errors.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: version.to_owned(),
                service_name: service_name.to_owned(),
            })
            .set(1);
        registry.register(
            "sample_app_build_info",
            "Always 1; labels say which build runs",
            build_info,
        );
        registry.register_collector(Box::new(ProcessCollector::new()));
        for collector in collectors {
            registry.register_collector(collector);
        }
        Self {
            registry: Arc::new(registry),
            server_duration,
            active_requests,
            client_duration,
            protocol_errors,
            server_series: Arc::default(),
            active_series: Arc::default(),
        }
    }

    /// Records one served request in `http_server_request_duration_seconds`.
    pub fn observe_server_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        seconds: f64,
        exemplar: Option<TraceExemplar>,
    ) {
        let series = cached(
            &self.server_series,
            SeriesKey::new(method, route, status),
            || {
                self.server_duration
                    .get_or_create(&ServerRequestLabels {
                        http_request_method: method.to_owned(),
                        http_route: route.to_owned(),
                        http_response_status_code: status.to_string(),
                    })
                    .clone()
            },
        );
        series.observe(seconds, exemplar, None);
    }

    /// The `http_server_active_requests` gauge of a (normalised) method.
    pub fn active_requests_of(&self, method: &'static str) -> Gauge {
        cached(&self.active_series, SeriesKey::new(method, "", 0), || {
            self.active_requests
                .get_or_create(&ActiveRequestLabels {
                    http_request_method: method.to_owned(),
                })
                .clone()
        })
    }

    /// Counts `n` requests refused before routing for `reason` (`n = 0` exports the series).
    pub fn count_protocol_errors(&self, reason: &str, n: u64) {
        self.protocol_errors
            .get_or_create(&ProtocolErrorLabels {
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    pub fn count_protocol_error(&self, reason: &str) {
        self.count_protocol_errors(reason, 1);
    }

    /// The OpenMetrics text of every metric, for `GET /metrics`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
