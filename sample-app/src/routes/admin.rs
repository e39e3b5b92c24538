//! `/admin/faults`: read, replace and clear the fault plan at run time. Only mounted when
//! `SAMPLE_APP_FAULTS_ENABLED=true`; otherwise these paths answer 404 like any unknown route.

use std::time::Instant;

use actix_web::{HttpResponse, web};

use super::extractors::JsonBody;
use crate::{error::ApiError, faults::FaultPlan, state::AppState};

pub async fn get_faults(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.faults.view_at(Instant::now()))
}

pub async fn put_faults(
    plan: JsonBody<FaultPlan>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .faults
        .set(plan.0, Instant::now())
        .map_err(|e| ApiError::Unprocessable {
            error: "invalid_fault_plan",
            detail: e.to_string(),
        })?;
    Ok(HttpResponse::Ok().json(view))
}

pub async fn delete_faults(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.faults.clear())
}
