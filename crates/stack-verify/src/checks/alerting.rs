//! Alertmanager reaches alert-log: verify sends one test alert (`StackVerifyProbe`, severity
//! info, a service label of its own so it is a group of its own, ending two minutes later) to
//! Alertmanager's API; the info route delivers it to alert-log's webhook after `group_wait`
//! (alertmanager/alertmanager.yml), which Alertmanager counts in
//! `alertmanager_notifications_total{integration="webhook"}`, and alert-log writes it as a log
//! line that Alloy ships to Loki.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{WINDOW_S, loki_lines};
use crate::{
    Check, Ctx, Hint,
    api::{Attempt, Problem, exposition_sum, now_s, snippet},
};

pub const PROBE: &str = "StackVerifyProbe";

pub fn checks() -> Vec<Check> {
    vec![
        Check::new(
            "alerting.alertmanager-to-alert-log",
            "alerting",
            format!("Alertmanager delivers a test alert ({PROBE}, severity info) to alert-log's webhook"),
            &["alertmanager", "alert-log"],
            Hint {
                cause: "Alertmanager cannot reach alert-log (its webhook URL), or the info route sends elsewhere".into(),
                look: "alertmanager/alertmanager.yml, receivers info/page/ticket webhook_configs url; `docker compose logs alertmanager | grep -i notify`; `docker compose logs alert-log`".into(),
                anchor: "verify-alerting",
            },
            |ctx: Arc<Ctx>| async move { delivered(&ctx).await },
        ),
        Check::new(
            "alerting.alert-log-in-loki",
            "alerting",
            format!("alert-log's line for the test alert is in Loki ({{service_name=\"alert-log\"}} |= \"{PROBE}\")"),
            &["alertmanager", "alert-log", "alloy", "loki"],
            Hint {
                cause: "alert-log did not log the notification, or Alloy does not ship alert-log's output".into(),
                look: "`docker compose logs alert-log`; alloy/config.alloy (discovery.docker filter)".into(),
                anchor: "verify-alerting",
            },
            |ctx: Arc<Ctx>| async move {
                let probe = posted(&ctx).await?;
                let service = probe["service"].as_str().unwrap_or_default().to_owned();
                let query = format!("{{service_name=\"alert-log\"}} |= \"{PROBE}\" |= \"{service}\"");
                let lines = loki_lines(&ctx, &query, WINDOW_S, 0.0, 5).await?;
                match lines.first() {
                    Some((_, line)) => Ok(format!("`{query}` → {}", snippet(line))),
                    None => Err(Problem::wait(format!("`{query}` found nothing yet"))),
                }
            },
        ),
    ]
}

async fn webhook_counts(ctx: &Ctx) -> Attempt<(f64, f64)> {
    let text = ctx.alertmanager.get_text("/metrics", &[]).await?;
    let sent = exposition_sum(
        &text,
        "alertmanager_notifications_total",
        &[("integration", "webhook")],
    );
    let failed = exposition_sum(
        &text,
        "alertmanager_notifications_failed_total",
        &[("integration", "webhook")],
    );
    Ok((sent, failed))
}

/// Sends the probe once per run: what the counters said before, and its service label.
async fn posted(ctx: &Arc<Ctx>) -> Attempt<Value> {
    let inner = ctx.clone();
    ctx.once("probe", || async move {
        let (sent, failed) = webhook_counts(&inner).await?;
        let service = format!("stack-verify-{}", inner.run_id);
        let alert = json!([{
            "labels": {"alertname": PROBE, "severity": "info", "service": service},
            "annotations": {"summary": "a test notification sent by `verify` (docs/troubleshooting.md#verify-alerting)"},
            "endsAt": rfc3339(now_s() + 120.0),
        }]);
        inner.alertmanager.post_json("/api/v2/alerts", &alert).await?;
        Ok(json!({"service": service, "sent": sent, "failed": failed}))
    })
    .await
}

async fn delivered(ctx: &Arc<Ctx>) -> Attempt {
    let probe = posted(ctx).await?;
    let service = probe["service"].as_str().unwrap_or_default();
    let (sent, failed) = webhook_counts(ctx).await?;
    let (sent_before, failed_before) = (
        probe["sent"].as_f64().unwrap_or(0.0),
        probe["failed"].as_f64().unwrap_or(0.0),
    );
    if failed > failed_before {
        return Err(Problem::fail(format!(
            "Alertmanager's webhook notifications failed {:.0} time(s) since the probe was sent",
            failed - failed_before
        )));
    }
    let filter = format!("service=\"{service}\"");
    let alerts = ctx
        .alertmanager
        .get_json("/api/v2/alerts", &[("filter", &filter)])
        .await?;
    let receivers: Vec<&str> = alerts
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["receivers"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str())
        .collect();
    if sent <= sent_before {
        return Err(Problem::wait(format!(
            "no webhook notification since the probe was sent (receivers: {}; group_wait in alertmanager/alertmanager.yml)",
            if receivers.is_empty() {
                "none yet".to_owned()
            } else {
                receivers.join(", ")
            }
        )));
    }
    Ok(format!(
        "{PROBE}{{service=\"{service}\"}} routed to {}; webhook notifications {sent_before:.0} → {sent:.0}, none failed",
        if receivers.is_empty() {
            "(resolved)".to_owned()
        } else {
            receivers.join(", ")
        }
    ))
}

/// Unix seconds → RFC 3339 in UTC (what Alertmanager's API takes).
pub(crate) fn rfc3339(seconds: f64) -> String {
    let secs = seconds.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_283_723.9), "2026-12-03T07:42:03Z");
    }
}
