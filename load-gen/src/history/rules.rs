//! The recording rules to evaluate over the history, as one file for
//! `promtool tsdb create-blocks-from rules`.
//!
//! promtool evaluates each rule with range queries against a running Prometheus, which holds
//! the backfilled raw series but none of the recorded ones: a rule that reads another rule's
//! output (`service:slo_availability_burn_rate:rate5m` divides
//! `service:slo_availability_errors:ratio_rate5m`) would find nothing. Prometheus' backfilling
//! documentation names this limit and suggests several passes. Instead, each reference to a
//! recorded series is replaced by the expression that records it, in parentheses: the value is
//! the same, computed from the raw series in one pass. A reference that narrows the recorded
//! series (`name{…}`) or takes a range of it (`name[5m]`) is not a plain substitution, and is
//! refused by name. Alerting rules are left out: promtool backfills recording rules only.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    name: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    record: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct OutFile {
    groups: Vec<OutGroup>,
}

#[derive(Debug, Serialize)]
struct OutGroup {
    name: String,
    rules: Vec<OutRule>,
}

#[derive(Debug, Serialize)]
struct OutRule {
    record: String,
    expr: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

/// What [`backfill_rules`] made: the file's YAML, how many rules it holds, and the rules left
/// out with the reason.
pub struct BackfillRules {
    pub yaml: String,
    pub count: usize,
    pub left_out: Vec<String>,
}

/// The recording rules of `files`, each computed from raw series only.
pub fn backfill_rules(files: &[impl AsRef<Path>]) -> anyhow::Result<BackfillRules> {
    let mut groups = Vec::new();
    for path in files {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("while reading the rule file {}", path.display()))?;
        let file: RuleFile = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not a Prometheus rule file", path.display()))?;
        groups.extend(file.groups);
    }
    let recorded: BTreeMap<String, String> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter_map(|r| r.record.clone().map(|name| (name, r.expr.clone())))
        .collect();
    let mut out = OutFile { groups: Vec::new() };
    let mut count = 0;
    let mut left_out = Vec::new();
    for group in &groups {
        let mut rules = Vec::new();
        for rule in &group.rules {
            let Some(record) = &rule.record else {
                continue;
            };
            let expr = match inline(&rule.expr, &recorded, 0) {
                Ok(expr) => expr,
                Err(why) => {
                    left_out.push(format!("{record}: {why:#}"));
                    continue;
                }
            };
            rules.push(OutRule {
                record: record.clone(),
                expr: expr.split_whitespace().collect::<Vec<_>>().join(" "),
                labels: rule.labels.clone(),
            });
        }
        if !rules.is_empty() {
            count += rules.len();
            out.groups.push(OutGroup {
                name: group.name.clone(),
                rules,
            });
        }
    }
    let yaml = serde_yaml_ng::to_string(&out).context("while writing the backfill rules")?;
    Ok(BackfillRules {
        yaml,
        count,
        left_out,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `expr` with every reference to a recorded series replaced by its expression.
fn inline(expr: &str, recorded: &BTreeMap<String, String>, depth: usize) -> anyhow::Result<String> {
    if depth > 8 {
        bail!("recording rules refer to each other more than 8 deep (a cycle?)");
    }
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| is_name_char(c)) {
        out.push_str(&rest[..start]);
        let token_len = rest[start..]
            .find(|c: char| !is_name_char(c))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        let after = rest[start + token_len..].trim_start();
        let in_string = out.matches('"').count() % 2 == 1;
        match recorded.get(token) {
            Some(body) if !in_string => {
                if after.starts_with('{') || after.starts_with('[') {
                    bail!(
                        "`{token}` is narrowed or ranged ({}…): it cannot be replaced by its expression",
                        &after[..1]
                    );
                }
                out.push('(');
                out.push_str(inline(body, recorded, depth + 1)?.trim());
                out.push(')');
            }
            _ => out.push_str(token),
        }
        rest = &rest[start + token_len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_reference_to_a_recorded_series_becomes_its_expression() {
        let r = recorded(&[
            ("a:ratio", "sum(rate(x[5m])) / sum(rate(y[5m]))"),
            ("b:burn", "a:ratio / 0.005"),
        ]);
        assert_eq!(
            inline("1 - b:burn", &r, 0).unwrap(),
            "1 - ((sum(rate(x[5m])) / sum(rate(y[5m]))) / 0.005)"
        );
        // A label value or a longer name that contains a recorded name is left alone.
        assert_eq!(
            inline(r#"z{l="a:ratio"} + a:ratio_total"#, &r, 0).unwrap(),
            r#"z{l="a:ratio"} + a:ratio_total"#
        );
    }

    #[test]
    fn a_narrowed_or_ranged_reference_is_refused_by_name() {
        let r = recorded(&[("a:ratio", "x")]);
        for expr in [r#"a:ratio{service="s"}"#, "avg_over_time(a:ratio[1h])"] {
            let err = inline(expr, &r, 0).unwrap_err().to_string();
            assert!(err.contains("a:ratio"), "{err}");
        }
    }

    #[test]
    fn the_project_rules_become_one_pass_of_recording_rules() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = [
            root.join("prometheus/rules/red.yml"),
            root.join("prometheus/rules/slo.yml"),
        ];
        let made = backfill_rules(&files).unwrap();
        let count = made.count;
        let out: serde_yaml_ng::Value = serde_yaml_ng::from_str(&made.yaml).unwrap();
        // Every SLO rule is in; what is left out is named (red.yml's per-service sums read
        // the per-route series narrowed to the SLI routes).
        assert!(
            made.yaml
                .contains("service:slo_availability_error_budget_remaining:ratio30d")
        );
        assert!(made.yaml.contains("service:slo_latency_slow:ratio_rate30d"));
        for left in &made.left_out {
            assert!(!left.contains("slo_"), "{left}");
        }
        let exprs: Vec<&str> = out["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_sequence().unwrap())
            .map(|r| r["expr"].as_str().unwrap())
            .collect();
        assert_eq!(exprs.len(), count);
        assert!(count > 20, "{count} recording rules");
        // No expression reads a recorded series: each is computed from raw series only.
        for expr in exprs {
            assert!(
                !expr.contains("service:") && !expr.contains("service_route:"),
                "{expr}"
            );
        }
    }
}
