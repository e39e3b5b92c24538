//! Calls to the downstream service: a client span per call, W3C context injected into the
//! request, the client-duration histogram (with exemplar), and clear 502/504 answers when the
//! dependency is missing, failing or slow. Also the endpoint the downstream role answers.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use rand::Rng;
use serde_json::{Value, json};
use tracing::{Instrument, field::Empty};

use crate::{
    error::ApiError,
    state::{AppState, Downstream},
    telemetry::{
        metrics::{AppMetrics, ClientRequestLabels, TraceExemplar},
        propagation,
    },
};

/// `GET /external`: asks the downstream for the stock of one item.
pub async fn external(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let downstream = state
        .downstream
        .as_ref()
        .ok_or_else(|| ApiError::BadGateway {
            error: "downstream_not_configured",
            detail: "no downstream is configured (set SAMPLE_APP_DOWNSTREAM_URL)".into(),
        })?;
    let body = get_json(downstream, &state.metrics, "api/inventory/widget").await?;
    Ok(HttpResponse::Ok().json(json!({"downstream": downstream.base.as_str(), "response": body})))
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

/// One traced, measured GET to the downstream; non-2xx answers become 502, timeouts 504.
pub async fn get_json(
    downstream: &Downstream,
    metrics: &AppMetrics,
    path: &str,
) -> Result<Value, ApiError> {
    let url = downstream
        .base
        .join(path)
        .map_err(|e| anyhow::anyhow!("while building the downstream URL: {e}"))?;
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
    );
    let mut headers = reqwest::header::HeaderMap::new();
    propagation::inject(&span, &mut headers);

    let started = Instant::now();
    let outcome = async {
        let response = downstream
            .client
            .get(url.clone())
            .headers(headers)
            .timeout(downstream.timeout)
            .send()
            .await?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok::<_, reqwest::Error>((status, body))
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();

    let (status_label, error_type, result) = match outcome {
        Ok((status, body)) if status.is_success() => {
            (status.as_u16().to_string(), String::new(), Ok(body))
        }
        Ok((status, body)) => (
            status.as_u16().to_string(),
            status.as_u16().to_string(),
            Err(ApiError::BadGateway {
                error: "downstream_error",
                detail: format!(
                    "the downstream answered {status}: {}",
                    truncate(&body.to_string())
                ),
            }),
        ),
        Err(e) if e.is_timeout() => (
            String::new(),
            "timeout".to_owned(),
            Err(ApiError::GatewayTimeout {
                detail: format!(
                    "the downstream did not answer within {} ms",
                    downstream.timeout.as_millis()
                ),
            }),
        ),
        Err(e) => (
            String::new(),
            if e.is_connect() {
                "connect"
            } else {
                "transport"
            }
            .to_owned(),
            Err(ApiError::BadGateway {
                error: "downstream_unreachable",
                detail: format!(
                    "could not reach the downstream at {host}: {}",
                    error_chain(&e)
                ),
            }),
        ),
    };
    if !status_label.is_empty() {
        span.record(
            "http.response.status_code",
            status_label.parse::<i64>().unwrap_or(0),
        );
    }
    if !error_type.is_empty() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error_type.as_str());
        span.in_scope(|| tracing::warn!(error.type = %error_type, server.address = %host, "downstream call failed"));
    }
    metrics
        .client_duration
        .get_or_create(&ClientRequestLabels {
            http_request_method: "GET".into(),
            server_address: host,
            http_response_status_code: status_label,
            error_type,
        })
        .observe(elapsed.as_secs_f64(), TraceExemplar::of_span(&span), None);
    result
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
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
