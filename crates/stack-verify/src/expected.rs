//! What the repository provisions, read from its files at build time (build.rs), so the lists
//! verify checks never drift from what the stack ships.

/// A data source of `grafana/provisioning/datasources/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datasource {
    pub uid: &'static str,
    pub name: &'static str,
    pub kind: &'static str,
}

/// A dashboard of `grafana/dashboards/` (the file provider's folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dashboard {
    pub uid: &'static str,
    pub title: &'static str,
}

/// A Grafana-managed alert rule of `grafana/provisioning/alerting/rules.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrafanaRule {
    pub uid: &'static str,
    pub title: &'static str,
    pub group: &'static str,
    pub folder: &'static str,
}

/// A rule group of `prometheus/rules/` or `loki/rules/fake/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleGroup {
    pub file: &'static str,
    pub name: &'static str,
    pub rules: &'static [&'static str],
}

/// A fenced query of `queries/*.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogQuery {
    /// `promql`, `logql`, `traceql` or `pyroscope`.
    pub language: &'static str,
    pub file: &'static str,
    /// The line of the opening fence.
    pub line: usize,
    pub heading: &'static str,
    /// What its heading says it needs to return data (`*(needs an active fault)*`), or "".
    pub needs: &'static str,
    pub query: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/expected.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_match_what_the_contract_names() {
        let uids: Vec<_> = DATASOURCES.iter().map(|d| d.uid).collect();
        assert_eq!(
            uids,
            ["prometheus", "loki", "tempo", "pyroscope", "alertmanager"]
        );
        assert_eq!(DASHBOARDS.len(), 5);
        let titles: Vec<_> = GRAFANA_RULES.iter().map(|r| r.title).collect();
        assert_eq!(
            titles,
            ["SampleAppErrorSpans", "SampleAppErrorsInMetricsAndLogs"]
        );
        assert!(
            GRAFANA_RULES
                .iter()
                .all(|r| r.folder == "Four-signal stack")
        );
        assert_eq!(CONTACT_POINTS, ["alert-log", "Slack", "Email", "PagerDuty"]);
        assert_eq!(POLICY_RECEIVER, "alert-log");
        assert_eq!(POLICY_SEVERITIES, ["critical", "warning", "info"]);
        assert_eq!(PROMETHEUS_GROUPS.len(), 11);
        assert!(PROMETHEUS_GROUPS.iter().any(
            |g| g.name == "slo-burn-rate" && g.rules.contains(&"SampleAppErrorBudgetBurnPage")
        ));
        let loki: Vec<_> = LOKI_GROUPS
            .iter()
            .flat_map(|g| g.rules.iter().copied())
            .collect();
        for rule in [
            "ErrorLogBurst",
            "ServicePanicked",
            "AlertmanagerNotificationsFailing",
        ] {
            assert!(loki.contains(&rule), "{rule} in {loki:?}");
        }
        assert_eq!(PROFILE_TYPES.len(), 6);
        assert_eq!(
            PROFILE_TYPES[0],
            "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
        );
        assert_eq!(
            LOKI_RECORDED,
            [
                "service_level:log_lines:rate1m",
                "service:log_request_duration_seconds:p99_1m"
            ]
        );
    }

    #[test]
    fn the_catalog_has_every_language_and_reads_needs_from_headings() {
        for (language, minimum) in [
            ("promql", 25),
            ("logql", 20),
            ("traceql", 20),
            ("pyroscope", 8),
        ] {
            let n = CATALOG.iter().filter(|q| q.language == language).count();
            assert!(n >= minimum, "{n} {language} queries");
        }
        let fault = CATALOG
            .iter()
            .find(|q| q.heading.starts_with("23. Which faults are switched on?"))
            .expect("metrics.md entry 23");
        assert_eq!(
            (fault.file, fault.needs),
            ("queries/metrics.md", "an active fault")
        );
        assert!(
            CATALOG
                .iter()
                .all(|q| !q.query.is_empty() && !q.query.contains("```"))
        );
    }
}
