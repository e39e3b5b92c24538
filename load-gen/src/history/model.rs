//! How the sample service answers, as far as its request metrics tell: for each request load-gen
//! draws from its mix, the route template, the status and the duration the entry service (and,
//! for the calls it makes, the downstream service) would record — with the fault plans of a
//! scenario in force or not. The numbers come from the service's code: the handlers' own delays
//! (`/slow` 1–3 s, the inventory lookup 2–15 ms), the order of the fault middleware (latency,
//! then CPU burn, then the error), the downstream timeout (2 s, `SAMPLE_APP_DOWNSTREAM_TIMEOUT_MS`)
//! and which routes call the downstream (`POST /api/orders`, `GET /external`).

use rand::{Rng, rngs::SmallRng};
use serde::Deserialize;

/// The sample service's application routes (sample-app/src/routes/templates.rs, `APP_ROUTES`;
/// a test keeps the two lists equal).
pub const APP_ROUTES: &[&str] = &[
    "/",
    "/slow",
    "/error",
    "/generate-load",
    "/external",
    "/api/orders",
    "/api/orders/{id}",
    "/api/inventory/{item}",
];

/// The route every path that matches no template is recorded under.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How long the entry waits for the downstream before it calls the call timed out
/// (sample-app's default `--downstream-timeout-ms`).
pub const DOWNSTREAM_TIMEOUT: f64 = 2.0;

/// The downstream's host, as the entry's `server_address` label has it in the stack.
pub const DOWNSTREAM_HOST: &str = "sample-app-downstream";

/// The part of a scenario's fault plan that changes what the request metrics record (the leak
/// does not: it shows in memory, not in requests).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FaultEffect {
    #[serde(default)]
    pub error_rate: Option<f64>,
    #[serde(default)]
    pub error_status: Option<u16>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub latency_jitter_ms: Option<u64>,
    #[serde(default)]
    pub cpu_burn_ms: Option<u64>,
    #[serde(default)]
    pub downstream_timeout: Option<bool>,
    #[serde(default)]
    pub downstream_error_rate: Option<f64>,
    #[serde(default)]
    pub routes: Option<Vec<String>>,
}

impl FaultEffect {
    pub fn from_plan(plan: &serde_json::Value) -> anyhow::Result<Self> {
        Ok(serde_json::from_value(plan.clone())?)
    }

    /// Per-request faults apply to application routes only, and to `routes` when given.
    fn applies_to(&self, route: &str) -> bool {
        APP_ROUTES.contains(&route)
            && self
                .routes
                .as_ref()
                .is_none_or(|routes| routes.iter().any(|r| r == route))
    }
}

/// The fault plans in force on each service at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults<'a> {
    pub entry: Option<&'a FaultEffect>,
    pub downstream: Option<&'a FaultEffect>,
}

/// One request as a server records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
    pub seconds: f64,
}

/// One call of the entry to the downstream, as the entry's client histogram records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `None` when no answer came (a timeout).
    pub status: Option<u16>,
    /// Empty on success; `timeout` or the downstream's status otherwise.
    pub error_type: &'static str,
    pub seconds: f64,
}

/// Everything one request of load-gen leaves in the two services' request metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub entry: Option<Served>,
    pub call: Option<Call>,
    pub downstream: Option<Served>,
}

/// The route template a path is recorded under (the query string never counts).
pub fn route_of(path_and_query: &str) -> &'static str {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    let parts: Vec<&str> = path.split('/').collect();
    APP_ROUTES
        .iter()
        .copied()
        .find(|template| {
            let pattern: Vec<&str> = template.split('/').collect();
            pattern.len() == parts.len()
                && pattern.iter().zip(&parts).all(|(p, s)| {
                    if p.starts_with('{') {
                        !s.is_empty()
                    } else {
                        p == s
                    }
                })
        })
        .unwrap_or(UNMATCHED_ROUTE)
}

