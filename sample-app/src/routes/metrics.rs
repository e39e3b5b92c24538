//! `GET /metrics`: OpenMetrics text, the only format that carries exemplars.

use actix_web::{HttpResponse, web};

use crate::{error::ApiError, state::AppState, telemetry::metrics::OPENMETRICS_CONTENT_TYPE};

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let body = state
        .metrics
        .encode()
        .map_err(|e| anyhow::anyhow!("while encoding metrics: {e}"))?;
    Ok(HttpResponse::Ok()
        .content_type(OPENMETRICS_CONTENT_TYPE)
        .body(body))
}
