//! Reads settings, starts telemetry, serves until SIGTERM / Ctrl-C, flushes telemetry, exits.

use std::process::ExitCode;

use sample_app::{settings::Settings, startup::Application, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_sources(std::env::args_os(), |k| std::env::var(k).ok()) {
        Ok(settings) => settings,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => return fail("invalid settings", &e),
        },
    };
    let telemetry = match telemetry::init(&settings) {
        Ok(guard) => guard,
        Err(e) => return fail("could not start telemetry", &e),
    };
    let app = match Application::build(&settings, telemetry.profiler()) {
        Ok(app) => app,
        Err(e) => return fail("could not start the service", &e),
    };
    tracing::info!(address = %app.address(), service.name = %settings.otel.service_name, "listening");
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
