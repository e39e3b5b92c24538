//! OpenTelemetry trace export shared by `sample-app` and `load-gen`: the standard `OTEL_*`
//! settings ([`settings`]), a tracer provider with an OTLP exporter behind a batch processor
//! ([`provider`]; for plaintext gRPC each span is encoded when it ends by [`encoded_batch`]
//! and [`encode`], and sent by [`grpc`]), and one warning per unreachable backend instead of one per batch
//! ([`backend_health`]), and a count of the spans each exporter sent ([`exported`]). Both programs are traced the same way, so both read the same
//! variables the same way.

pub mod backend_health;
pub mod encode;
pub mod encoded_batch;
pub mod exported;
pub mod grpc;
pub mod limits;
pub mod provider;
pub mod settings;
pub mod spans_only;

pub use backend_health::{BackendHealth, Verdict};
pub use exported::{SPAN_EXPORTS, SpanExportCollector};
pub use limits::{SPANS_PROCESSED, SpanProcessedCollector};
pub use provider::{resource, tracer_provider};
pub use settings::{OtelSettings, OtlpProtocol, SamplerSetting, ServiceDefaults};
pub use spans_only::SpansOnly;