fn method_name(method: &hyper::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// What a handler itself takes, before any fault: a little CPU and a reply.
fn handler_overhead(rng: &mut SmallRng) -> f64 {
    0.000_2 + rng.random::<f64>() * 0.001_8
}

/// The inventory lookup's own delay: 2–15 ms (sample-app/src/routes/downstream.rs).
fn inventory_delay(rng: &mut SmallRng) -> f64 {
    f64::from(rng.random_range(2u32..=15)) / 1000.0 + 0.000_3
}

/// A request's injected latency and CPU burn, and whether the plan fails it (and with what).
fn injected(effect: Option<&FaultEffect>, route: &str, rng: &mut SmallRng) -> (f64, Option<u16>) {
    let Some(effect) = effect.filter(|e| e.applies_to(route)) else {
        return (0.0, None);
    };
    let jitter = effect
        .latency_jitter_ms
        .filter(|&j| j > 0)
        .map_or(0, |j| rng.random_range(0..=j));
    let mut delay = (effect.latency_ms.unwrap_or(0) + jitter) as f64 / 1000.0;
    if let Some(burn) = effect.cpu_burn_ms.filter(|&b| b > 0) {
        // The burn itself, and some waiting for a core while other requests burn theirs.
        delay += burn as f64 / 1000.0 * (1.0 + 0.5 * rng.random::<f64>());
    }
    let failed = effect
        .error_rate
        .is_some_and(|rate| rate > 0.0 && rng.random_bool(rate.min(1.0)));
    (delay, failed.then(|| effect.error_status.unwrap_or(500)))
}

/// The downstream serving `GET /api/inventory/{item}` for the entry.
fn downstream_inventory(faults: Faults, rng: &mut SmallRng) -> Served {
    let route = "/api/inventory/{item}";
    let (delay, failed) = injected(faults.downstream, route, rng);
    let seconds = delay + inventory_delay(rng);
    Served {
        method: "GET",
        route,
        status: failed.unwrap_or(200),
        seconds: if failed.is_some() {
            delay + handler_overhead(rng)
        } else {
            seconds
        },
    }
}

/// The entry's call to the downstream: what the client records, what the downstream serves,
/// and whether the call failed (the caller then answers 502 or 504).
fn call_downstream(faults: Faults, rng: &mut SmallRng) -> (Call, Option<Served>, Option<u16>, f64) {
    let entry = faults.entry;
    if entry.is_some_and(|e| e.downstream_timeout == Some(true)) {
        // Black-holed at the caller: nothing reaches the downstream.
        let call = Call {
            status: None,
            error_type: "timeout",
            seconds: DOWNSTREAM_TIMEOUT,
        };
        return (call, None, Some(504), DOWNSTREAM_TIMEOUT);
    }
    if let Some(rate) = entry.and_then(|e| e.downstream_error_rate)
        && rate > 0.0
        && rng.random_bool(rate.min(1.0))
    {
        let seconds = 0.000_5 + rng.random::<f64>() * 0.001;
        let call = Call {
            status: Some(503),
            error_type: "503",
            seconds,
        };
        return (call, None, Some(502), seconds);
    }
    let served = downstream_inventory(faults, rng);
    let network = 0.000_5 + rng.random::<f64>() * 0.001_5;
    let seconds = served.seconds + network;
    if seconds >= DOWNSTREAM_TIMEOUT {
        let call = Call {
            status: None,
            error_type: "timeout",
            seconds: DOWNSTREAM_TIMEOUT,
        };
        return (call, Some(served), Some(504), DOWNSTREAM_TIMEOUT);
    }
    let ok = (200..300).contains(&served.status);
    let call = Call {
        status: Some(served.status),
        error_type: if ok { "" } else { status_text(served.status) },
        seconds,
    };
    (call, Some(served), (!ok).then_some(502), seconds)
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "400",
        404 => "404",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "_OTHER",
    }
}

