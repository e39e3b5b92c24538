//! Pushes each profile window (CPU, and heap when on) to Pyroscope's ingest API as a raw pprof body, labelled with
//! the service's name and version (`service_name` is the label every Grafana query uses).
//! Runs as its own task with a bounded queue: a slow or absent Pyroscope drops profiles, never
//! requests.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use url::Url;

use super::{
    BackendHealth,
    profiles::{ProfileKind, ProfileWindow},
};

/// Windows that may wait for upload; beyond that the oldest unsent are dropped.
pub const QUEUE_LENGTH: usize = 8;
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The ingest URL for one window: `/ingest?name=<service>{service_name=…,service_version=…}`.
pub fn ingest_url(
    base: &Url,
    service_name: &str,
    version: &str,
    window: &ProfileWindow,
) -> anyhow::Result<Url> {
    let seconds = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let mut url = base
        .join("ingest")
        .context("while building the Pyroscope ingest URL")?;
    url.query_pairs_mut()
        .append_pair(
            "name",
            &format!("{service_name}{{service_name={service_name},service_version={version}}}"),
        )
        .append_pair("from", &seconds(window.from).to_string())
        .append_pair(
            "until",
            &seconds(window.until)
                .max(seconds(window.from) + 1)
                .to_string(),
        )
        .append_pair("format", "pprof");
    // The spy name becomes the `pyroscope_spy` label; the sample rate matters for CPU only.
    match window.kind {
        ProfileKind::Cpu => url
            .query_pairs_mut()
            .append_pair("spyName", "rust-pprof")
            .append_pair("sampleRate", &super::profiles::SAMPLING_HZ.to_string()),
        ProfileKind::Heap => url
            .query_pairs_mut()
            .append_pair("spyName", "rust-jemalloc"),
    };
    Ok(url)
}

pub struct Uploader {
    pub client: reqwest::Client,
    pub base: Url,
    pub service_name: String,
    pub version: String,
    pub health: Arc<BackendHealth>,
}

impl Uploader {
    /// Uploads windows until the profiler drops its end of the queue.
    pub async fn run(self, mut windows: tokio::sync::mpsc::Receiver<ProfileWindow>) {
        while let Some(window) = windows.recv().await {
            match self.push(&window).await {
                Ok(()) => self.health.success(),
                Err(e) => self.health.failure(&format!("{e:#}")),
            };
        }
    }

    async fn push(&self, window: &ProfileWindow) -> anyhow::Result<()> {
        let url = ingest_url(&self.base, &self.service_name, &self.version, window)?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/octet-stream")
            .timeout(PUSH_TIMEOUT)
            .body(window.pprof.clone())
            .send()
            .await
            .context("while sending a profile to Pyroscope")?;
        if !response.status().is_success() {
            bail!("Pyroscope answered {}", response.status());
        }
        Ok(())
    }
}
