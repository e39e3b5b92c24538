//! `GET /`: a JSON map of the service's endpoints, so a person can explore it with curl.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("GET", "/", "this index"),
    ("GET", "/health", "liveness: the process serves HTTP"),
    ("GET", "/ready", "readiness: the service can take traffic"),
    (
        "GET",
        "/metrics",
        "Prometheus metrics (OpenMetrics, with exemplars)",
    ),
    ("GET", "/slow", "answers after 1-3 s"),
    ("GET", "/error?type=500|404|timeout", "fails on purpose"),
    ("GET", "/external", "calls the downstream service over HTTP"),
    (
        "GET",
        "/generate-load?ms=200",
        "burns CPU for a bounded time (shows in the profile)",
    ),
    (
        "POST",
        "/api/orders",
        "creates an order from {\"item\": string, \"quantity\": 1..100}",
    ),
    ("GET", "/api/orders/{id}", "reads an order"),
    (
        "GET",
        "/api/inventory/{item}",
        "stock level of an item (what the downstream answers)",
    ),
    (
        "GET",
        "/debug/pprof/profile?seconds=5",
        "a CPU profile of the next N seconds, as pprof (samples labelled with their span)",
    ),
    (
        "GET",
        "/debug/pprof/heap",
        "the sampled heap now (in-use and allocated since start), as pprof",
    ),
];

pub async fn index(state: web::Data<AppState>) -> HttpResponse {
    let endpoints: Vec<_> = ENDPOINTS
        .iter()
        .map(|(method, path, description)| json!({"method": method, "path": path, "description": description}))
        .collect();
    HttpResponse::Ok().json(json!({
        "service": state.service_name,
        "version": state.version,
        "endpoints": endpoints,
    }))
}
