//! Applies the fault plan to one request. Runs inside the telemetry middleware, so injected
//! latency, errors and CPU burn are measured, traced and logged exactly like real ones; the
//! server span gets a `fault.injected` attribute naming what was done to it (handed to the
//! middleware as the request's [`InjectedFaults`]).

use std::time::Duration;

use actix_web::{
    Error, HttpMessage, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::StatusCode,
    middleware::Next,
    web,
};
use rand::Rng;
use tracing::Instrument;

use super::{FaultKind, plan::HeaderFaults};
use crate::{
    error::ApiError,
    routes::demo::spin_for,
    state::{AppState, MAX_CONCURRENT_FAULT_BURNS},
    telemetry::middleware::{InjectedFaults, RouteTemplate},
};

/// What a downstream fault does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamFault {
    /// The call is black-holed: it waits the full timeout and fails.
    Timeout,
    /// The call fails as if the downstream answered 503.
    Error,
}

impl super::Faults {
    /// The fault, if any, for the next downstream call.
    pub fn downstream_fault(&self) -> Option<DownstreamFault> {
        let plan = self.current()?;
        if plan.downstream_timeout == Some(true) {
            return Some(DownstreamFault::Timeout);
        }
        let rate = plan.downstream_error_rate.unwrap_or(0.0);
        (rate > 0.0 && rand::rng().random_bool(rate)).then_some(DownstreamFault::Error)
    }
}

/// CPU burned on behalf of the `cpu_burn` fault: its own frame in every flame graph.
#[inline(never)]
pub fn inject_cpu_burn(duration: Duration) -> u64 {
    // A seed of its own keeps this function's body distinct from `burn_cpu`'s (see `spin_for`).
    std::hint::black_box(spin_for(duration, 0xC2B2_AE3D_27D4_EB4F))
}

pub async fn apply_faults(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(state) = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .filter(|s| s.faults.enabled())
    else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let headers = HeaderFaults::parse(|name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let headers = match headers {
        Ok(headers) => headers,
        Err(e) => {
            let error = ApiError::bad_request("invalid_fault_header", e.to_string());
            return Ok(req.error_response(error).map_into_right_body());
        }
    };
    let route = req.app_data::<RouteTemplate>().map_or("", |r| r.0);
    let plan = state.faults.current().filter(|p| p.applies_to(route));
    if plan.is_none() && headers.is_empty() {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let plan = plan.as_deref().cloned().unwrap_or_default();
    // A burn the header asks for takes a permit first (before any other fault is injected),
    // and holds it until the CPU work ends, even if the client goes away.
    let header_burn = match headers.cpu_burn_ms.filter(|&ms| ms > 0) {
        None => None,
        Some(_) => match state.fault_burns.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let error = ApiError::TooManyRequests {
                    detail: format!(
                        "too many x-fault-cpu-burn-ms burns are running (at most {MAX_CONCURRENT_FAULT_BURNS} at once); retry shortly"
                    ),
                };
                return Ok(req.error_response(error).map_into_right_body());
            }
        },
    };
    let mut injected = Vec::new();

    let jitter = plan
        .latency_jitter_ms
        .filter(|&j| j > 0)
        .map_or(0, |j| rand::rng().random_range(0..=j));
    let latency = headers
        .latency_ms
        .unwrap_or(plan.latency_ms.unwrap_or(0) + jitter);
    if latency > 0 {
        injected.push(FaultKind::Latency.as_str());
        tokio::time::sleep(Duration::from_millis(latency))
            .instrument(tracing::info_span!("injected latency"))
            .await;
    }
    if let Some(ms) = headers
        .cpu_burn_ms
        .or(plan.cpu_burn_ms)
        .filter(|&ms| ms > 0)
    {
        injected.push(FaultKind::CpuBurn.as_str());
        let span = tracing::info_span!("injected cpu burn");
        let burn = tokio::task::spawn_blocking(move || {
            let _permit = header_burn;
            span.in_scope(|| inject_cpu_burn(Duration::from_millis(ms)))
        });
        burn.await.map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("the injected CPU burn failed: {e}"))
        })?;
    }
    if let Some(bytes) = plan.leak_bytes_per_request.filter(|&b| b > 0) {
        injected.push(FaultKind::MemoryLeak.as_str());
        state.faults.leak(bytes, plan.leak_cap());
    }
    let drawn_error = plan
        .error_rate
        .is_some_and(|rate| rate > 0.0 && rand::rng().random_bool(rate));
    let error_status = headers
        .error_status
        .or(drawn_error.then(|| plan.error_status.unwrap_or(500)));
    if error_status.is_some() {
        injected.push(FaultKind::Error.as_str());
    }
    if !injected.is_empty() {
        req.extensions_mut()
            .insert(InjectedFaults(injected.join(",")));
    }

    let Some(status) = error_status else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error = ApiError::Injected { status };
    if status.is_server_error() {
        tracing::error!(error.type = error.kind(), http.response.status_code = status.as_u16(), "injected fault: failing the request");
    } else {
        tracing::warn!(error.type = error.kind(), http.response.status_code = status.as_u16(), "injected fault: refusing the request");
    }
    debug_assert_eq!(error.status_code(), status);
    Ok(req.error_response(error).map_into_right_body())
}
