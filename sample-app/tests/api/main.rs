//! In-process API tests: the real app on port 0, spoken to over real HTTP.

mod downstream;
mod faults;
mod helpers;
mod hostile_input;
mod metrics;
mod orders;
#[path = "../../../test-support/unused_port.rs"]
mod unused_port;
