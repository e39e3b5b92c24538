//! The `load-gen` binary, driven as a user would, against an in-process test server whose
//! behaviour each test chooses, and against the real sample app.

mod alert_sources;
mod errors;
mod hostile_targets;
mod limits;
mod open_model;
mod reset;
mod scenarios;
mod stop;
mod support;
mod traced_client;
#[path = "../../../test-support/unused_port.rs"]
mod unused_port;
