//! The services' published HTTP APIs, as verify reads them: one small client per backend, every
//! request with a timeout, every failure a [`Problem`] that says whether waiting could help.
//!
//! References (the pinned versions of `.env`): Prometheus HTTP API
//! (https://prometheus.io/docs/prometheus/3.14/querying/api/), Loki 3.7
//! (https://grafana.com/docs/loki/v3.7.x/reference/loki-http-api/), Tempo 3.0
//! (https://grafana.com/docs/tempo/v3.0.x/api_docs/), Pyroscope 2.2's Connect query API
//! (`api/querier/v1/querier.proto`: `/querier.v1.QuerierService/<method>`, JSON bodies),
//! Alertmanager's v2 API, and Grafana 13.2's HTTP API (`pkg/api/api.go` registers
//! `/api/datasources/uid/:uid`, `/api/datasources/uid/:uid/health`, `/api/dashboards/uid/:uid`;
//! the alerting provisioning API serves `/api/v1/provisioning/{alert-rules,contact-points,policies}`).

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use url::Url;

/// Why an attempt did not pass: something that may still come right (the stack is starting,
/// no data yet), or a definitive failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub text: String,
    /// The service that did not answer at all, when that is the problem: then the likely cause
    /// is that service, whatever the check was about.
    pub unreachable: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Retried until the deadline (`--wait`): a service not answering yet, no data yet.
    Wait,
    /// Reported at once: a query the backend rejects, a wrong answer.
    Fail,
}

impl Problem {
    pub fn wait(text: impl Into<String>) -> Self {
        Self {
            kind: ProblemKind::Wait,
            text: text.into(),
            unreachable: None,
        }
    }
    pub fn fail(text: impl Into<String>) -> Self {
        Self {
            kind: ProblemKind::Fail,
            text: text.into(),
            unreachable: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

pub type Attempt<T = String> = Result<T, Problem>;

/// Seconds since the Unix epoch, now.
pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One service's API: its name (for messages) and base URL.
#[derive(Debug, Clone)]
pub struct Api {
    pub service: &'static str,
    pub base: Url,
    client: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Api {
    pub fn new(service: &'static str, base: Url, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            // Without TLS or a proxy there is nothing to fail on; fall back to the defaults.
            .unwrap_or_default();
        Self {
            service,
            base,
            client,
            auth: None,
        }
    }

    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The URL of `path` (absolute, from the base's root path) with `query` pairs.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &Url) -> Attempt<(u16, String)> {
        let request = match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "no answer within the request timeout".to_owned()
            } else {
                root_cause(&e)
            };
            Problem {
                unreachable: Some(self.service),
                ..Problem::wait(format!(
                    "cannot reach {} at {}: {why}",
                    self.service,
                    without_query(url)
                ))
            }
        })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| {
            Problem::wait(format!(
                "{} at {}: reading the answer: {e}",
                self.service,
                redact(url)
            ))
        })?;
        Ok((status, body))
    }

    /// GET; the status and body, whatever the status.
    pub async fn get_raw(&self, path: &str, query: &[(&str, &str)]) -> Attempt<(u16, String)> {
        let url = self.url(path, query);
        self.send(self.client.get(url.clone()), &url).await
    }

    /// GET a 2xx answer's body.
    pub async fn get_text(&self, path: &str, query: &[(&str, &str)]) -> Attempt {
        let url = self.url(path, query);
        let (status, body) = self.send(self.client.get(url.clone()), &url).await?;
        self.expect_2xx(status, body, &url)
    }

    /// GET a 2xx JSON answer.
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Attempt<Value> {
        let url = self.url(path, query);
        let text = self.get_text(path, query).await?;
        parse_json(self.service, &url, &text)
    }

    /// POST a JSON body, for a 2xx JSON answer (an empty body reads as `null`).
    pub async fn post_json(&self, path: &str, body: &Value) -> Attempt<Value> {
        let url = self.url(path, &[]);
        let (status, text) = self
            .send(self.client.post(url.clone()).json(body), &url)
            .await?;
        let text = self.expect_2xx(status, text, &url)?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        parse_json(self.service, &url, &text)
    }

    fn expect_2xx(&self, status: u16, body: String, url: &Url) -> Attempt {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = format!(
            "{} answered {status} to {}: {}",
            self.service,
            redact(url),
            snippet(&body)
        );
        // A 4xx is the backend refusing the request (a query that does not parse, an unknown
        // id, bad credentials): waiting will not change it. 429 and 5xx may pass (a service
        // starting, overloaded, its own dependency not ready).
        Err(
            if (400..500).contains(&status) && status != 429 && status != 404 {
                Problem::fail(text)
            } else {
                Problem::wait(text)
            },
        )
    }
}

fn parse_json(service: &str, url: &Url, text: &str) -> Attempt<Value> {
    serde_json::from_str(text).map_err(|e| {
        Problem::fail(format!(
            "{service} at {}: the answer is not JSON ({e}): {}",
            redact(url),
            snippet(text)
        ))
    })
}

