//! verify's checks against small in-process fake services: what passes, and that each bad
//! state gives a clear ✗ naming the service — a stopped backend, a Grafana that did not load a
//! data source, an empty stack, a wrong URL — never a hang.

#[path = "../../../test-support/unused_port.rs"]
mod unused_port;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use stack_verify::{Endpoints, Options, Report, checks};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use url::Url;

/// A request as the fake saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    authorization: Option<String>,
    body: String,
}

type Handler = Arc<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

/// Serves `handler` on 127.0.0.1:<free port>; records every request.
async fn fake(
    handler: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static,
) -> (Url, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&data[..i]).to_string(), i + 4);
                    }
                };
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while data.len() < body_start + length {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                let mut words = head.lines().next().unwrap_or("").split_whitespace();
                let method = words.next().unwrap_or("").to_owned();
                let target =
                    Url::parse(&format!("http://x{}", words.next().unwrap_or("/"))).unwrap();
                let request = Request {
                    method,
                    path: target.path().to_owned(),
                    query: target
                        .query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect(),
                    authorization: head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("authorization: ")
                                .or_else(|| l.strip_prefix("Authorization: "))
                        })
                        .map(str::to_owned),
                    body: String::from_utf8_lossy(&data[body_start..]).to_string(),
                };
                log.lock().unwrap().push(request.clone());
                let (status, body) = handler(&request);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

/// A port where nothing listens (a stopped service).
async fn closed_port() -> Url {
    Url::parse(&format!("http://127.0.0.1:{}", unused_port::unused_port())).unwrap()
}

fn options(endpoints: Endpoints, only: &[&str]) -> Options {
    Options {
        endpoints,
        grafana_user: "admin".into(),
        grafana_password: "secret".into(),
        wait: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        probe_alert: true,
        only: only.iter().map(|s| s.to_string()).collect(),
    }
}

async fn verify(options: Options) -> Report {
    let list = checks::all(&options);
    assert!(!list.is_empty(), "no check selected by {:?}", options.only);
    let started = Instant::now();
    let report = stack_verify::run(options, list, |_| {}).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "verify must not hang"
    );
    report
}

fn ok_json(value: Value) -> (u16, String) {
    (200, value.to_string())
}

#[tokio::test]
async fn a_healthy_service_passes_and_a_stopped_one_fails_naming_it() {
    let (app, _) = fake(|r| match r.path.as_str() {
        "/health" => ok_json(json!({"status": "ok"})),
        _ => (404, "{}".into()),
    })
    .await;
    let mut endpoints = Endpoints::host();
    endpoints.sample_app = app;
    endpoints.sample_app_downstream = closed_port().await;
    let report = verify(options(endpoints, &["health.sample-app"])).await;
    assert_eq!(report.checks.len(), 2);
    let (up, down) = (&report.checks[0], &report.checks[1]);
    assert!(up.passed, "{up:?}");
    assert!(up.detail.contains("/health → 200"), "{}", up.detail);
    assert!(!down.passed);
    assert!(
        down.detail.contains("cannot reach sample-app-downstream"),
        "{}",
        down.detail
    );
    assert!(
        down.detail.contains("still so after waiting"),
        "{}",
        down.detail
    );
    assert_eq!(down.needs, ["sample-app-downstream"]);
    assert!(
        down.look
            .as_deref()
            .unwrap()
            .contains("docker compose logs sample-app-downstream")
    );
    assert_eq!(
        down.help.as_deref(),
        Some("docs/troubleshooting.md#verify-unreachable")
    );
    assert!(
        down.cause
            .as_deref()
            .unwrap()
            .starts_with("sample-app-downstream is not running")
    );
    assert_eq!(
        report.render_text().lines().last(),
        Some("1 passed, 1 failed")
    );
    assert!(!report.ok());
}

