//! Black-box tests of the four signals: the real `sample-app` binary, started as a process on
//! port 0 with its stdout (the JSON logs) captured, exporting to a real OTLP receiver (PyPI
//! `oteltest`) and pushing profiles to a capture server that stands in for Pyroscope (no
//! Pyroscope binary installs here). Each test proves a correlation instead of assuming it.

mod correlation;
mod faults;
mod heap_profiles;
mod openmetrics;
mod operational_noise;
mod pprof_reading;
mod profiles;
mod resilience;
mod shutdown;
mod span_profiles;
mod startup;
mod support;
#[path = "../../../test-support/unused_port.rs"]
mod unused_port;