/// The URL without credentials, for messages.
pub fn redact(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// The URL without credentials and query, for a message about the service itself.
pub fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    redact(&url)
}

/// At most 240 characters of a body, on one line.
pub fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 240 {
        format!("{}…", one_line.chars().take(240).collect::<String>())
    } else if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

/// The innermost cause of an error (reqwest's outer ones repeat the URL): "Connection refused
/// (os error 111)", "failed to lookup address information: …".
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Prometheus (and the Prometheus-compatible APIs of Loki's ruler): `data` of a success.
pub fn prometheus_data(service: &str, body: Value) -> Attempt<Value> {
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(Problem::fail(format!(
            "{service}: {} {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("(no error text)")
        )))
    }
}

/// A trace id or span id as lowercase hex of `width` digits, from Tempo's JSON (hex in search
/// results, without leading zeros; base64 in the OTLP JSON of `/api/v2/traces`).
pub fn hex_id(value: &str, width: usize) -> Option<String> {
    if !value.is_empty() && value.len() <= width && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(format!("{:0>width$}", value.to_ascii_lowercase()));
    }
    let bytes = base64_decode(value)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (hex.len() <= width).then(|| format!("{hex:0>width$}"))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// A span of a trace, as `/api/v2/traces/<id>` gives it (OTLP JSON), flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub kind: String,
    pub trace_id: String,
    pub span_id: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(String, String)>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn is_server(&self) -> bool {
        self.kind == "SPAN_KIND_SERVER" || self.kind == "2"
    }
}

fn attributes(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let key = a["key"].as_str()?.to_owned();
            let value = a["value"].as_object()?.values().next()?;
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            Some((key, value))
        })
        .collect()
}

/// The spans of a `/api/v2/traces/<id>` answer.
pub fn spans_of(body: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    let trace = if body["trace"].is_object() {
        &body["trace"]
    } else {
        body
    };
    for resource in trace["resourceSpans"].as_array().into_iter().flatten() {
        let resource_attributes = attributes(&resource["resource"]["attributes"]);
        let service = resource_attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let id = |key: &str, width| {
                    span[key]
                        .as_str()
                        .and_then(|v| hex_id(v, width))
                        .unwrap_or_default()
                };
                let nanos = |key: &str| {
                    span[key]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .or_else(|| span[key].as_u64())
                        .unwrap_or(0)
                };
                let kind = match &span["kind"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                spans.push(Span {
                    service: service.clone(),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    kind,
                    trace_id: id("traceId", 32),
                    span_id: id("spanId", 16),
                    start_ns: nanos("startTimeUnixNano"),
                    end_ns: nanos("endTimeUnixNano"),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    spans
}

/// The value of every line `name{…labels…} value` of a Prometheus text exposition whose labels
/// include all of `matching`, summed.
pub fn exposition_sum(text: &str, name: &str, matching: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let all = matching
                .iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            all.then_some(value)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_hex_from_search_and_from_otlp_json() {
        assert_eq!(hex_id("a1b2", 16).as_deref(), Some("000000000000a1b2"));
        // base64 of 16 bytes 0x00..0x0f, as /api/v2/traces gives a trace id
        assert_eq!(
            hex_id("AAECAwQFBgcICQoLDA0ODw==", 32).as_deref(),
            Some("000102030405060708090a0b0c0d0e0f")
        );
        assert_eq!(hex_id("not base64!", 32), None);
    }

    #[test]
    fn spans_are_flattened_with_their_service_and_attributes() {
        let body = serde_json::json!({"trace": {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sample-app"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "AAECAwQFBgcICQoLDA0ODw==", "spanId": "AAECAwQFBgc=", "name": "GET /external",
                "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
                "attributes": [{"key": "http.route", "value": {"stringValue": "/external"}},
                               {"key": "http.response.status_code", "value": {"intValue": "200"}}]}]}]}]}});
        let spans = spans_of(&body);
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.service, "sample-app");
        assert_eq!(span.span_id, "0001020304050607");
        assert!(span.is_server());
        assert_eq!(span.attribute("http.route"), Some("/external"));
        assert_eq!(span.attribute("http.response.status_code"), Some("200"));
        assert_eq!((span.start_ns, span.end_ns), (1000, 2000));
    }

    #[test]
    fn exposition_lines_are_summed_by_label() {
        let text = "# HELP x\nalertmanager_notifications_total{integration=\"webhook\",receiver_name=\"info\"} 3\n\
                    alertmanager_notifications_total{integration=\"email\"} 5\n\
                    alertmanager_notifications_total{integration=\"webhook\",receiver_name=\"page\"} 1\n\
                    alertmanager_notifications_total_other 9\n";
        assert_eq!(
            exposition_sum(
                text,
                "alertmanager_notifications_total",
                &[("integration", "webhook")]
            ),
            4.0
        );
        assert_eq!(
            exposition_sum(text, "alertmanager_notifications_total", &[]),
            9.0
        );
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(snippet("a\n  b"), "a b");
        assert_eq!(snippet(""), "(empty body)");
        assert!(snippet(&"x".repeat(500)).ends_with('…'));
    }
}
