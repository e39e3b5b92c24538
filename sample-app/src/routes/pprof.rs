//! `GET /debug/pprof/profile?seconds=N`: the CPU profile of the next N seconds as a pprof
//! protobuf, for `go tool pprof` and other pull-mode tools. It shares the one profiler with the
//! Pyroscope push loop (see [`crate::telemetry::profiles`]).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::{
    error::ApiError,
    state::AppState,
    telemetry::profiles::{MAX_PULL_SECONDS, PullError},
};

pub const DEFAULT_SECONDS: u64 = 5;

#[derive(Deserialize)]
pub struct ProfileQuery {
    seconds: Option<String>,
}

pub async fn profile(
    query: web::Query<ProfileQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let seconds = match query.seconds.as_deref() {
        None => DEFAULT_SECONDS,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_PULL_SECONDS).contains(s))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_seconds",
                    format!("seconds must be a whole number from 1 to {MAX_PULL_SECONDS}"),
                )
            })?,
    };
    let profiler = state
        .profiler
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable {
            error: "profiling_disabled",
            detail: "the CPU profiler is not running (SAMPLE_APP_TELEMETRY=off?)".into(),
        })?;
    let window = profiler
        .pull(Duration::from_secs(seconds))
        .await
        .map_err(|e| match e {
            PullError::Busy => ApiError::TooManyRequests {
                detail: e.to_string(),
            },
            PullError::Stopped | PullError::Failed(_) => ApiError::Unavailable {
                error: "profiling_failed",
                detail: e.to_string(),
            },
        })?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("content-disposition", "attachment; filename=\"profile.pb\""))
        .body(window.pprof))
}
