//! The active fault plan, its expiry, the memory it leaked, and the metrics that show it:
//! `sample_app_fault_active{kind}` (1 while that kind of fault is on, read at scrape time so an
//! expired plan drops to 0 even without traffic) and `sample_app_fault_leaked_bytes`.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, family::Family, gauge::Gauge},
    registry::Unit,
};
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::plan::{FaultPlan, PlanError};

/// The kinds of fault, as they appear in the `kind` label and the `fault.injected` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Error,
    Latency,
    CpuBurn,
    MemoryLeak,
    DownstreamError,
    DownstreamTimeout,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        Self::Error,
        Self::Latency,
        Self::CpuBurn,
        Self::MemoryLeak,
        Self::DownstreamError,
        Self::DownstreamTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Latency => "latency",
            Self::CpuBurn => "cpu_burn",
            Self::MemoryLeak => "memory_leak",
            Self::DownstreamError => "downstream_error",
            Self::DownstreamTimeout => "downstream_timeout",
        }
    }

    fn is_on(self, plan: &FaultPlan) -> bool {
        let positive = |v: Option<u64>| v.is_some_and(|v| v > 0);
        match self {
            Self::Error => plan.error_rate.is_some_and(|r| r > 0.0),
            Self::Latency => positive(plan.latency_ms) || positive(plan.latency_jitter_ms),
            Self::CpuBurn => positive(plan.cpu_burn_ms),
            Self::MemoryLeak => positive(plan.leak_bytes_per_request),
            Self::DownstreamError => plan.downstream_error_rate.is_some_and(|r| r > 0.0),
            Self::DownstreamTimeout => plan.downstream_timeout == Some(true),
        }
    }
}

struct Active {
    plan: Arc<FaultPlan>,
    expires: Option<(Instant, SystemTime)>,
}

/// The fault switchboard of one service.
pub struct Faults {
    enabled: bool,
    known_routes: &'static [&'static str],
    active: RwLock<Option<Active>>,
    leaked: Mutex<Vec<Vec<u8>>>,
    leaked_bytes: AtomicU64,
}

/// What `GET /admin/faults` shows.
#[derive(Debug, Serialize)]
pub struct FaultsView {
    pub enabled: bool,
    pub plan: Option<FaultPlan>,
    pub active_kinds: Vec<&'static str>,
    pub expires_at: Option<String>,
    pub leaked_bytes: u64,
}

impl Faults {
    pub fn new(enabled: bool, known_routes: &'static [&'static str]) -> Self {
        Self {
            enabled,
            known_routes,
            active: RwLock::new(None),
            leaked: Mutex::default(),
            leaked_bytes: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn known_routes(&self) -> &'static [&'static str] {
        self.known_routes
    }

    /// Validates and installs `plan`, replacing the previous one (its leaked memory stays
    /// until cleared, as a real leak would).
    pub fn set(&self, plan: FaultPlan, now: Instant) -> Result<FaultsView, PlanError> {
        plan.validate(self.known_routes)?;
        let expires = plan.ttl_seconds.map(|s| {
            (
                now + Duration::from_secs(s),
                SystemTime::now() + Duration::from_secs(s),
            )
        });
        let kinds: Vec<&str> = FaultKind::ALL
            .iter()
            .filter(|k| k.is_on(&plan))
            .map(|k| k.as_str())
            .collect();
        tracing::warn!(
            fault.plan = %serde_json::to_string(&plan).unwrap_or_default(),
            fault.kinds = %kinds.join(","),
            "fault plan applied"
        );
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Active {
            plan: Arc::new(plan),
            expires,
        });
        Ok(self.view_at(now))
    }

    /// Clears the plan and releases leaked memory.
    pub fn clear(&self) -> FaultsView {
        let had_plan = self
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        let released = self.release_leak();
        if had_plan || released > 0 {
            tracing::info!(fault.released_bytes = released, "fault plan cleared");
        }
        self.view_at(Instant::now())
    }

    /// The plan in force at `now`; an expired plan is cleared on the way.
    pub fn current_at(&self, now: Instant) -> Option<Arc<FaultPlan>> {
        let expired = {
            let active = self.active.read().unwrap_or_else(|p| p.into_inner());
            match active.as_ref() {
                None => return None,
                Some(a) if a.expires.is_none_or(|(at, _)| now < at) => return Some(a.plan.clone()),
                Some(_) => true,
            }
        };
        if expired {
            let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
            if active
                .as_ref()
                .is_some_and(|a| a.expires.is_some_and(|(at, _)| now >= at))
            {
                *active = None;
                drop(active);
                let released = self.release_leak();
                tracing::info!(
                    fault.released_bytes = released,
                    "fault plan expired (ttl_seconds)"
                );
            }
        }
        None
    }

    pub fn current(&self) -> Option<Arc<FaultPlan>> {
        self.current_at(Instant::now())
    }

    pub fn view_at(&self, now: Instant) -> FaultsView {
        let plan = self.current_at(now);
        let expires_at = self
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|a| a.expires)
            .and_then(|(_, wall)| OffsetDateTime::from(wall).format(&Rfc3339).ok());
        FaultsView {
            enabled: self.enabled,
            active_kinds: plan.as_deref().map(active_kinds).unwrap_or_default(),
            plan: plan.map(|p| (*p).clone()),
            expires_at,
            leaked_bytes: self.leaked_bytes.load(Ordering::Relaxed),
        }
    }

    /// Keeps `bytes` more (touched, so resident) unless that passes the plan's cap. Returns the
    /// bytes kept by this call.
    pub fn leak(&self, bytes: u64, cap: u64) -> u64 {
        let mut leaked = self.leaked.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.leaked_bytes.load(Ordering::Relaxed);
        let take = bytes.min(cap.saturating_sub(now));
        if take > 0 {
            leaked.push(leak_memory(take as usize));
            self.leaked_bytes.store(now + take, Ordering::Relaxed);
        }
        take
    }

    fn release_leak(&self) -> u64 {
        let mut leaked = self.leaked.lock().unwrap_or_else(|p| p.into_inner());
        leaked.clear();
        leaked.shrink_to_fit();
        self.leaked_bytes.swap(0, Ordering::Relaxed)
    }
}

