//! Failure injection for workshops and incident rehearsals: a fault plan switched at run time
//! through `/admin/faults` (or set at start-up, or per request with `x-fault-*` headers), and
//! applied to requests so that each fault leaves evidence in every signal it should.

mod inject;
mod plan;
mod state;

pub use inject::{DownstreamFault, apply_faults, inject_cpu_burn};
pub use plan::{
    FaultPlan, HeaderFaults, INJECTABLE_STATUSES, MAX_CPU_BURN_MS, MAX_LATENCY_MS, MAX_LEAK_CAP,
    MAX_LEAK_PER_REQUEST, MAX_TTL_SECONDS, PlanError,
};
pub use state::{FaultCollector, FaultKind, Faults, FaultsView};
