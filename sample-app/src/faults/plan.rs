//! What a fault plan may say, and the checks that keep it sane: every field is optional, and
//! an invalid one is refused with its name so the user knows what to fix.

use serde::{Deserialize, Serialize};

pub const MAX_LATENCY_MS: u64 = 60_000;
pub const MAX_CPU_BURN_MS: u64 = 5_000;
pub const MAX_LEAK_PER_REQUEST: u64 = 16 * 1024 * 1024;
pub const MAX_LEAK_CAP: u64 = 2 * 1024 * 1024 * 1024;
pub const DEFAULT_LEAK_CAP: u64 = 256 * 1024 * 1024;
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// The statuses a fault may answer with: each is a status the service also answers on its
/// own, so injected errors add no label value to `http_response_status_code`. Any 4xx or 5xx
/// used to be allowed, and with faults enabled (as in compose) one client sending
/// `x-fault-error-status: 400…599` on every route and method grew `/metrics` to 273,406
/// sample lines (40 MB), 27 times Prometheus' `sample_limit` for the job: every scrape would
/// have failed.
pub const INJECTABLE_STATUSES: [u16; 7] = [400, 404, 429, 500, 502, 503, 504];

fn injectable(status: u64) -> bool {
    INJECTABLE_STATUSES.iter().any(|&s| u64::from(s) == status)
}

fn injectable_message() -> String {
    let list: Vec<String> = INJECTABLE_STATUSES.iter().map(u16::to_string).collect();
    format!("must be one of {}", list.join(", "))
}

/// A set of faults to inject. Absent fields inject nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Fraction of requests (0..=1) answered with `error_status` instead of being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The status those requests get: one of [`INJECTABLE_STATUSES`] (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// Added to every request, plus a uniform random `0..=latency_jitter_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_jitter_ms: Option<u64>,
    /// CPU burned per request in `inject_cpu_burn` (it stands out in the flame graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_burn_ms: Option<u64>,
    /// Memory kept per request until `leak_cap_bytes` (default 256 MiB); DELETE releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_bytes_per_request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_cap_bytes: Option<u64>,
    /// Calls to the downstream are black-holed: they wait the full timeout and fail (504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downstream_timeout: Option<bool>,
    /// Fraction of calls to the downstream that fail as if it answered 503 (caller answers 502).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downstream_error_rate: Option<f64>,
    /// Route templates the plan applies to (`/api/orders/{id}`); all application routes if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Seconds until the plan clears itself, so a forgotten fault does not linger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A plan field with an invalid value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PlanError {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> PlanError {
    PlanError {
        field,
        problem: problem.into(),
    }
}

fn check_rate(field: &'static str, value: Option<f64>) -> Result<(), PlanError> {
    match value {
        Some(rate) if !(0.0..=1.0).contains(&rate) => {
            Err(invalid(field, format!("must be from 0 to 1, got {rate}")))
        }
        _ => Ok(()),
    }
}

fn check_max(field: &'static str, value: Option<u64>, max: u64) -> Result<(), PlanError> {
    match value {
        Some(v) if v > max => Err(invalid(field, format!("must be at most {max}, got {v}"))),
        _ => Ok(()),
    }
}

impl FaultPlan {
    /// Checks every field; `known_routes` are the route templates faults may apply to.
    pub fn validate(&self, known_routes: &[&str]) -> Result<(), PlanError> {
        check_rate("error_rate", self.error_rate)?;
        check_rate("downstream_error_rate", self.downstream_error_rate)?;
        if let Some(status) = self.error_status
            && !injectable(status.into())
        {
            return Err(invalid(
                "error_status",
                format!("{}, got {status}", injectable_message()),
            ));
        }
        check_max("latency_ms", self.latency_ms, MAX_LATENCY_MS)?;
        check_max("latency_jitter_ms", self.latency_jitter_ms, MAX_LATENCY_MS)?;
        check_max("cpu_burn_ms", self.cpu_burn_ms, MAX_CPU_BURN_MS)?;
        check_max(
            "leak_bytes_per_request",
            self.leak_bytes_per_request,
            MAX_LEAK_PER_REQUEST,
        )?;
        check_max("leak_cap_bytes", self.leak_cap_bytes, MAX_LEAK_CAP)?;
        if self.leak_cap_bytes.is_some() && self.leak_bytes_per_request.is_none() {
            return Err(invalid(
                "leak_cap_bytes",
                "only makes sense with leak_bytes_per_request",
            ));
        }
        match self.ttl_seconds {
            Some(0) => {
                return Err(invalid(
                    "ttl_seconds",
                    "must be at least 1 (DELETE clears a plan now)",
                ));
            }
            ttl => check_max("ttl_seconds", ttl, MAX_TTL_SECONDS)?,
        }
        for route in self.routes.iter().flatten() {
            if !known_routes.contains(&route.as_str()) {
                return Err(invalid(
                    "routes",
                    format!("'{route}' is not a route template; use one of {known_routes:?}"),
                ));
            }
        }
        Ok(())
    }

