//! Builds the HTTP application (routes, middleware, shared state) and runs it until SIGTERM or
//! Ctrl-C, letting in-flight requests finish within the shutdown timeout.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::Instant,
};

use actix_web::{
    App,
    dev::{Server, ServerHandle},
    guard,
    middleware::{Condition, from_fn},
    web,
};
use anyhow::Context;
use tokio::sync::Semaphore;

use crate::{
    faults::{FaultCollector, Faults, apply_faults},
    routes::{
        admin, demo, downstream, extractors, health, index, metrics, orders, pprof,
        templates::{APP_ROUTES, OPERATIONAL_ROUTES},
    },
    server,
    settings::Settings,
    state::{AppState, Downstream, MAX_CONCURRENT_BURSTS, MAX_CONCURRENT_FAULT_BURNS, OrderBook},
    telemetry::{
        metrics::AppMetrics,
        middleware::{RouteTemplate, ServerTracer, observe_request},
        profiles::Profiler,
    },
};

/// What running telemetry lends the app: the profiler behind `/debug/pprof`, and the tracer the
/// middleware makes server spans with. Both `None` without telemetry (and in tests of the app
/// alone).
#[derive(Clone, Default)]
pub struct AppTelemetry {
    pub profiler: Option<Profiler>,
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

pub struct Application {
    server: Server,
    address: SocketAddr,
    admin_address: Option<SocketAddr>,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares the server; nothing is served
    /// until [`Application::run_until_stopped`].
    pub fn build(settings: &Settings, telemetry: AppTelemetry) -> anyhow::Result<Self> {
        let AppTelemetry { profiler, tracer } = telemetry;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("while binding {} (SAMPLE_APP_LISTEN)", settings.listen))?;
        let address = listener
            .local_addr()
            .context("while reading the bound address")?;
        let admin_listener = settings
            .admin_listen
            .map(|admin| {
                TcpListener::bind(admin)
                    .with_context(|| format!("while binding {admin} (SAMPLE_APP_ADMIN_LISTEN)"))
            })
            .transpose()?;
        let faults = Arc::new(Faults::new(settings.faults_enabled, APP_ROUTES));
        if let Some(plan) = settings.initial_faults.clone() {
            faults
                .set(plan, Instant::now())
                .context("SAMPLE_APP_FAULTS")?;
        }
        let metrics = AppMetrics::new(
            &settings.otel.service_name,
            &settings.otel.service_version,
            vec![
                Box::new(FaultCollector(faults.clone())),
                Box::new(otlp_tracing::SpanExportCollector),
                Box::new(otlp_tracing::SpanProcessedCollector),
            ],
        );
        let downstream = match &settings.downstream_url {
            Some(base) => Some(Downstream {
                base: base.clone(),
                timeout: settings.downstream_timeout,
                client: reqwest::Client::builder()
                    .build()
                    .context("while building the HTTP client")?,
            }),
            None => None,
        };
        let state = web::Data::new(AppState {
            service_name: settings.otel.service_name.clone(),
            version: settings.otel.service_version.clone(),
            orders: OrderBook::default(),
            downstream,
            profiler,
            metrics: metrics.clone(),
            cpu_bursts: Arc::new(Semaphore::new(MAX_CONCURRENT_BURSTS)),
            fault_burns: Arc::new(Semaphore::new(MAX_CONCURRENT_FAULT_BURNS)),
            faults,
        });
        let observe = settings.telemetry_enabled;
        let faults = settings.faults_enabled;
        let app_metrics = metrics.clone();
        let app = move |parts: Parts| {
            let (state, metrics) = (state.clone(), web::Data::new(app_metrics.clone()));
            let tracer = tracer.clone().map(ServerTracer);
            move || {
                App::new()
                    .app_data(state.clone())
                    .app_data(metrics.clone())
                    .configure(|cfg| {
                        if let Some(tracer) = &tracer {
                            cfg.app_data(tracer.clone());
                        }
                    })
                    .app_data(extractors::query_config())
                    .app_data(extractors::path_config())
                    .wrap(Condition::new(observe, from_fn(observe_request)))
                    .configure(|cfg| routes(cfg, parts))
                    .default_service(web::to(extractors::not_found))
            }
        };
        let builder = actix_server::Server::build()
            .max_concurrent_connections(settings.connections.max_connections_per_worker)
            .shutdown_timeout(settings.shutdown_timeout.as_secs());
        let shutdown = builder.graceful_shutdown_signal();
        let serve = |builder, name, listener, parts| {
            server::listen(
                builder,
                name,
                listener,
                settings.connections,
                metrics.clone(),
                shutdown.clone(),
                app(parts),
            )
            .context("while starting the HTTP server")
        };
        let (public, admin_address) = match admin_listener {
            None => {
                let everything = Parts {
                    app: true,
                    debug: true,
                    admin: faults,
                };
                (serve(builder, "public", listener, everything)?, None)
            }
            Some(admin_listener) => {
                let admin_address = admin_listener
                    .local_addr()
                    .context("while reading the bound admin address")?;
                let app_only = Parts {
                    app: true,
                    debug: false,
                    admin: false,
                };
                let admin_only = Parts {
                    app: false,
                    debug: true,
                    admin: faults,
                };
                let builder = serve(builder, "public", listener, app_only)?;
                (
                    serve(builder, "admin", admin_listener, admin_only)?,
                    Some(admin_address),
                )
            }
        };
        let server = public.run();
        Ok(Self {
            server,
            address,
            admin_address,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/admin/*` and `/debug/pprof/*` are served, when not on [`Self::address`].
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// A handle to stop the server from elsewhere (tests; signals are handled by actix).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Which routes a listener serves: with `--admin-listen`, the public one serves the app and its
/// probes and scrapes, the admin one the profile pulls and the fault switch; without it, one
/// listener serves all.
#[derive(Clone, Copy, Debug)]
struct Parts {
    /// The application routes, `/health`, `/ready`, `/metrics`.
    app: bool,
    /// `/debug/pprof/*`.
    debug: bool,
    /// `/admin/faults` (only with faults enabled).
    admin: bool,
}

fn routes(cfg: &mut web::ServiceConfig, parts: Parts) {
    // Operational routes: never faulted, so health checks, scrapes and profiles keep working.
    let ops = |path: &'static str, route: actix_web::Route| {
        debug_assert!(
            OPERATIONAL_ROUTES.contains(&path),
            "{path} missing from OPERATIONAL_ROUTES"
        );
        resource(path).route(route)
    };
    if parts.app {
        cfg.service(ops("/health", get().to(health::health)))
            .service(ops("/ready", get().to(health::ready)))
            .service(ops("/metrics", get().to(metrics::metrics)));
    }
    if parts.debug {
        cfg.service(ops("/debug/pprof/profile", get().to(pprof::profile)))
            .service(ops("/debug/pprof/heap", get().to(pprof::heap)));
    }
    if parts.admin {
        cfg.service(
            resource("/admin/faults")
                .route(web::get().to(admin::get_faults))
                .route(web::put().to(admin::put_faults))
                .route(web::delete().to(admin::delete_faults)),
        );
    }
    if !parts.app {
        return;
    }
    // Faults wrap the route, not the resource: a request the route does not serve (a 405) is
    // never faulted, so a fault cannot multiply its statuses by every method a client makes
    // up or misuses.
    let app = |path: &'static str, route: actix_web::Route| {
        debug_assert!(APP_ROUTES.contains(&path), "{path} missing from APP_ROUTES");
        resource(path).route(route.wrap(from_fn(apply_faults)))
    };
    cfg.service(app("/", get().to(index::index)))
        .service(app("/slow", get().to(demo::slow)))
        .service(app("/error", get().to(demo::error)))
        .service(app("/generate-load", get().to(demo::generate_load)))
        .service(app("/external", get().to(downstream::external)))
        .service(app("/api/orders", web::post().to(orders::create)))
        .service(app("/api/orders/{id}", get().to(orders::read)))
        .service(app(
            "/api/inventory/{item}",
            get().to(downstream::inventory),
        ));
}

/// A route for GET that answers HEAD too (same handler; actix sends the headers without the
/// body), so `curl -I` and monitoring probes get the real status instead of a 405.
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A resource that tells the telemetry middleware its route template (so the router runs
/// once per request) and answers 405 with a JSON body for methods it has no route for.
fn resource(path: &'static str) -> actix_web::Resource {
    web::resource(path)
        .app_data(RouteTemplate(path))
        .default_service(web::to(extractors::method_not_allowed))
}
