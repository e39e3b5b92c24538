//! The checklist verify prints: one line per check, ✓ or ✗, what was checked with which real
//! ids; under a ✗ the likely cause, where to look and the troubleshooting entry; last line
//! `N passed, N failed`. `--json` prints the same as one JSON document.

use serde::Serialize;

/// Where docs/troubleshooting.md lives, for the links under a ✗.
pub const TROUBLESHOOTING: &str = "docs/troubleshooting.md";

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// Stable id, e.g. `health.loki`, `correlation.trace-to-logs`.
    pub id: String,
    /// The group it belongs to: health, metrics, logs, traces, profiles, grafana,
    /// correlations, queries, rules, alerting.
    pub section: &'static str,
    /// What was checked.
    pub name: String,
    pub passed: bool,
    /// What was found, with the real ids used; for a failure, what went wrong.
    pub detail: String,
    /// The services this check talks to or whose data it reads: a failure is one of theirs.
    pub needs: Vec<&'static str>,
    /// For a failure: the likely cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// For a failure: where to look (service logs, config file and key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub look: Option<String>,
    /// For a failure: the entry of docs/troubleshooting.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// How long the check took, waiting included.
    pub seconds: f64,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
    pub passed: usize,
    pub failed: usize,
    pub seconds: f64,
    /// Service → the URL verify used for it.
    pub endpoints: Vec<(String, String)>,
}

impl Report {
    pub fn new(checks: Vec<CheckResult>, seconds: f64, endpoints: Vec<(String, String)>) -> Self {
        let passed = checks.iter().filter(|c| c.passed).count();
        Self {
            failed: checks.len() - passed,
            passed,
            checks,
            seconds,
            endpoints,
        }
    }

    pub fn ok(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }

    /// The text checklist, ending with the summary line.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&render_line(check));
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// One check as the checklist shows it: a line, and under a failure its hints, indented.
pub fn render_line(check: &CheckResult) -> String {
    let mark = if check.passed { '✓' } else { '✗' };
    let mut out = format!(
        "{mark} {}: {} — {}\n",
        check.section, check.name, check.detail
    );
    if !check.passed {
        if let Some(cause) = &check.cause {
            out.push_str(&format!("    likely cause: {cause}\n"));
        }
        if let Some(look) = &check.look {
            out.push_str(&format!("    look at: {look}\n"));
        }
        if let Some(help) = &check.help {
            out.push_str(&format!("    help: {help}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(passed: bool) -> CheckResult {
        CheckResult {
            id: "health.loki".into(),
            section: "health",
            name: "loki answers GET /ready".into(),
            passed,
            detail: if passed {
                "200 ready".into()
            } else {
                "cannot reach loki at http://loki:3100/ready: connection refused".into()
            },
            needs: vec!["loki"],
            cause: (!passed).then(|| "Loki is not running, or still starting".into()),
            look: (!passed).then(|| "docker compose logs loki; loki/loki.yaml".into()),
            help: (!passed).then(|| format!("{TROUBLESHOOTING}#verify-health")),
            seconds: 0.5,
        }
    }

    #[test]
    fn a_pass_is_one_line_and_a_failure_says_why_and_where_to_look() {
        assert_eq!(
            render_line(&check(true)),
            "✓ health: loki answers GET /ready — 200 ready\n"
        );
        let failed = render_line(&check(false));
        let lines: Vec<_> = failed.lines().collect();
        assert_eq!(lines.len(), 4, "{failed}");
        assert!(lines[0].starts_with("✗ health: loki answers GET /ready — cannot reach loki"));
        assert_eq!(
            lines[1],
            "    likely cause: Loki is not running, or still starting"
        );
        assert_eq!(
            lines[2],
            "    look at: docker compose logs loki; loki/loki.yaml"
        );
        assert_eq!(lines[3], "    help: docs/troubleshooting.md#verify-health");
    }

    #[test]
    fn the_last_line_counts_and_any_failure_fails_the_run() {
        let report = Report::new(vec![check(true), check(false), check(true)], 1.0, vec![]);
        assert_eq!(
            report.render_text().lines().last(),
            Some("2 passed, 1 failed")
        );
        assert!(!report.ok());
        assert!(Report::new(vec![check(true)], 1.0, vec![]).ok());
        assert!(
            !Report::new(vec![], 1.0, vec![]).ok(),
            "nothing checked is not a pass"
        );
    }

    #[test]
    fn json_has_the_same_checks_and_counts() {
        let report = Report::new(
            vec![check(true), check(false)],
            2.5,
            vec![("loki".into(), "http://loki:3100".into())],
        );
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["passed"].as_u64(), json["failed"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(json["checks"][1]["needs"][0], "loki");
        assert_eq!(
            json["checks"][1]["help"],
            "docs/troubleshooting.md#verify-health"
        );
        assert!(
            json["checks"][0].get("cause").is_none(),
            "no hints on a pass"
        );
    }
}

#[cfg(test)]
mod anchors {
    use crate::{Endpoints, Options, checks};

    /// Every ✗ links to an entry of docs/troubleshooting.md: each anchor a check can print
    /// exists there.
    #[test]
    fn every_help_link_has_its_entry() {
        let doc = include_str!("../../../docs/troubleshooting.md");
        let options = Options {
            endpoints: Endpoints::compose(),
            grafana_user: String::new(),
            grafana_password: String::new(),
            wait: std::time::Duration::ZERO,
            request_timeout: std::time::Duration::from_secs(1),
            probe_alert: true,
            only: vec![],
        };
        let mut anchors: Vec<&str> = checks::all(&options)
            .iter()
            .map(|c| c.hint.anchor)
            .collect();
        anchors.push("verify-unreachable");
        for anchor in anchors {
            assert!(!anchor.is_empty());
            assert!(
                doc.contains(&format!("<a id=\"{anchor}\"></a>")),
                "docs/troubleshooting.md has no entry for #{anchor}"
            );
        }
    }
}
