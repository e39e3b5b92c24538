//! Liveness and readiness. Neither depends on a telemetry backend or on the downstream: a
//! missing Tempo must never take the service out of rotation.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "checks": {
            "orders": {"stored": state.orders.len()},
            "profiler": if state.profiler.is_some() { "running" } else { "off" },
            "downstream": state.downstream.as_ref().map(|d| d.base.as_str()),
        }
    }))
}
