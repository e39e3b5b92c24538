//! The generator's own Prometheus metrics (`--metrics-listen`), so Grafana can put offered
//! load next to achieved load and client-side latency next to the server's:
//! `loadgen_offered_rate`, `loadgen_requests_sent_total`, `loadgen_requests_completed_total
//! {outcome}`, `loadgen_requests_dropped_total`, `loadgen_requests_late_total`,
//! `loadgen_in_flight` and `loadgen_request_duration_seconds` (from the intended send time).

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use std::sync::atomic::AtomicU64;

/// The HTTP-duration buckets the sample app uses, so the two histograms line up.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `2xx`, `3xx`, `4xx`, `5xx`, or the error kind (`refused`, `timeout`, …).
    pub outcome: String,
}

#[derive(Clone)]
pub struct LoadMetrics {
    registry: Arc<Registry>,
    pub offered_rate: Gauge<f64, AtomicU64>,
    pub sent: Counter,
    pub completed: Family<Outcome, Counter>,
    pub dropped: Counter,
    pub late: Counter,
    pub in_flight: Gauge,
    pub duration: Histogram,
}

impl Default for LoadMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let offered_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "loadgen_offered_rate",
            "Requests per second the schedule offers right now",
            offered_rate.clone(),
        );
        let sent = Counter::default();
        registry.register("loadgen_requests_sent", "Requests sent", sent.clone());
        let completed = Family::<Outcome, Counter>::default();
        registry.register(
            "loadgen_requests_completed",
            "Requests finished, by status class or error kind",
            completed.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "loadgen_requests_dropped",
            "Due requests not sent: too many in flight",
            dropped.clone(),
        );
        let late = Counter::default();
        registry.register(
            "loadgen_requests_late",
            "Requests sent more than 10 ms after their intended time",
            late.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "loadgen_in_flight",
            "Requests sent and not yet finished",
            in_flight.clone(),
        );
        registry.register_collector(Box::new(otlp_tracing::SpanExportCollector));
        registry.register_collector(Box::new(otlp_tracing::SpanProcessedCollector));
        let duration = Histogram::new(BUCKETS);
        registry.register_with_unit(
            "loadgen_request_duration",
            "Client-side latency from the intended send time",
            Unit::Seconds,
            duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            offered_rate,
            sent,
            completed,
            dropped,
            late,
            in_flight,
            duration,
        }
    }
}

impl LoadMetrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Serves `GET /metrics` (any path, in fact) on `address` until the process exits.
    pub async fn serve(self, address: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("while binding --metrics-listen {address}"))?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let metrics = self.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let body = metrics.encode();
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("a valid response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(bound)
    }
}