#[tokio::test]
async fn a_wrong_url_fails_clearly() {
    let mut endpoints = Endpoints::host();
    endpoints.prometheus = Url::parse("http://no-such-host.invalid:9090").unwrap();
    let report = verify(options(endpoints, &["health.prometheus"])).await;
    let check = &report.checks[0];
    assert!(!check.passed);
    assert!(
        check
            .detail
            .starts_with("cannot reach prometheus at http://no-such-host.invalid:9090/-/ready"),
        "{}",
        check.detail
    );
}

/// A Grafana that loaded every data source but Loki, asks for credentials, and whose Loki
/// health check fails.
async fn grafana() -> (Url, Arc<Mutex<Vec<Request>>>) {
    fake(|r| {
        if r.authorization.as_deref() != Some("Basic YWRtaW46c2VjcmV0") {
            return (401, json!({"message": "Unauthorized"}).to_string());
        }
        let sources = [
            ("prometheus", "Prometheus", "prometheus"),
            ("tempo", "Tempo", "tempo"),
            ("pyroscope", "Pyroscope", "grafana-pyroscope-datasource"),
            ("alertmanager", "Alertmanager", "alertmanager"),
        ];
        if let Some(uid) = r.path.strip_prefix("/api/datasources/uid/") {
            if let Some(uid) = uid.strip_suffix("/health") {
                return if uid == "loki" {
                    (
                        400,
                        json!({"status": "ERROR", "message": "Unable to connect with Loki"})
                            .to_string(),
                    )
                } else {
                    ok_json(json!({"status": "OK", "message": "Data source is working"}))
                };
            }
            return match sources.iter().find(|s| s.0 == uid) {
                Some((uid, name, kind)) => {
                    ok_json(json!({"uid": uid, "name": name, "type": kind, "url": "http://x"}))
                }
                None => (404, json!({"message": "Data source not found"}).to_string()),
            };
        }
        (404, "{}".into())
    })
    .await
}

#[tokio::test]
async fn grafana_checks_read_back_what_it_loaded_with_the_admin_credentials() {
    let (url, seen) = grafana().await;
    let mut endpoints = Endpoints::host();
    endpoints.grafana = url;
    let report = verify(options(
        endpoints,
        &[
            "grafana.datasource.",
            "grafana.health.prometheus",
            "grafana.health.loki",
        ],
    ))
    .await;
    let by_id: HashMap<&str, _> = report.checks.iter().map(|c| (c.id.as_str(), c)).collect();
    assert!(by_id["grafana.datasource.prometheus"].passed);
    assert!(by_id["grafana.datasource.tempo"].passed);
    let loki = by_id["grafana.datasource.loki"];
    assert!(!loki.passed);
    assert!(
        loki.detail.contains("grafana answered 404 to")
            && loki.detail.contains("Data source not found"),
        "{}",
        loki.detail
    );
    assert!(
        loki.look
            .as_deref()
            .unwrap()
            .contains("grafana/provisioning/datasources/datasources.yaml")
    );
    assert!(by_id["grafana.health.prometheus"].passed);
    let health = by_id["grafana.health.loki"];
    assert!(
        !health.passed && health.detail.contains("Unable to connect with Loki"),
        "{}",
        health.detail
    );
    assert_eq!(health.needs, ["grafana", "loki"]);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|r| r.authorization.is_some())
    );
}

#[tokio::test]
async fn an_empty_stack_says_to_wait_or_start_load_gen() {
    let (loki, _) = fake(|r| match r.path.as_str() {
        "/loki/api/v1/query_range" => {
            ok_json(json!({"status": "success", "data": {"resultType": "streams", "result": []}}))
        }
        _ => (404, "{}".into()),
    })
    .await;
    let mut endpoints = Endpoints::host();
    endpoints.loki = loki;
    let report = verify(options(endpoints, &["logs.sample-app-downstream"])).await;
    let check = &report.checks[0];
    assert!(!check.passed);
    assert!(
        check.detail.contains("found no line")
            && check.detail.contains("docker compose up -d load-gen"),
        "{}",
        check.detail
    );
}

