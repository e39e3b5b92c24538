//! The HTTP endpoints, one module per concern.

pub mod admin;
pub mod demo;
pub mod downstream;
pub mod extractors;
pub mod health;
pub mod index;
pub mod metrics;
pub mod orders;
pub mod pprof;
pub mod templates;
