//! The route templates of the service, in one place: the application routes (the ones faults
//! apply to, and a fault plan's `routes` may name) and the operational routes (probes, scrapes,
//! profiles) that are kept out of traces and access logs.

/// The application's route templates.
pub const APP_ROUTES: &[&str] = &[
    "/",
    "/slow",
    "/error",
    "/generate-load",
    "/external",
    "/api/orders",
    "/api/orders/{id}",
    "/api/inventory/{item}",
];

/// Operational routes: health checks, readiness probes, Prometheus scrapes and profile pulls.
/// They are still counted in the request metrics, but make no span and no access line: in
/// compose they alone would be about 24 traces a minute that nobody asked for. They are never
/// faulted, so probes and scrapes keep working during an incident.
pub const OPERATIONAL_ROUTES: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/debug/pprof/profile",
    "/debug/pprof/heap",
];

/// Whether a request path is one of the operational routes (exact match: they take no
/// parameters in the path).
pub fn is_operational(path: &str) -> bool {
    OPERATIONAL_ROUTES.contains(&path)
}
