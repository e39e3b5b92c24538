//! Incident scenarios: traffic, a timeline of faults switched on the sample services, and the
//! alerts that must fire — run, verified, and always cleaned up.

mod alert_sources;
mod file;
mod runner;
mod verify;

pub use alert_sources::{Alert, AlertSource, SourceKind, check_expected};
pub use file::{ExpectedState, FaultStep, Scenario, Service, Traffic, list};
pub use runner::{Endpoints, ScenarioOutcome, StoppedBeforeTraffic, run_scenario};
pub use verify::{AlertWatch, Sighting, Sightings, Verdict};

/// The endpoints of a `scenario run` command line.
pub fn runner_endpoints(args: &crate::cli::ScenarioRunArgs) -> Endpoints {
    Endpoints {
        target: args.target.clone(),
        downstream: args.downstream.clone(),
        prometheus: args.prometheus.clone(),
        loki: args.loki.clone(),
        alertmanager: args.alertmanager.clone(),
        grafana: args.grafana.clone(),
    }
}
