//! The sample service of the observability stack: an actix-web app that emits Prometheus
//! metrics with exemplars, JSON logs carrying trace ids, OpenTelemetry traces and pprof CPU
//! profiles, all agreeing on the names in `docs/contracts.md`.

pub mod error;
pub mod faults;
pub mod healthcheck;
pub mod routes;
pub mod server;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