    pub fn applies_to(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|routes| routes.iter().any(|r| r == route))
    }

    pub fn leak_cap(&self) -> u64 {
        self.leak_cap_bytes.unwrap_or(DEFAULT_LEAK_CAP)
    }
}

/// Faults asked for by one request's `x-fault-*` headers (only when faults are enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeaderFaults {
    pub latency_ms: Option<u64>,
    pub error_status: Option<u16>,
    pub cpu_burn_ms: Option<u64>,
}

impl HeaderFaults {
    pub const LATENCY: &'static str = "x-fault-latency-ms";
    pub const ERROR_STATUS: &'static str = "x-fault-error-status";
    pub const CPU_BURN: &'static str = "x-fault-cpu-burn-ms";

    /// Reads the headers through `get`; a malformed value is an error naming the header.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Self, PlanError> {
        let number = |name: &'static str, max: u64| -> Result<Option<u64>, PlanError> {
            match get(name) {
                None => Ok(None),
                Some(raw) => match raw.trim().parse::<u64>() {
                    Ok(v) if v <= max => Ok(Some(v)),
                    _ => Err(invalid(
                        name,
                        format!("must be a whole number from 0 to {max}"),
                    )),
                },
            }
        };
        let error_status = match number(Self::ERROR_STATUS, 599)? {
            Some(s) if !injectable(s) => {
                return Err(invalid(Self::ERROR_STATUS, injectable_message()));
            }
            s => s.map(|s| s as u16),
        };
        Ok(Self {
            latency_ms: number(Self::LATENCY, MAX_LATENCY_MS)?,
            error_status,
            cpu_burn_ms: number(Self::CPU_BURN, MAX_CPU_BURN_MS)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[&str] = &["/api/orders", "/api/orders/{id}"];

    fn plan(json: &str) -> FaultPlan {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn each_invalid_field_is_named() {
        for (json, field) in [
            (r#"{"error_rate": 1.5}"#, "error_rate"),
            (r#"{"error_rate": -0.1}"#, "error_rate"),
            (r#"{"error_status": 200}"#, "error_status"),
            (r#"{"error_status": 418}"#, "error_status"),
            (r#"{"latency_ms": 600000}"#, "latency_ms"),
            (r#"{"latency_jitter_ms": 600000}"#, "latency_jitter_ms"),
            (r#"{"cpu_burn_ms": 10000}"#, "cpu_burn_ms"),
            (
                r#"{"leak_bytes_per_request": 999999999}"#,
                "leak_bytes_per_request",
            ),
            (r#"{"leak_cap_bytes": 1024}"#, "leak_cap_bytes"),
            (r#"{"downstream_error_rate": 2}"#, "downstream_error_rate"),
            (r#"{"routes": ["/api/order"]}"#, "routes"),
            (r#"{"ttl_seconds": 0}"#, "ttl_seconds"),
        ] {
            assert_eq!(
                plan(json).validate(ROUTES).unwrap_err().field,
                field,
                "{json}"
            );
        }
    }

    #[test]
    fn a_full_plan_is_valid_and_routes_limit_where_it_applies() {
        let p = plan(
            r#"{"error_rate": 0.1, "error_status": 503, "latency_ms": 100, "latency_jitter_ms": 50,
                "cpu_burn_ms": 20, "leak_bytes_per_request": 1024, "leak_cap_bytes": 1048576,
                "downstream_timeout": true, "downstream_error_rate": 0.5,
                "routes": ["/api/orders"], "ttl_seconds": 60}"#,
        );
        p.validate(ROUTES).unwrap();
        assert!(p.applies_to("/api/orders") && !p.applies_to("/api/orders/{id}"));
        assert!(FaultPlan::default().applies_to("/anything"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_json::from_str::<FaultPlan>(r#"{"eror_rate": 1}"#)
                .unwrap_err()
                .to_string()
                .contains("eror_rate")
        );
    }

    #[test]
    fn header_faults_parse_and_name_a_bad_header() {
        let headers = |name: &str| match name {
            HeaderFaults::LATENCY => Some("250".to_owned()),
            HeaderFaults::ERROR_STATUS => Some("503".to_owned()),
            _ => None,
        };
        let parsed = HeaderFaults::parse(headers).unwrap();
        assert_eq!(
            (parsed.latency_ms, parsed.error_status, parsed.cpu_burn_ms),
            (Some(250), Some(503), None)
        );
        let err = HeaderFaults::parse(|n| (n == HeaderFaults::ERROR_STATUS).then(|| "204".into()))
            .unwrap_err();
        assert_eq!(err.field, HeaderFaults::ERROR_STATUS);
        let err = HeaderFaults::parse(|n| (n == HeaderFaults::CPU_BURN).then(|| "lots".into()))
            .unwrap_err();
        assert_eq!(err.field, HeaderFaults::CPU_BURN);
    }
}