#[tokio::test]
async fn a_rule_that_fails_to_evaluate_fails_with_its_error() {
    let (prometheus, _) = fake(|r| match r.path.as_str() {
        "/api/v1/rules" => ok_json(json!({"status": "success", "data": {"groups": [
            {"name": "telemetry-pipeline", "file": "/etc/prometheus/rules/alerts.yml", "rules": [
                {"name": "TelemetryBackendDown", "health": "ok"}, {"name": "PrometheusScrapeFailing", "health": "ok"},
                {"name": "TempoDroppingSpans", "health": "err", "lastError": "vector contains metrics with the same labelset"},
                {"name": "LokiDroppingLogs", "health": "ok"}, {"name": "AlloyDroppingLogs", "health": "ok"},
                {"name": "PrometheusRuleFailures", "health": "ok"}, {"name": "PrometheusNotificationsFailing", "health": "ok"}]}]}})),
        _ => (404, "{}".into()),
    })
    .await;
    let mut endpoints = Endpoints::host();
    endpoints.prometheus = prometheus;
    let report = verify(options(
        endpoints,
        &[
            "rules.prometheus.alerts.telemetry-pipeline",
            "rules.prometheus.alerts.slo-burn-rate",
        ],
    ))
    .await;
    let by_id: HashMap<&str, _> = report.checks.iter().map(|c| (c.id.as_str(), c)).collect();
    let bad = by_id["rules.prometheus.alerts.telemetry-pipeline"];
    assert!(
        !bad.passed
            && bad
                .detail
                .contains("TempoDroppingSpans fails to evaluate: vector contains"),
        "{}",
        bad.detail
    );
    assert!(
        !bad.detail.contains("waiting"),
        "an evaluation error is reported at once: {}",
        bad.detail
    );
    let missing = by_id["rules.prometheus.alerts.slo-burn-rate"];
    assert!(
        missing
            .detail
            .contains("Prometheus has no group slo-burn-rate from alerts.yml"),
        "{}",
        missing.detail
    );
}

/// Tempo, Grafana and Loki enough for the trace → logs correlation: the query Loki receives
/// must be the data source's tracesToLogsV2 query, interpolated for the span.
#[tokio::test]
async fn trace_to_logs_runs_the_query_grafana_would_and_checks_the_trace_ids() {
    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let (tempo, _) = fake(|r| match r.path.as_str() {
        "/api/search" => ok_json(json!({"traces": [{"traceID": "af7651916cd43dd8448eb211c80319c"}]})),
        p if p == format!("/api/v2/traces/{TRACE}") => {
            let resource = |service: &str, kind: &str, id: &str| json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": id, "name": "GET /external", "kind": kind,
                    "startTimeUnixNano": "1796283723000000000", "endTimeUnixNano": "1796283723100000000"}]}]});
            ok_json(json!({"trace": {"resourceSpans": [
                resource("load-gen", "SPAN_KIND_CLIENT", "00000000000000a1"),
                resource("sample-app", "SPAN_KIND_SERVER", "00000000000000b2"),
                resource("sample-app-downstream", "SPAN_KIND_SERVER", "00000000000000c3")]}}))
        }
        _ => (404, "{}".into()),
    })
    .await;
    let (grafana, _) = fake(|r| match r.path.as_str() {
        "/api/datasources/uid/tempo" => {
            ok_json(json!({"uid": "tempo", "jsonData": {"tracesToLogsV2": {
            "datasourceUid": "loki", "spanStartTimeShift": "-5m", "spanEndTimeShift": "5m",
            "tags": [{"key": "service.name", "value": "service_name"}],
            "query": "{${__tags}} | trace_id=\"${__span.traceId}\""}}}))
        }
        _ => (404, "{}".into()),
    })
    .await;
    let (loki, seen) = fake(|r| {
        let wanted = format!("{{service_name=\"sample-app\"}} | trace_id=\"{TRACE}\"");
        if r.path != "/loki/api/v1/query_range" || r.query.get("query") != Some(&wanted) {
            return (400, json!({"message": "unexpected query"}).to_string());
        }
        ok_json(json!({"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"service_name": "sample-app", "trace_id": TRACE}, "values": [["1796283723050000000", "{\"message\":\"request completed\"}"]]}]}}))
    })
    .await;
    let mut endpoints = Endpoints::host();
    (endpoints.tempo, endpoints.grafana, endpoints.loki) = (tempo, grafana, loki);
    let report = verify(options(endpoints, &["correlation.trace-to-logs"])).await;
    let check = &report.checks[0];
    assert!(check.passed, "{check:?}");
    assert!(check.detail.contains(TRACE), "{}", check.detail);
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(request.method, "GET");
    // The span's time range, shifted by five minutes each way, in nanoseconds.
    assert_eq!(request.query["start"], "1796283423000000000");
    assert_eq!(request.query["end"], "1796284023100000000");
}

