//! Grafana loaded what we provision, as its HTTP API says (Grafana 13.2): every data source by
//! UID and its health, every dashboard by UID, the alert rules, contact points and policies.
//! The expected lists come from the repository's files (build.rs), so they never drift.
//!
//! Routes (grafana/grafana `pkg/api/api.go`): `GET /api/datasources/uid/:uid`,
//! `GET|POST /api/datasources/uid/:uid/health` (the data source plugin's CheckHealth: 200
//! `{"status":"OK"}`, 400 with `"status":"ERROR"` and its message otherwise),
//! `/api/datasources/proxy/uid/:uid/*` (what the Alertmanager data source, which has no
//! backend health check, tests through), `GET /api/dashboards/uid/:uid`. Alerting provisioning
//! (`pkg/services/ngalert/api/tooling/definitions/provisioning_*.go`):
//! `GET /api/v1/provisioning/alert-rules`, `/contact-points`, `/policies`.

use std::sync::Arc;

use serde_json::Value;

use super::{grafana_datasource, some_of};
use crate::{
    Check, Ctx, Hint,
    api::{Problem, snippet},
    expected::{
        CONTACT_POINTS, DASHBOARDS, DATASOURCES, Datasource, GRAFANA_RULES, POLICY_RECEIVER,
        POLICY_SEVERITIES,
    },
};

fn provisioning_hint(file: &str) -> Hint {
    Hint {
        cause: "Grafana rejected or has not (yet) loaded this provisioning: it logs why at start"
            .into(),
        look: format!("`docker compose logs grafana | grep -i provision`; {file}"),
        anchor: "verify-grafana",
    }
}

pub fn checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for source in DATASOURCES {
        checks.push(datasource(*source));
    }
    for source in DATASOURCES {
        checks.push(datasource_health(*source));
    }
    for board in DASHBOARDS {
        let (uid, title) = (board.uid, board.title);
        checks.push(Check::new(
            format!("grafana.dashboard.{uid}"),
            "grafana",
            format!("dashboard {uid} ({title}) is provisioned"),
            &["grafana"],
            provisioning_hint("grafana/provisioning/dashboards/dashboards.yaml and grafana/dashboards/"),
            move |ctx: Arc<Ctx>| async move {
                let body = ctx.grafana.get_json(&format!("/api/dashboards/uid/{uid}"), &[]).await?;
                let got = body["dashboard"]["title"].as_str().unwrap_or_default();
                if got != title {
                    return Err(Problem::fail(format!("Grafana's dashboard {uid} is titled {got:?}, the file says {title:?}")));
                }
                let panels = body["dashboard"]["panels"].as_array().map_or(0, Vec::len);
                let provisioned = body["meta"]["provisioned"].as_bool().unwrap_or(false);
                if !provisioned {
                    return Err(Problem::fail(format!("dashboard {uid} exists but was not provisioned from a file (meta.provisioned false): someone saved it by hand")));
                }
                Ok(format!("{panels} panels, provisioned, folder {:?}", body["meta"]["folderTitle"].as_str().unwrap_or("General")))
            },
        ));
    }
    checks.push(alert_rules());
    checks.push(contact_points());
    checks.push(policies());
    checks
}

fn datasource(source: Datasource) -> Check {
    let Datasource { uid, name, kind } = source;
    Check::new(
        format!("grafana.datasource.{uid}"),
        "grafana",
        format!("data source {uid} is loaded as {name} ({kind})"),
        &["grafana"],
        provisioning_hint("grafana/provisioning/datasources/datasources.yaml"),
        move |ctx: Arc<Ctx>| async move {
            let body = grafana_datasource(&ctx, uid).await?;
            let (got_name, got_type) = (
                body["name"].as_str().unwrap_or_default(),
                body["type"].as_str().unwrap_or_default(),
            );
            if (got_name, got_type) != (name, kind) {
                return Err(Problem::fail(format!(
                    "Grafana has uid {uid} as {got_name:?} of type {got_type:?}"
                )));
            }
            Ok(format!(
                "{} → {}",
                uid,
                body["url"].as_str().unwrap_or("(no url)")
            ))
        },
    )
}

/// The data source's own health check, run by Grafana against its backend.
fn datasource_health(source: Datasource) -> Check {
    let Datasource { uid, name, kind } = source;
    // The backend each data source reaches (its uid is the compose service's name).
    let backend: &'static str = uid;
    Check::new(
        format!("grafana.health.{uid}"),
        "grafana",
        format!("Grafana reaches {name} through data source {uid} (its health check)"),
        &["grafana", backend],
        Hint {
            cause: format!(
                "Grafana cannot reach {backend} at the data source's URL, or {backend} is down"
            ),
            look: format!(
                "grafana/provisioning/datasources/datasources.yaml, {name}'s url; `docker compose logs {backend}`; Grafana → Connections → Data sources → {name} → Test"
            ),
            anchor: "verify-grafana-health",
        },
        move |ctx: Arc<Ctx>| async move {
            if kind == "alertmanager" {
                // No backend health check: its test in the UI asks Alertmanager's status
                // through Grafana's data source proxy, as this does.
                let path = format!("/api/datasources/proxy/uid/{uid}/api/v2/status");
                let (status, body) = ctx.grafana.get_raw(&path, &[]).await?;
                if status != 200 {
                    return Err(Problem::wait(format!(
                        "Grafana's proxy to {uid} answered {status}: {}",
                        snippet(&body)
                    )));
                }
                let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
                return match parsed["cluster"]["status"].as_str() {
                    Some(cluster) => Ok(format!("GET {path} → 200, cluster {cluster}")),
                    None => Err(Problem::fail(format!(
                        "{path} answered without Alertmanager's status: {}",
                        snippet(&body)
                    ))),
                };
            }
            let path = format!("/api/datasources/uid/{uid}/health");
            let (status, body) = ctx.grafana.get_raw(&path, &[]).await?;
            let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
            let verdict = parsed["status"].as_str().unwrap_or_default();
            let message = parsed["message"].as_str().unwrap_or_default();
            if status == 200 && verdict == "OK" {
                Ok(format!("{path} → OK: {message}"))
            } else {
                Err(Problem::wait(format!(
                    "{path} → {status} {verdict}: {}",
                    if message.is_empty() {
                        snippet(&body)
                    } else {
                        message.to_owned()
                    }
                )))
            }
        },
    )
}

