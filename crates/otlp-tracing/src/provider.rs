//! Traces: an OTLP exporter (gRPC or http/protobuf, from the `OTEL_*` settings) behind a batch
//! processor, so a request only ever enqueues its span; export happens on the processor's own
//! thread and a dead collector costs the program nothing but the dropped spans.
//!
//! Plaintext gRPC without compression, the stack's own case, goes through
//! [`crate::encoded_batch`], which encodes each span when it ends ([`crate::encode`]) and sends
//! its batches with [`crate::grpc`]; TLS, compression and http/protobuf go through the SDK's
//! batch processor and opentelemetry-otlp's exporter, behind the same bounds
//! ([`crate::limits`]).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    },
};

use crate::encoded_batch::{BatchSettings, EncodedBatchProcessor, RequestSender};
use crate::grpc::{GrpcConfig, GrpcSpanExporter};
use crate::settings::{OtelSettings, OtlpProtocol, SamplerSetting};
use crate::{backend_health::BackendHealth, limits};

/// Builds the tracer provider. Must run inside a Tokio runtime: the gRPC channel lives on it.
pub fn tracer_provider(otel: &OtelSettings) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder()
        .with_sampler(sampler(otel.sampler))
        .with_resource(resource(otel));
    if !otel.traces_exporter_enabled {
        return Ok(builder.build());
    }
    let env = |k: &str| std::env::var(k).ok();
    let direct = match otel.protocol {
        OtlpProtocol::Grpc => {
            GrpcConfig::from_env(&otel.traces_endpoint, otel.bsp_export_timeout, env)?
        }
        OtlpProtocol::HttpProtobuf => None,
    };
    let context = || {
        format!(
            "while building the OTLP span exporter for {}",
            otel.traces_endpoint
        )
    };
    let processor = match (direct, otel.protocol) {
        (Some(grpc), _) => {
            let sender = GrpcSender {
                exporter: GrpcSpanExporter::new(&grpc).with_context(context)?,
                health: health(otel),
            };
            let settings = BatchSettings {
                max_queue_size: otel.bsp_max_queue_size,
                max_export_batch_size: otel.bsp_max_export_batch_size,
                scheduled_delay: otel.bsp_schedule_delay,
                limits: limits::SpanLimitSettings::from_env(|k| std::env::var(k).ok())?,
            };
            let processor = EncodedBatchProcessor::new(sender, settings)
                .context("while starting the span export thread")?;
            return Ok(builder.with_span_processor(processor).build());
        }
        (None, OtlpProtocol::Grpc) => batched(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&otel.traces_endpoint)
                .with_timeout(otel.bsp_export_timeout)
                .build()
                .with_context(context)?,
            otel,
        ),
        (None, OtlpProtocol::HttpProtobuf) => batched(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&otel.traces_endpoint)
                .with_timeout(otel.bsp_export_timeout)
                .build()
                .with_context(context)?,
            otel,
        ),
    }?;
    Ok(builder.with_span_processor(processor).build())
}

/// `exporter` behind the batch processor, reporting an unreachable collector once and with
/// attribute values and the queue's bytes bounded ([`crate::limits`]).
fn batched<E: SpanExporter + 'static>(
    exporter: E,
    otel: &OtelSettings,
) -> anyhow::Result<limits::BoundedProcessor<BatchSpanProcessor>> {
    let exporter = ObservedExporter {
        inner: exporter,
        health: health(otel),
    };
    let limits = limits::SpanLimitSettings::from_env(|k| std::env::var(k).ok())?;
    let queued = Arc::new(limits::Queued::default());
    let exporter = limits::ReleasingExporter::new(exporter, queued.clone());
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(otel.bsp_schedule_delay)
        .with_max_queue_size(otel.bsp_max_queue_size)
        .with_max_export_batch_size(otel.bsp_max_export_batch_size)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    Ok(limits::BoundedProcessor::new(
        processor,
        queued,
        otel.bsp_max_queue_size,
        limits,
    ))
}

/// The `service.*` and `deployment.*` resource attributes of the service identity
/// (docs/contracts.md).
pub fn resource(otel: &OtelSettings) -> Resource {
    let has = |key: &str| otel.resource_attributes.iter().any(|(k, _)| k == key);
    let mut attributes = vec![KeyValue::new(
        "service.version",
        otel.service_version.clone(),
    )];
    if !has("service.instance.id") {
        attributes.push(KeyValue::new("service.instance.id", instance_id()));
    }
    if !has("deployment.environment.name") {
        attributes.push(KeyValue::new("deployment.environment.name", "development"));
    }
    attributes.extend(
        otel.resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    Resource::builder_empty()
        .with_service_name(otel.service_name.clone())
        .with_attributes(attributes)
        .build()
}

/// The container's host name (its id under Docker) and the process id: unique per running copy.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

fn sampler(setting: SamplerSetting) -> Sampler {
    match setting {
        SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
        SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
        SamplerSetting::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerSetting::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerSetting::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerSetting::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// Wraps the OTLP exporter to report an unreachable collector once, not per batch, and to
/// count what it sent ([`crate::exported`]).
#[derive(Debug)]
struct ObservedExporter<E> {
    inner: E,
    health: Arc<BackendHealth>,
}

fn health(otel: &OtelSettings) -> Arc<BackendHealth> {
    Arc::new(BackendHealth::new(
        "otlp-traces",
        otel.traces_endpoint.clone(),
    ))
}

/// Counts an export's spans by outcome and reports the collector's health from it.
fn observe(health: &BackendHealth, spans: usize, result: &OTelSdkResult) {
    crate::exported::SPAN_EXPORTS.record(spans, result.as_ref().map(|_| ()));
    match result {
        Ok(()) => health.success(),
        Err(error) => health.failure(error),
    };
}

impl<E: SpanExporter> SpanExporter for ObservedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        observe(&self.health, spans, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The direct gRPC exporter as the encoding processor's sender, observed as
/// [`ObservedExporter`] observes the others.
struct GrpcSender {
    exporter: GrpcSpanExporter,
    health: Arc<BackendHealth>,
}

impl RequestSender for GrpcSender {
    fn send(&self, request: Vec<u8>, spans: usize) -> OTelSdkResult {
        // The processor's own thread; the channel's connection runs on the Tokio runtime the
        // exporter was made in, as for the SDK's processor, which blocks the same way.
        let result = futures_executor::block_on(self.exporter.send_request(request.into()));
        observe(&self.health, spans, &result);
        result
    }

    fn shutdown(&self) -> OTelSdkResult {
        self.exporter.shut_down()
    }
}
