//! Starts the signals that live outside the HTTP app — the global `tracing` subscriber (JSON
//! logs, OpenTelemetry spans, span labels for the CPU sampler) and the profiler (CPU, heap)
//! with its Pyroscope uploader — and stops
//! them in order at shutdown: profiles first (the last window is pushed), then traces (the
//! batch processor flushes the last requests' spans), then logs (the lines gathered for the
//! next batched write, [`super::log_writer`]).

use std::{sync::Arc, thread::JoinHandle, time::Duration};

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use super::{
    BackendHealth,
    log_writer::{BatchedLines, FlushOnDrop, flush_on_panic},
    logs::JsonLogLayer,
    profiles::{Profiler, ProfilerSettings},
    pyroscope::{QUEUE_LENGTH, Uploader},
    span_profiles::SpanProfileLayer,
};
use crate::{settings::Settings, startup::AppTelemetry};

/// The filter when `RUST_LOG` is unset: our events at info; the exporters' own chatter off
/// (an unreachable backend is reported once by [`BackendHealth`] instead).
pub fn default_log_filter() -> &'static str {
    "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,h2=warn,hyper=warn,\
     hyper_util=warn,tonic=warn,tower=warn,reqwest=warn,jemalloc_pprof=warn"
}

/// Keeps the telemetry pipelines alive; call [`TelemetryGuard::shutdown`] before exit.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    /// The tracer of the sample service's own spans (the middleware's server spans, and
    /// through the OpenTelemetry layer the `tracing` spans of handlers).
    tracer: Option<SdkTracer>,
    profiler: Option<(Profiler, JoinHandle<()>)>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    /// Writes the pending log lines when dropped: at the end of [`TelemetryGuard::shutdown`],
    /// or when a service that failed to start drops the guard.
    logs: FlushOnDrop,
}

/// Installs the global subscriber and starts the profiler. Call once, inside the runtime.
pub fn init(settings: &Settings) -> anyhow::Result<TelemetryGuard> {
    // Dropped on every early return below, writing what was logged before it.
    let logs =
        FlushOnDrop(BatchedLines::stdout().context("while starting the log flusher thread")?);
    flush_on_panic(logs.0.clone());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives)
            .with_context(|| format!("RUST_LOG: '{directives}' is not a valid filter"))?,
        Err(_) => EnvFilter::new(default_log_filter()),
    };
    let tracer_provider = if settings.telemetry_enabled {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = otlp_tracing::tracer_provider(&settings.otel)?;
        opentelemetry::global::set_tracer_provider(provider.clone());
        Some(provider)
    } else {
        None
    };
    // Spans only: log events already go to Loki with the span's ids, so copying each one into
    // its span as an OpenTelemetry event would double the data. Code location, thread and
    // busy/idle attributes are off: on a handler's span they say nothing and cost time per poll.
    // Context activation is off: activating a span's context on every enter built the context
    // and attached it twice per request. A span's parent is its `tracing` parent's
    // OpenTelemetry span when it has one, else the thread's current context, which the
    // middleware attaches while it polls a request (tracing-opentelemetry 0.34
    // src/layer.rs:945-961); outgoing `traceparent`s come from the span itself.
    // SpansOnly keeps events out without a per-layer filter, which would cost every request
    // an `enabled` pass per event and a span lookup per enter and exit (see its docs).
    // The server span is made by the middleware itself (`middleware::ServerSpan`), with no
    // `tracing` span (`request_scope`).
    let tracer = tracer_provider
        .as_ref()
        .map(|p| p.tracer(env!("CARGO_PKG_NAME")));
    let otel_layer = tracer.clone().map(|tracer| {
        otlp_tracing::SpansOnly::new(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false),
        )
    });
    // Keeps each thread's CPU-sampler slot on the request being polled there.
    let span_profiles =
        (settings.telemetry_enabled && settings.span_profiles).then_some(SpanProfileLayer);
    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(span_profiles)
        .with(JsonLogLayer::new(logs.0.clone()))
        .try_init()
        .context("while installing the global tracing subscriber")?;
    if span_profiles.is_some() {
        super::span_profiles::enable();
    }

    let (profiler, uploader) = if settings.telemetry_enabled {
        start_profiling(settings)?
    } else {
        (None, None)
    };
    Ok(TelemetryGuard {
        tracer_provider,
        tracer,
        profiler,
        uploader,
        logs,
    })
}

type Profiling = (
    Option<(Profiler, JoinHandle<()>)>,
    Option<tokio::task::JoinHandle<()>>,
);

fn start_profiling(settings: &Settings) -> anyhow::Result<Profiling> {
    let (sink, uploader) = match &settings.pyroscope_url {
        Some(base) => {
            let (sink, windows) = tokio::sync::mpsc::channel(QUEUE_LENGTH);
            let uploader = Uploader {
                client: reqwest::Client::new(),
                base: base.clone(),
                service_name: settings.otel.service_name.clone(),
                version: settings.otel.service_version.clone(),
                health: Arc::new(BackendHealth::new("pyroscope", base.as_str())),
            };
            (Some(sink), Some(tokio::spawn(uploader.run(windows))))
        }
        None => (None, None),
    };
    let profiler = Profiler::start(ProfilerSettings {
        push_interval: settings.profile_push_interval,
        sink,
        heap: settings.heap_profiles,
    })
    .with_context(|| match settings.heap_profiles {
        true => "SAMPLE_APP_HEAP_PROFILES=on",
        false => "while starting the profiler",
    })?;
    Ok((Some(profiler), uploader))
}

impl TelemetryGuard {
    /// What the app borrows from running telemetry.
    pub fn for_app(&self) -> AppTelemetry {
        AppTelemetry {
            profiler: self.profiler(),
            tracer: self.tracer.clone(),
        }
    }

    /// The profiler for `/debug/pprof/profile` and `/heap`, when telemetry is on.
    pub fn profiler(&self) -> Option<Profiler> {
        self.profiler.as_ref().map(|(p, _)| p.clone())
    }

    /// Pushes the last profile and flushes spans, each bounded by `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        if let Some((profiler, thread)) = self.profiler {
            profiler.stop();
            drop(profiler);
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(deadline, joined).await.is_err() {
                tracing::warn!("the profiler did not stop within {deadline:?}");
            }
        }
        if let Some(uploader) = self.uploader
            && tokio::time::timeout(deadline, uploader).await.is_err()
        {
            tracing::warn!("the last profiles were not uploaded within {deadline:?}");
        }
        if let Some(provider) = self.tracer_provider {
            // Blocking shutdown off the runtime thread: the gRPC exporter needs this runtime to
            // make progress, so blocking it here would deadlock and lose every span.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
            match tokio::time::timeout(deadline, flushed).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing spans at shutdown failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the span flush task failed"),
                Err(_) => tracing::warn!("spans were not flushed within {deadline:?}"),
            }
        }
        // Last, so the warnings above are written too.
        drop(self.logs);
    }
}