/// The allocation the `memory_leak` fault keeps (touched, so resident): its own frame in every
/// heap profile, as `inject_cpu_burn` is in every CPU profile.
#[inline(never)]
pub fn leak_memory(bytes: usize) -> Vec<u8> {
    std::hint::black_box(vec![0xA5; bytes])
}

/// The kinds a plan switches on, by name.
pub fn active_kinds(plan: &FaultPlan) -> Vec<&'static str> {
    FaultKind::ALL
        .iter()
        .filter(|k| k.is_on(plan))
        .map(|k| k.as_str())
        .collect()
}

/// Exposes the fault metrics, read at scrape time.
#[derive(Clone)]
pub struct FaultCollector(pub Arc<Faults>);

impl std::fmt::Debug for FaultCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl Collector for FaultCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let plan = self.0.current();
        let active = Family::<KindLabel, Gauge>::default();
        for kind in FaultKind::ALL {
            let on = plan.as_deref().is_some_and(|p| kind.is_on(p));
            active
                .get_or_create(&KindLabel {
                    kind: kind.as_str(),
                })
                .set(i64::from(on));
        }
        let metric = encoder.encode_descriptor(
            "sample_app_fault_active",
            "1 while a fault of this kind is switched on (admin API, start-up plan)",
            None,
            MetricType::Gauge,
        )?;
        active.encode(metric)?;
        encoder
            .encode_descriptor(
                "sample_app_fault_leaked",
                "Memory held by the memory_leak fault",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.0.leaked_bytes.load(Ordering::Relaxed) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[&str] = &["/api/orders"];

    #[test]
    fn a_plan_with_a_ttl_expires_and_releases_its_leak() {
        let faults = Faults::new(true, ROUTES);
        let t0 = Instant::now();
        let plan = FaultPlan {
            leak_bytes_per_request: Some(1024),
            ttl_seconds: Some(30),
            ..Default::default()
        };
        faults.set(plan, t0).unwrap();
        assert_eq!(faults.leak(1024, 4096), 1024);
        assert!(faults.current_at(t0 + Duration::from_secs(29)).is_some());
        assert!(faults.current_at(t0 + Duration::from_secs(30)).is_none());
        assert_eq!(faults.view_at(t0 + Duration::from_secs(31)).leaked_bytes, 0);
    }

    #[test]
    fn the_leak_stops_at_its_cap_and_clear_releases_it() {
        let faults = Faults::new(true, ROUTES);
        for _ in 0..10 {
            faults.leak(1000, 2500);
        }
        assert_eq!(faults.view_at(Instant::now()).leaked_bytes, 2500);
        assert_eq!(faults.clear().leaked_bytes, 0);
    }

    #[test]
    fn an_invalid_plan_leaves_the_current_one_in_place() {
        let faults = Faults::new(true, ROUTES);
        let now = Instant::now();
        faults
            .set(
                FaultPlan {
                    latency_ms: Some(5),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let err = faults
            .set(
                FaultPlan {
                    error_rate: Some(7.0),
                    ..Default::default()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(err.field, "error_rate");
        assert_eq!(faults.current_at(now).unwrap().latency_ms, Some(5));
        assert_eq!(faults.view_at(now).active_kinds, ["latency"]);
    }
}
