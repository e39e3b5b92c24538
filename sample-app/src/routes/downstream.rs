//! Calls to the downstream service: a client span per call, W3C context injected into the
//! request, the client-duration histogram (with exemplar), and clear 502/504 answers when the
//! dependency is missing, failing or slow. Also the endpoint the downstream role answers.
//!
//! Downstream faults (`downstream_timeout`, `downstream_error_rate`) are applied here, at the
//! caller, so they leave the same evidence a real failing dependency would: an error client
//! span, an error series in the client histogram, and a 502/504 from the caller.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use rand::Rng;
use serde_json::{Value, json};
use tracing::{Instrument, field::Empty};

use crate::{
    error::ApiError,
    faults::DownstreamFault,
    state::{AppState, Downstream},
    telemetry::{
        metrics::{ClientRequestLabels, TraceExemplar},
        propagation,
    },
};

/// `GET /external`: asks the downstream for the stock of one item.
pub async fn external(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let body = stock_level(&state, "widget").await?;
    let base = state.downstream.as_ref().map(|d| d.base.as_str());
    Ok(HttpResponse::Ok().json(json!({"downstream": base, "response": body})))
}

/// Asks the downstream how many of `item` are in stock (the order flow's dependency).
pub async fn stock_level(state: &AppState, item: &str) -> Result<Value, ApiError> {
    let downstream = state
        .downstream
        .as_ref()
        .ok_or_else(|| ApiError::BadGateway {
            error: "downstream_not_configured",
            detail: "no downstream is configured (set SAMPLE_APP_DOWNSTREAM_URL)".into(),
        })?;
    get_json(state, downstream, &["api", "inventory", item]).await
}

/// `GET /api/inventory/{item}`: what the downstream answers — a stock level after a short,
/// realistic lookup delay.
pub async fn inventory(item: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let item = item.into_inner();
    if item.is_empty() || item.chars().count() > 64 {
        return Err(ApiError::bad_request(
            "invalid_item",
            "item must be 1 to 64 characters",
        ));
    }
    let delay = std::time::Duration::from_millis(rand::rng().random_range(2..=15));
    tokio::time::sleep(delay)
        .instrument(tracing::info_span!("inventory lookup"))
        .await;
    let in_stock = item
        .bytes()
        .fold(17u32, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u32))
        % 500;
    Ok(HttpResponse::Ok().json(json!({"item": item, "in_stock": in_stock})))
}

/// How one call ended.
enum Outcome {
    Answered(reqwest::StatusCode, Value),
    TimedOut,
    Unreachable { connect: bool, detail: String },
}

/// One traced, measured GET to the downstream; non-2xx answers become 502, timeouts 504.
async fn get_json(
    state: &AppState,
    downstream: &Downstream,
    segments: &[&str],
) -> Result<Value, ApiError> {
    let mut url = downstream.base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the downstream URL cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    let host = url.host_str().unwrap_or_default().to_owned();
    let span = tracing::info_span!(
        "HTTP client request",
        otel.name = "GET",
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = "GET",
        server.address = %host,
        server.port = url.port_or_known_default().map(i64::from),
        url.full = %url,
        http.response.status_code = Empty,
        error.type = Empty,
        fault.injected = Empty,
    );
    let fault = state.faults.downstream_fault();
    let started = Instant::now();
    let outcome = match fault {
        Some(DownstreamFault::Timeout) => {
            span.record("fault.injected", "downstream_timeout");
            tokio::time::sleep(downstream.timeout)
                .instrument(span.clone())
                .await;
            Outcome::TimedOut
        }
        Some(DownstreamFault::Error) => {
            span.record("fault.injected", "downstream_error");
            Outcome::Answered(
                reqwest::StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "fault_injected"}),
            )
        }
        None => send(downstream, url, &span).instrument(span.clone()).await,
    };
    let elapsed = started.elapsed();

    let (status, error_type, result) = classify(outcome, &host, downstream);
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if let Some(error_type) = &error_type {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error_type.as_str());
        span.in_scope(|| tracing::warn!(error.type = %error_type, server.address = %host, "downstream call failed"));
    }
    state
        .metrics
        .client_duration
        .get_or_create(&ClientRequestLabels {
            http_request_method: "GET".into(),
            server_address: host,
            http_response_status_code: status.map(|s| s.to_string()).unwrap_or_default(),
            error_type: error_type.unwrap_or_default(),
        })
        .observe(elapsed.as_secs_f64(), TraceExemplar::of_span(&span), None);
    result
}

async fn send(downstream: &Downstream, url: url::Url, span: &tracing::Span) -> Outcome {
    let mut headers = reqwest::header::HeaderMap::new();
    propagation::inject(span, &mut headers);
    let sent = downstream
        .client
        .get(url)
        .headers(headers)
        .timeout(downstream.timeout)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            match response.json::<Value>().await {
                Ok(body) => Outcome::Answered(status, body),
                Err(e) if e.is_timeout() => Outcome::TimedOut,
                Err(_) => Outcome::Answered(status, Value::Null),
            }
        }
        Err(e) if e.is_timeout() => Outcome::TimedOut,
        Err(e) => Outcome::Unreachable {
            connect: e.is_connect(),
            detail: error_chain(&e),
        },
    }
}

/// The status to record, the `error.type` (if failed), and what the caller answers.
fn classify(
    outcome: Outcome,
    host: &str,
    downstream: &Downstream,
) -> (Option<u16>, Option<String>, Result<Value, ApiError>) {
    match outcome {
        Outcome::Answered(status, body) if status.is_success() => {
            (Some(status.as_u16()), None, Ok(body))
        }
        Outcome::Answered(status, body) => (
            Some(status.as_u16()),
            Some(status.as_u16().to_string()),
            Err(ApiError::BadGateway {
                error: "downstream_error",
                detail: format!(
                    "the downstream answered {status}: {}",
                    body.to_string().chars().take(200).collect::<String>()
                ),
            }),
        ),
        Outcome::TimedOut => (
            None,
            Some("timeout".into()),
            Err(ApiError::GatewayTimeout {
                detail: format!(
                    "the downstream did not answer within {} ms",
                    downstream.timeout.as_millis()
                ),
            }),
        ),
        Outcome::Unreachable { connect, detail } => (
            None,
            Some(if connect { "connect" } else { "transport" }.into()),
            Err(ApiError::BadGateway {
                error: "downstream_unreachable",
                detail: format!("could not reach the downstream at {host}: {detail}"),
            }),
        ),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
