//! Reads settings, starts telemetry, serves until SIGTERM / Ctrl-C, flushes telemetry, exits.

use std::process::ExitCode;

use sample_app::{healthcheck, settings::Settings, startup::Application, telemetry};

/// jemalloc, for its sampling heap profiler (`SAMPLE_APP_HEAP_PROFILES`); its profiling options
/// are compiled in from `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_sources(std::env::args_os(), |k| std::env::var(k).ok()) {
        Ok(settings) => settings,
        Err(e) => {
            // --help and --version arrive as clap "errors" that print to stdout and exit 0.
            if let Some(clap_error) = e.downcast_ref::<clap::Error>()
                && !clap_error.use_stderr()
            {
                clap_error.exit()
            }
            let message = match e.downcast_ref::<clap::Error>() {
                Some(clap_error) if e.chain().count() > 1 => {
                    format!("{e}: {}", clap_error.render())
                }
                Some(clap_error) => clap_error.render().to_string(),
                None => format!("{e:#}"),
            };
            eprintln!("invalid settings: {}", message.trim_end());
            return ExitCode::from(2);
        }
    };
    if settings.check_health {
        return match healthcheck::probe(settings.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("unhealthy", &e),
        };
    }
    let telemetry = match telemetry::init(&settings) {
        Ok(guard) => guard,
        Err(e) => return fail("could not start telemetry", &e),
    };
    let app = match Application::build(&settings, telemetry.for_app()) {
        Ok(app) => app,
        Err(e) => {
            // The lines logged so far reach stdout before the error reaches stderr.
            drop(telemetry);
            return fail("could not start the service", &e);
        }
    };
    match app.admin_address() {
        Some(admin) => {
            tracing::info!(address = %app.address(), admin_address = %admin, service.name = %settings.otel.service_name, "listening")
        }
        None => {
            tracing::info!(address = %app.address(), service.name = %settings.otel.service_name, "listening")
        }
    }
    let served = app.run_until_stopped().await;
    tracing::info!("stopped serving; flushing telemetry");
    telemetry.shutdown(settings.shutdown_timeout).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("the server failed", &anyhow::Error::from(e)),
    }
}

fn fail(what: &str, error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {what}: {error:#}");
    ExitCode::FAILURE
}