#[tokio::test]
async fn the_json_report_names_every_check_and_its_services() {
    let mut endpoints = Endpoints::host();
    endpoints.alloy = closed_port().await;
    let report = verify(options(endpoints, &["health.alloy"])).await;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["failed"], 1);
    assert_eq!(json["checks"][0]["id"], "health.alloy");
    assert_eq!(json["checks"][0]["needs"], json!(["alloy"]));
    assert!(
        json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[0] == "alloy")
    );
}

/// Alertmanager takes the probe alert, then counts one more webhook notification.
#[tokio::test]
async fn the_probe_alert_goes_through_alertmanager_once() {
    let posted = Arc::new(Mutex::new(0));
    let count = posted.clone();
    let (alertmanager, seen) = fake(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/api/v2/alerts") => {
            *count.lock().unwrap() += 1;
            (200, String::new())
        }
        ("GET", "/metrics") => {
            let sent = *count.lock().unwrap();
            (200, format!("alertmanager_notifications_total{{integration=\"webhook\",receiver_name=\"info\"}} {sent}\n\
                           alertmanager_notifications_failed_total{{integration=\"webhook\"}} 0\n"))
        }
        ("GET", "/api/v2/alerts") => ok_json(json!([{"labels": {"alertname": "StackVerifyProbe"}, "receivers": [{"name": "info"}]}])),
        _ => (404, "{}".into()),
    })
    .await;
    let mut endpoints = Endpoints::host();
    endpoints.alertmanager = alertmanager;
    let report = verify(options(endpoints, &["alerting.alertmanager-to-alert-log"])).await;
    let check = &report.checks[0];
    assert!(check.passed, "{check:?}");
    assert!(
        check
            .detail
            .contains("routed to info; webhook notifications 0 → 1"),
        "{}",
        check.detail
    );
    let requests = seen.lock().unwrap().clone();
    let posts: Vec<_> = requests.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "one probe per run");
    let alert: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(alert[0]["labels"]["alertname"], "StackVerifyProbe");
    assert_eq!(alert[0]["labels"]["severity"], "info");
    assert!(alert[0]["endsAt"].as_str().unwrap().ends_with('Z'));
}

/// A stopped Loki is the likely cause of every check that reads it, not the check's own
/// usual suspects (Alloy's config for the logs check).
#[tokio::test]
async fn a_stopped_backend_is_named_as_the_cause_of_the_checks_that_read_it() {
    let mut endpoints = Endpoints::host();
    endpoints.loki = closed_port().await;
    let report = verify(options(endpoints, &["logs.sample-app"])).await;
    let check = report
        .checks
        .iter()
        .find(|c| c.id == "logs.sample-app")
        .unwrap();
    assert!(!check.passed);
    assert!(
        check
            .detail
            .starts_with("cannot reach loki at http://127.0.0.1:"),
        "{}",
        check.detail
    );
    assert!(
        check.detail.contains("/loki/api/v1/query_range: "),
        "the URL without its query: {}",
        check.detail
    );
    assert!(
        check
            .cause
            .as_deref()
            .unwrap()
            .starts_with("loki is not running"),
        "{:?}",
        check.cause
    );
    assert!(
        check
            .look
            .as_deref()
            .unwrap()
            .contains("docker compose logs loki")
    );
    assert_eq!(
        check.help.as_deref(),
        Some("docs/troubleshooting.md#verify-unreachable")
    );
}
