//! The four signals, one module each, started together by [`init`] and flushed together by
//! [`TelemetryGuard::shutdown`]. Profiles take five: `profiles` (the windows), `span_profiles`
//! (which request a CPU sample belongs to), `heap`, `pprof_encode` and `pyroscope` (the push).

mod guard;
pub mod heap;
pub mod http_method;
pub mod ids;
pub mod log_writer;
pub mod logs;
pub mod metrics;
pub mod middleware;
pub mod pprof_encode;
pub mod process;
pub mod profiles;
pub mod propagation;
pub mod pyroscope;
pub mod request_scope;
pub mod span_profiles;

pub use guard::{TelemetryGuard, default_log_filter, init};
pub use otlp_tracing::{BackendHealth, Verdict};
