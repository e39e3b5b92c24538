//! The HTTP server under the app: actix's listener, workers and HTTP/1 dispatcher, with the
//! connection limits of [`ConnectionSettings`], a guard on every connection against heads that
//! stall ([`connection`]), and JSON answers, a count and a log line for requests refused before
//! routing ([`rejection`]).
//!
//! [`listen`] is actix-web's `HttpServer::listen` (actix-web-4.18.1/src/server.rs:639-701) with
//! two changes it offers no hook for: the accepted stream is wrapped, and the dispatcher's output
//! is kept. The server itself is an `actix_server::ServerBuilder`, as `HttpServer` builds it.

pub mod connection;
pub mod rejection;

use std::{fmt, time::Duration};

use actix_http::{HttpService, Request, Response, body::MessageBody, h1};
use actix_server::{GracefulShutdownSignal, ServerBuilder};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _};
use actix_web::{
    dev::{AppConfig, Extensions},
    rt::net::TcpStream,
};

use self::{
    connection::{Connection, GuardedStream},
    rejection::{AnswerSettings, Reason},
};
use crate::telemetry::metrics::AppMetrics;

/// How long connections may idle, stall or linger, and how many a worker serves at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// How long a connection may wait for its next request (`None`: one request per
    /// connection).
    pub keep_alive: Option<Duration>,
    /// How long a request head may take to arrive, from its first byte (from the connection's
    /// start for the first request): then 408 and the connection is closed.
    pub client_request_timeout: Duration,
    /// How long closing a connection may take (the last answer written, the socket shut down).
    pub client_disconnect_timeout: Duration,
    /// Connections each worker thread serves at once; past it the worker stops accepting and
    /// new clients wait in the listen backlog.
    pub max_connections_per_worker: usize,
}

/// Adds `listener` to `builder`, serving the app `factory` makes (once per worker) over
/// HTTP/1 with `settings`. `name` tells the listeners apart in actix's logs.
pub fn listen<F, I, S, B>(
    builder: ServerBuilder,
    name: &str,
    listener: std::net::TcpListener,
    settings: ConnectionSettings,
    metrics: AppMetrics,
    shutdown: GracefulShutdownSignal,
    factory: F,
) -> std::io::Result<ServerBuilder>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let address = listener.local_addr()?;
    for reason in Reason::ALL {
        metrics.count_protocol_errors(reason.as_str(), 0);
    }
    let answers = AnswerSettings {
        head_timeout: settings.client_request_timeout,
        write_timeout: settings.client_disconnect_timeout,
    };
    builder.listen(name, listener, move || {
        let app = factory()
            .into_factory()
            .map_err(|err| err.into().error_response());
        // What `HttpServer::listen` gives the app (server.rs:656 and :695-697). The constructor
        // is doc-hidden ("needed in actix-test crate"; Cargo.lock pins the version); the public
        // `AppConfig::default()` would name the host `localhost:8080` whatever the address.
        let app = actix_service::map_config(app, move |()| {
            AppConfig::__priv_test_new(false, address.to_string(), address)
        });
        // The app's side of the guard: a request is in flight from the moment the dispatcher
        // hands it over until its answer is ready.
        let app = actix_service::apply_fn_factory(app, |req: Request, app: &_| {
            let in_flight = req
                .conn_data::<std::rc::Rc<Connection>>()
                .map(Connection::request_started);
            let answer = Service::call(app, req);
            async move {
                let answer = answer.await;
                drop(in_flight);
                answer
            }
        });
        let shutdown = shutdown.clone();
        let http = HttpService::build()
            .keep_alive(settings.keep_alive)
            .client_request_timeout(settings.client_request_timeout)
            .client_disconnect_timeout(settings.client_disconnect_timeout)
            .local_addr(address)
            // As HttpServer: keep-alive connections are closed when a graceful stop begins.
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .on_connect_ext(|io: &GuardedStream, data: &mut Extensions| {
                data.insert(io.connection().clone());
            })
            .h1(app);
        let metrics = metrics.clone();
        let head_timeout = settings.client_request_timeout;
        actix_service::apply_fn_factory(
            http,
            move |socket: TcpStream, http: &h1::H1ServiceHandler<GuardedStream, _, _, _, _>| {
                let peer = socket.peer_addr().ok();
                let stream = GuardedStream::new(socket, head_timeout);
                let connection = stream.connection().clone();
                let dispatch = http.call((stream, peer));
                let metrics = metrics.clone();
                async move {
                    let output = dispatch.await;
                    rejection::answer(&connection, &output, &metrics, answers).await;
                    Ok::<(), actix_http::error::DispatchError>(())
                }
            },
        )
    })
}
