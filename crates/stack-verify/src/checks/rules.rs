//! Every rule group of `prometheus/rules/` is loaded in Prometheus, and every group of
//! `loki/rules/fake/` in Loki's ruler, each rule evaluated without error. Both answer the
//! Prometheus rules API (`GET /api/v1/rules`; Loki's at `/prometheus/api/v1/rules`): per rule
//! `health` is `ok`, `err` (with `lastError`) or `unknown` (not evaluated yet).

use std::sync::Arc;

use serde_json::Value;

use crate::{
    Check, Ctx, Hint,
    api::{Attempt, Problem, prometheus_data},
    expected::{LOKI_GROUPS, PROMETHEUS_GROUPS, RuleGroup},
};

pub fn checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for group in PROMETHEUS_GROUPS {
        checks.push(check(*group, "prometheus", "Prometheus", "/api/v1/rules"));
    }
    for group in LOKI_GROUPS {
        checks.push(check(
            *group,
            "loki",
            "Loki's ruler",
            "/prometheus/api/v1/rules",
        ));
    }
    checks
}

fn check(group: RuleGroup, service: &'static str, who: &'static str, path: &'static str) -> Check {
    let look = if service == "loki" {
        format!(
            "{}; loki/loki.yaml ruler (rules_directory, remote_write, alertmanager_url); `docker compose logs loki | grep -i rule`",
            group.file
        )
    } else {
        format!(
            "{}; `docker compose logs prometheus`; Prometheus' /rules page; promtool check rules {}",
            group.file, group.file
        )
    };
    // Two files may hold groups of the same name: the file's stem keeps the id unique.
    let stem = group
        .file
        .rsplit('/')
        .next()
        .unwrap_or(group.file)
        .split('.')
        .next()
        .unwrap_or("");
    Check::new(
        format!("rules.{service}.{stem}.{}", group.name),
        "rules",
        format!(
            "{who} loaded rule group {} ({}, {} rules) and evaluates it without error",
            group.name,
            group.file,
            group.rules.len()
        ),
        &[service],
        Hint {
            cause: format!(
                "{who} did not load the file (not mounted, does not parse), or a rule fails to evaluate"
            ),
            look,
            anchor: "verify-rules",
        },
        move |ctx: Arc<Ctx>| async move {
            let api = if service == "loki" {
                &ctx.loki
            } else {
                &ctx.prometheus
            };
            let body = api.get_json(path, &[]).await?;
            let data = prometheus_data(service, body)?;
            judge(&data, &group, who)
        },
    )
}

/// The verdict on one group, from a rules API's `data`.
pub(crate) fn judge(data: &Value, group: &RuleGroup, who: &str) -> Attempt {
    let file = group.file.rsplit('/').next().unwrap_or(group.file);
    let loaded =
        data["groups"].as_array().into_iter().flatten().find(|g| {
            g["name"] == group.name && g["file"].as_str().is_some_and(|f| f.ends_with(file))
        });
    let Some(loaded) = loaded else {
        return Err(Problem::wait(format!(
            "{who} has no group {} from {file}",
            group.name
        )));
    };
    let rules = loaded["rules"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    let missing: Vec<&str> = group
        .rules
        .iter()
        .copied()
        .filter(|r| !names.contains(r))
        .collect();
    if !missing.is_empty() {
        return Err(Problem::fail(format!(
            "group {} lacks {} (an older file is loaded?)",
            group.name,
            missing.join(", ")
        )));
    }
    if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
        return Err(Problem::fail(format!(
            "rule {} fails to evaluate: {}",
            bad["name"].as_str().unwrap_or("?"),
            bad["lastError"].as_str().unwrap_or("(no error text)")
        )));
    }
    let pending: Vec<&str> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .filter_map(|r| r["name"].as_str())
        .collect();
    if !pending.is_empty() {
        return Err(Problem::wait(format!(
            "not evaluated yet: {}",
            pending.join(", ")
        )));
    }
    let firing = rules.iter().filter(|r| r["state"] == "firing").count();
    Ok(format!(
        "{} rules evaluated, health ok{}",
        rules.len(),
        if firing > 0 {
            format!(", {firing} firing")
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProblemKind;
    use serde_json::json;

    const GROUP: RuleGroup = RuleGroup {
        file: "loki/rules/fake/log-alerts.yaml",
        name: "log-alerts",
        rules: &["ErrorLogBurst", "ServicePanicked"],
    };

    fn data(health: &str) -> Value {
        json!({"groups": [{"name": "log-alerts", "file": "/etc/loki/rules/fake/log-alerts.yaml", "rules": [
            {"name": "ErrorLogBurst", "health": "ok", "state": "inactive"},
            {"name": "ServicePanicked", "health": health, "lastError": "max_query_series exceeded", "state": "inactive"}]}]})
    }

    #[test]
    fn a_group_evaluated_cleanly_passes() {
        assert_eq!(
            judge(&data("ok"), &GROUP, "Loki's ruler").unwrap(),
            "2 rules evaluated, health ok"
        );
    }

    #[test]
    fn an_evaluation_error_fails_at_once_with_its_text() {
        let problem = judge(&data("err"), &GROUP, "Loki's ruler").unwrap_err();
        assert_eq!(problem.kind, ProblemKind::Fail);
        assert!(
            problem
                .text
                .contains("ServicePanicked fails to evaluate: max_query_series exceeded"),
            "{}",
            problem.text
        );
    }

    #[test]
    fn a_rule_not_evaluated_yet_or_a_missing_group_is_waited_for() {
        assert_eq!(
            judge(&data("unknown"), &GROUP, "x").unwrap_err().kind,
            ProblemKind::Wait
        );
        let problem = judge(&json!({"groups": []}), &GROUP, "Loki's ruler").unwrap_err();
        assert_eq!(problem.kind, ProblemKind::Wait);
        assert!(
            problem
                .text
                .contains("no group log-alerts from log-alerts.yaml")
        );
    }

    #[test]
    fn a_group_without_one_of_its_rules_fails() {
        let mut d = data("ok");
        d["groups"][0]["rules"].as_array_mut().unwrap().pop();
        assert!(
            judge(&d, &GROUP, "x")
                .unwrap_err()
                .text
                .contains("lacks ServicePanicked")
        );
    }
}
