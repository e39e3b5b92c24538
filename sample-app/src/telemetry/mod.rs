//! The four signals, one module each, started together by [`init`] and flushed together by
//! [`TelemetryGuard::shutdown`].

mod guard;
pub mod http_method;
pub mod logs;
pub mod metrics;
pub mod middleware;
pub mod process;
pub mod profiles;
pub mod propagation;
pub mod pyroscope;

pub use guard::{TelemetryGuard, default_log_filter, init};
pub use otlp_tracing::{BackendHealth, Verdict};
