//! `load-gen`: the traffic of the observability workshop. An open-model load generator that is
//! honest about latency (measured from each request's intended send time, so a stalled server
//! cannot hide), and a scenario runner that switches faults on the sample service and proves
//! the alerts they should trip do fire.
//!
//! Stages: options ([`cli`]) → arrival plan ([`schedule`], [`mix`]) → scheduler ([`run`]) →
//! client ([`client`], each request a traced span: [`client_spans`]) → statistics and report ([`report`]), with live [`progress`] and the
//! generator's own [`metrics`]; [`scenario`] drives runs with a fault timeline; [`history`]
//! writes a week of the same traffic's past for Prometheus to backfill.

pub mod alert_log;
pub mod cli;
pub mod client;
pub mod client_spans;
pub mod console;
pub mod history;
pub mod metrics;
pub mod mix;
pub mod progress;
pub mod report;
pub mod reset;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod signals;
pub mod verify_stack;
