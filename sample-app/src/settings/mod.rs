//! Typed settings: defaults that run locally with no backend, overridden by flags, by the
//! service's own environment variables and by the standard OpenTelemetry variables (parsed by
//! the `otlp-tracing` crate, which load-gen shares). Everything is validated at start-up.

mod cli;

pub use cli::{Cli, DEFAULT_SERVICE_NAME, Settings};
pub use otlp_tracing::settings::{OtelSettings, OtlpProtocol, SamplerSetting};
