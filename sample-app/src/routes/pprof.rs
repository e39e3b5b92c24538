//! The pull endpoints, for `go tool pprof` and other pull-mode tools, both pprof protobufs from
//! the one profiler that also pushes to Pyroscope (see [`crate::telemetry::profiles`]):
//! - `GET /debug/pprof/profile?seconds=N`: the CPU profile of the next N seconds, each sample
//!   labelled with the span whose work it interrupted (`go tool pprof -tags`);
//! - `GET /debug/pprof/heap`: the sampled heap now (`go tool pprof -sample_index=inuse_space`).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::{
    error::ApiError,
    state::AppState,
    telemetry::profiles::{MAX_PULL_SECONDS, Profiler, PullError},
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
    let window = running(&state)?
        .pull(Duration::from_secs(seconds))
        .await
        .map_err(unavailable)?;
    Ok(pprof_body(window.pprof, "profile.pb"))
}

/// `GET /debug/pprof/heap`.
pub async fn heap(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let window = running(&state)?.heap().await.map_err(unavailable)?;
    Ok(pprof_body(window.pprof, "heap.pb"))
}

fn running(state: &AppState) -> Result<&Profiler, ApiError> {
    state
        .profiler
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable {
            error: "profiling_disabled",
            detail: "the profiler is not running (SAMPLE_APP_TELEMETRY=off?)".into(),
        })
}

fn unavailable(e: PullError) -> ApiError {
    match e {
        PullError::Busy => ApiError::TooManyRequests {
            detail: e.to_string(),
        },
        PullError::Stopped | PullError::Failed(_) => ApiError::Unavailable {
            error: "profiling_failed",
            detail: e.to_string(),
        },
    }
}

fn pprof_body(pprof: Vec<u8>, filename: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(pprof)
}
