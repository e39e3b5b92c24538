//! `spawn_app()`: builds the application on port 0 without installing global telemetry, serves
//! it on the test's runtime and hands back its address and an HTTP client.

use sample_app::{
    settings::Settings,
    startup::{AppTelemetry, Application},
    telemetry::profiles::Profiler,
};
use serde_json::Value;

pub struct TestApp {
    pub address: String,
    /// `http://` and the `--admin-listen` address, when one was given.
    pub admin_address: Option<String>,
    pub client: reqwest::Client,
}

/// The value of the first sample of `name` whose labels include every `labels` pair.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

/// Settings for a test app with faults enabled, plus extra flags.
pub fn settings_with_faults(extra: &[&str]) -> Settings {
    let mut args = vec![
        "sample-app",
        "--listen",
        "127.0.0.1:0",
        "--faults-enabled",
        "true",
    ];
    args.extend_from_slice(extra);
    Settings::from_sources(args, |_| None).expect("valid test settings")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Settings::for_tests()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_with_profiler(settings, None).await
}

pub async fn spawn_app_with_profiler(settings: Settings, profiler: Option<Profiler>) -> TestApp {
    let app = Application::build(
        &settings,
        AppTelemetry {
            profiler,
            tracer: None,
        },
    )
    .expect("the app builds");
    let address = format!("http://{}", app.address());
    let admin_address = app.admin_address().map(|a| format!("http://{a}"));
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_address,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn put_faults(&self, plan: &str) -> reqwest::Response {
        self.client
            .put(self.url("/admin/faults"))
            .header("content-type", "application/json")
            .body(plan.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn clear_faults(&self) {
        let response = self
            .client
            .delete(self.url("/admin/faults"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200);
    }

    pub async fn status_of(&self, path: &str) -> u16 {
        self.get(path).await.status().as_u16()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics body")
    }
}

/// Reads an error answer of any status: `(status, error kind)`, asserting the JSON shape.
pub async fn error_answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let kind = assert_error(response, status).await;
    (status, kind)
}

/// Asserts an answer of `expected_status` with the service's JSON error body and returns its `error` kind.
pub async fn assert_error(response: reqwest::Response, expected_status: u16) -> String {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected_status, "body: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "no detail in {body}");
    body["error"].as_str().expect("an error kind").to_owned()
}
