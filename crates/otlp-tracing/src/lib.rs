//! OpenTelemetry trace export shared by `sample-app` and `load-gen`: the standard `OTEL_*`
//! settings ([`settings`]), a tracer provider with an OTLP exporter behind a batch processor
//! ([`provider`]), and one warning per unreachable backend instead of one per batch
//! ([`backend_health`]). Both programs are traced the same way, so both read the same
//! variables the same way.

pub mod backend_health;
pub mod provider;
pub mod settings;

pub use backend_health::{BackendHealth, Verdict};
pub use provider::{resource, tracer_provider};
pub use settings::{OtelSettings, OtlpProtocol, SamplerSetting, ServiceDefaults};
