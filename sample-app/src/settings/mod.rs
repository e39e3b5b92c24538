//! Typed settings: defaults that run locally with no backend, overridden by flags, by the
//! service's own environment variables and by the standard OpenTelemetry variables. Everything
//! is validated at start-up.

mod cli;
mod otel;

pub use cli::{Cli, Settings};
pub use otel::{DEFAULT_SERVICE_NAME, OtelSettings, OtlpProtocol, SamplerSetting};