/// Serves one request of load-gen's mix at the entry service.
pub fn serve(
    method: &hyper::Method,
    path_and_query: &str,
    faults: Faults,
    rng: &mut SmallRng,
) -> Outcome {
    let route = route_of(path_and_query);
    let method = method_name(method);
    let (delay, failed) = injected(faults.entry, route, rng);
    let mut outcome = Outcome::default();
    let (status, work) = match failed {
        Some(status) => (status, handler_overhead(rng)),
        None => match (method, route) {
            ("POST", "/api/orders") | ("GET", "/external") => {
                let (call, downstream, failed, took) = call_downstream(faults, rng);
                outcome.call = Some(call);
                outcome.downstream = downstream;
                let ok = if route == "/external" { 200 } else { 201 };
                (failed.unwrap_or(ok), took + handler_overhead(rng))
            }
            ("GET", "/api/inventory/{item}") => (200, inventory_delay(rng)),
            ("GET", "/slow") => (200, f64::from(rng.random_range(1000u32..=3000)) / 1000.0),
            ("GET", "/error") => match query_value(path_and_query, "type").unwrap_or("500") {
                "500" => (500, handler_overhead(rng)),
                "404" => (404, handler_overhead(rng)),
                "timeout" => (504, DOWNSTREAM_TIMEOUT),
                _ => (400, handler_overhead(rng)),
            },
            ("GET" | "HEAD", "/" | "/api/orders/{id}") => (200, handler_overhead(rng)),
            (_, UNMATCHED_ROUTE) => (404, handler_overhead(rng)),
            _ => (405, handler_overhead(rng)),
        },
    };
    outcome.entry = Some(Served {
        method,
        route,
        status,
        seconds: delay + work,
    });
    outcome
}

fn query_value<'a>(path_and_query: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path_and_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(5)
    }

    #[test]
    fn paths_are_recorded_under_their_route_template() {
        for (path, route) in [
            ("/", "/"),
            ("/api/orders/17", "/api/orders/{id}"),
            ("/api/orders", "/api/orders"),
            ("/api/inventory/widget", "/api/inventory/{item}"),
            ("/error?type=500", "/error"),
            ("/nothing/here", "unmatched"),
            ("/api/orders/", "unmatched"),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    #[test]
    fn an_order_calls_the_downstream_and_a_black_hole_times_it_out() {
        let healthy = serve(
            &hyper::Method::POST,
            "/api/orders",
            Faults::default(),
            &mut rng(),
        );
        let entry = healthy.entry.unwrap();
        assert_eq!((entry.route, entry.status), ("/api/orders", 201));
        let call = healthy.call.unwrap();
        assert_eq!((call.status, call.error_type), (Some(200), ""));
        assert!(entry.seconds > call.seconds && call.seconds > 0.002);
        assert_eq!(healthy.downstream.unwrap().route, "/api/inventory/{item}");

        let black_hole = FaultEffect {
            downstream_timeout: Some(true),
            ..FaultEffect::default()
        };
        let faults = Faults {
            entry: Some(&black_hole),
            downstream: None,
        };
        let timed_out = serve(&hyper::Method::GET, "/external", faults, &mut rng());
        assert_eq!(timed_out.entry.unwrap().status, 504);
        assert_eq!(timed_out.call.unwrap().error_type, "timeout");
        assert_eq!(timed_out.downstream, None);
    }

    #[test]
    fn an_error_plan_fails_only_its_routes() {
        let plan = FaultEffect::from_plan(&serde_json::json!({
            "error_rate": 1.0, "error_status": 503, "routes": ["/api/orders/{id}"], "ttl_seconds": 600
        }))
        .unwrap();
        let faults = Faults {
            entry: Some(&plan),
            downstream: None,
        };
        let failed = serve(&hyper::Method::GET, "/api/orders/3", faults, &mut rng());
        assert_eq!(failed.entry.unwrap().status, 503);
        let spared = serve(&hyper::Method::GET, "/", faults, &mut rng());
        assert_eq!(spared.entry.unwrap().status, 200);
    }

    #[test]
    fn a_slow_downstream_slows_the_callers_routes() {
        let slow = FaultEffect {
            latency_ms: Some(800),
            latency_jitter_ms: Some(400),
            routes: Some(vec!["/api/inventory/{item}".into()]),
            ..FaultEffect::default()
        };
        let faults = Faults {
            entry: None,
            downstream: Some(&slow),
        };
        let outcome = serve(&hyper::Method::GET, "/external", faults, &mut rng());
        let took = outcome.entry.unwrap().seconds;
        assert!((0.8..1.3).contains(&took), "{took}");
        assert!(outcome.downstream.unwrap().seconds >= 0.8);
    }

    #[test]
    fn the_error_route_answers_what_its_query_asks() {
        for (path, status) in [("/error?type=500", 500), ("/error?type=404", 404)] {
            let outcome = serve(&hyper::Method::GET, path, Faults::default(), &mut rng());
            assert_eq!(outcome.entry.unwrap().status, status);
        }
    }
}
