//! The endpoints people know from the original four-signal demo: something slow, something
//! failing, and a bounded burst of CPU work that stands out in a flame graph.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, http::StatusCode, web};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::{error::ApiError, state::AppState};

pub async fn slow() -> HttpResponse {
    let delay = Duration::from_millis(rand::rng().random_range(1000..=3000));
    tokio::time::sleep(delay)
        .instrument(tracing::info_span!("simulated slow work"))
        .await;
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "answered slowly on purpose"
    );
    HttpResponse::Ok().json(json!({"delay_ms": delay.as_millis() as u64}))
}

#[derive(Deserialize)]
pub struct ErrorQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub async fn error(
    query: web::Query<ErrorQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Err(match query.kind.as_deref().unwrap_or("500") {
        "500" => {
            tracing::error!(error.type = "simulated_error", "simulated internal error");
            ApiError::Simulated {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                detail: "simulated internal error".into(),
            }
        }
        "404" => ApiError::NotFound {
            error: "simulated_not_found",
            detail: "simulated missing resource".into(),
        },
        "timeout" => {
            let timeout = state
                .downstream
                .as_ref()
                .map_or(Duration::from_secs(2), |d| d.timeout);
            tokio::time::sleep(timeout)
                .instrument(tracing::info_span!("simulated dependency wait"))
                .await;
            tracing::error!(error.type = "downstream_timeout", timeout_ms = timeout.as_millis() as u64, "simulated dependency timeout");
            ApiError::GatewayTimeout {
                detail: format!(
                    "simulated dependency did not answer within {} ms",
                    timeout.as_millis()
                ),
            }
        }
        other => ApiError::bad_request(
            "invalid_error_type",
            format!(
                "type must be 500, 404 or timeout, got '{}'",
                other.chars().take(40).collect::<String>()
            ),
        ),
    })
}

#[derive(Deserialize)]
pub struct LoadQuery {
    ms: Option<String>,
}

pub const MAX_BURST_MS: u64 = 2000;

pub async fn generate_load(
    query: web::Query<LoadQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ms = match query.ms.as_deref() {
        None => 200,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=MAX_BURST_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_ms",
                    format!("ms must be a whole number from 1 to {MAX_BURST_MS}"),
                )
            })?,
    };
    // Owned and moved into the burn: a client that resets its connection drops this handler,
    // not the CPU work, and the permit must last as long as the work.
    let permit =
        state
            .cpu_bursts
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyRequests {
                detail: "too many CPU bursts are running; retry shortly".into(),
            })?;
    let span = tracing::info_span!("burn_cpu", burn.ms = ms);
    let checksum = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        span.in_scope(|| burn_cpu(Duration::from_millis(ms)))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the CPU burst failed: {e}"))?;
    tracing::info!(burn_ms = ms, "burned CPU on request");
    Ok(HttpResponse::Ok().json(json!({"burned_ms": ms, "checksum": checksum})))
}

/// The CPU work of `/generate-load`: its own frame in the flame graph.
#[inline(never)]
pub fn burn_cpu(duration: Duration) -> u64 {
    std::hint::black_box(spin_for(duration, 0x9E37_79B9_7F4A_7C15))
}

/// Busy work for `duration`, from `seed`; returns a value so the optimiser cannot elide it.
/// Each caller passes its own seed: two functions with identical bodies are folded into one
/// address by the optimiser (LLVM's function merging), and a profile then names only one of
/// them — `inject_cpu_burn` vanished from every flame graph behind `burn_cpu` that way.
#[inline(never)]
pub fn spin_for(duration: Duration, seed: u64) -> u64 {
    let started = Instant::now();
    let mut x: u64 = seed;
    while started.elapsed() < duration {
        for _ in 0..10_000 {
            // xorshift: cheap, unpredictable, and not something the optimiser can fold away.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}
