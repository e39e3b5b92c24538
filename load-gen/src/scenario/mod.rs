//! Incident scenarios: traffic, a timeline of faults switched on the sample services, and the
//! alerts that must fire — run, verified, and always cleaned up.

mod file;
mod runner;
mod verify;

pub use file::{FaultStep, Scenario, Service, Traffic, list};
pub use runner::{Endpoints, ScenarioOutcome, run_scenario};

/// The endpoints of a `scenario run` command line.
pub fn runner_endpoints(args: &crate::cli::ScenarioRunArgs) -> Endpoints {
    Endpoints {
        target: args.target.clone(),
        downstream: args.downstream.clone(),
        prometheus: args.prometheus.clone(),
        grafana: args.grafana.clone(),
    }
}
pub use verify::{AlertWatch, Verdict};