fn alert_rules() -> Check {
    let titles: Vec<&str> = GRAFANA_RULES.iter().map(|r| r.title).collect();
    Check::new(
        "grafana.alert-rules",
        "grafana",
        format!(
            "Grafana's alert rules are provisioned ({})",
            titles.join(", ")
        ),
        &["grafana"],
        provisioning_hint("grafana/provisioning/alerting/rules.yaml"),
        |ctx: Arc<Ctx>| async move {
            let rules = ctx
                .grafana
                .get_json("/api/v1/provisioning/alert-rules", &[])
                .await?;
            let rules = rules.as_array().cloned().unwrap_or_default();
            let mut missing = Vec::new();
            for expected in GRAFANA_RULES {
                let found = rules.iter().find(|r| r["uid"] == expected.uid);
                match found {
                    Some(rule)
                        if rule["title"] == expected.title
                            && rule["ruleGroup"] == expected.group => {}
                    Some(rule) => missing.push(format!(
                        "{} is {:?} in group {:?}",
                        expected.uid,
                        rule["title"].as_str().unwrap_or_default(),
                        rule["ruleGroup"].as_str().unwrap_or_default()
                    )),
                    None => {
                        missing.push(format!("{} ({}) is missing", expected.uid, expected.title))
                    }
                }
            }
            if !missing.is_empty() {
                return Err(Problem::wait(missing.join("; ")));
            }
            let ids: Vec<String> = GRAFANA_RULES.iter().map(|r| r.uid.to_owned()).collect();
            Ok(format!(
                "uids {} in group {}",
                some_of(&ids, 5),
                GRAFANA_RULES[0].group
            ))
        },
    )
}

fn contact_points() -> Check {
    Check::new(
        "grafana.contact-points",
        "grafana",
        format!(
            "Grafana's contact points are provisioned ({})",
            CONTACT_POINTS.join(", ")
        ),
        &["grafana"],
        provisioning_hint(
            "grafana/provisioning/alerting/contact-points.yaml (and the secrets .env gives it)",
        ),
        |ctx: Arc<Ctx>| async move {
            let points = ctx
                .grafana
                .get_json("/api/v1/provisioning/contact-points", &[])
                .await?;
            let names: Vec<&str> = points
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            let missing: Vec<&str> = CONTACT_POINTS
                .iter()
                .copied()
                .filter(|n| !names.contains(n))
                .collect();
            if !missing.is_empty() {
                return Err(Problem::wait(format!(
                    "missing: {} (Grafana has: {})",
                    missing.join(", "),
                    names.join(", ")
                )));
            }
            Ok(format!(
                "{} integrations named {}",
                names.len(),
                CONTACT_POINTS.join(", ")
            ))
        },
    )
}

fn policies() -> Check {
    Check::new(
        "grafana.policies",
        "grafana",
        format!(
            "Grafana's notification policies route every severity ({})",
            POLICY_SEVERITIES.join(", ")
        ),
        &["grafana"],
        provisioning_hint(
            "grafana/provisioning/alerting/policies.yaml and .env GRAFANA_*_CONTACT_POINT",
        ),
        |ctx: Arc<Ctx>| async move {
            let tree = ctx
                .grafana
                .get_json("/api/v1/provisioning/policies", &[])
                .await?;
            let root = tree["receiver"].as_str().unwrap_or_default();
            if root != POLICY_RECEIVER {
                return Err(Problem::wait(format!(
                    "the root policy sends to {root:?}, the file says {POLICY_RECEIVER:?}"
                )));
            }
            let mut routed = Vec::new();
            for route in tree["routes"].as_array().into_iter().flatten() {
                let receiver = route["receiver"].as_str().unwrap_or_default();
                if !CONTACT_POINTS.contains(&receiver) {
                    return Err(Problem::fail(format!(
                        "a route sends to {receiver:?}, which is no provisioned contact point"
                    )));
                }
                for matcher in route["object_matchers"].as_array().into_iter().flatten() {
                    if matcher[0] == "severity"
                        && matcher[1] == "="
                        && let Some(severity) = matcher[2].as_str()
                    {
                        routed.push(format!("{severity} → {receiver}"));
                    }
                }
            }
            let unrouted: Vec<&str> = POLICY_SEVERITIES
                .iter()
                .copied()
                .filter(|s| !routed.iter().any(|r| r.starts_with(&format!("{s} "))))
                .collect();
            if !unrouted.is_empty() {
                return Err(Problem::fail(format!(
                    "no route for severity {}",
                    unrouted.join(", ")
                )));
            }
            Ok(format!("root → {root}; {}", routed.join(", ")))
        },
    )
}
