//! `load-gen alert-log`: an Alertmanager webhook receiver that works offline. Every alert of
//! every notification becomes one JSON line on stdout (level from severity, the receiver from
//! the path `/notify/<receiver>`, the rule's source link), so Alloy ships notifications to Loki
//! and the workshop sees them in Grafana next to the logs of the incident that caused them.
//! Grafana's webhook contact point sends the same payload (version 1, a superset of
//! Alertmanager's version 4): its notifications arrive under `/notify/grafana`.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;

const MAX_BODY: usize = 1024 * 1024;

/// The part of Alertmanager's webhook payload (version 4) we log.
#[derive(Debug, Deserialize)]
pub struct Notification {
    pub status: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", default)]
    pub starts_at: String,
    /// The rule's source link: Prometheus' graph, or Explore for Loki's ruler and Grafana.
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
}

/// The log lines for one notification received by `receiver`.
pub fn log_lines(receiver: &str, notification: &Notification) -> Vec<String> {
    notification
        .alerts
        .iter()
        .map(|alert| {
            let label = |k: &str| alert.labels.get(k).cloned().unwrap_or_default();
            let note = |k: &str| alert.annotations.get(k).cloned().unwrap_or_default();
            let severity = label("severity");
            let level = match (alert.status.as_str(), severity.as_str()) {
                ("resolved", _) => "info",
                (_, "critical") => "error",
                (_, "warning") => "warn",
                _ => "info",
            };
            json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": level,
                "target": "alert-log",
                "message": format!("[{}] {}: {}", alert.status.to_uppercase(), label("alertname"), note("summary")),
                "receiver": receiver,
                "status": alert.status,
                "alertname": label("alertname"),
                "severity": severity,
                "service": label("service"),
                "summary": note("summary"),
                "description": note("description"),
                "runbook_url": note("runbook_url"),
                "starts_at": alert.starts_at,
                "generator_url": alert.generator_url,
            })
            .to_string()
        })
        .collect()
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn handle(req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.strip_prefix("/notify/")) {
        (&Method::GET, _) if path == "/health" => answer(StatusCode::OK, json!({"status": "ok"})),
        (&Method::POST, Some(receiver)) if !receiver.is_empty() && !receiver.contains('/') => {
            let receiver = receiver.to_owned();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({"error": "body_too_large", "detail": e.to_string()}),
                    );
                }
            };
            match serde_json::from_slice::<Notification>(&body) {
                Ok(notification) => {
                    for line in log_lines(&receiver, &notification) {
                        println!("{line}");
                    }
                    answer(StatusCode::OK, json!({"logged": notification.alerts.len()}))
                }
                Err(e) => answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "not_an_alertmanager_notification", "detail": e.to_string()}),
                ),
            }
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "detail": "POST /notify/<receiver> or GET /health"}),
        ),
    }
}

/// Serves until the process is stopped.
pub async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("while binding {address}"))?;
    crate::note!("alert-log listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("while accepting a connection")?;
        tokio::spawn(async move {
            let service = service_fn(|req| async { Ok::<_, Infallible>(handle(req).await) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_alert_becomes_one_line_with_a_level_from_its_severity() {
        let payload = r#"{"status":"firing","alerts":[
            {"status":"firing","labels":{"alertname":"SampleAppDown","severity":"critical","service":"sample-app"},
             "annotations":{"summary":"sample-app is down","runbook_url":"docs/runbooks/SampleAppDown.md"},"startsAt":"2026-11-21T00:00:00Z",
             "generatorURL":"http://localhost:3000/explore?left=%7B%7D"},
            {"status":"resolved","labels":{"alertname":"SampleAppHighErrorRatio","severity":"warning"},"annotations":{}}]}"#;
        let lines = log_lines("page", &serde_json::from_str(payload).unwrap());
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            (first["level"].as_str(), first["receiver"].as_str()),
            (Some("error"), Some("page"))
        );
        assert_eq!(
            first["message"],
            "[FIRING] SampleAppDown: sample-app is down"
        );
        assert_eq!(
            first["generator_url"],
            "http://localhost:3000/explore?left=%7B%7D"
        );
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["level"], "info", "a resolved alert is good news");
    }
}
