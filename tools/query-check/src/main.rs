//! `query-check`: reads a JSON array of PromQL queries on stdin and writes, for each, whether it
//! parses (with the `promql-parser` crate: syntax and types) and which metric names it reads.
//! The dashboard and catalog lints use it to prove every query parses and every metric exists.

use std::io::Read;

use promql_parser::{
    label::MatchOp,
    parser::{self, Expr},
    util::{ExprVisitor, walk_expr},
};
use serde::Serialize;

#[derive(Serialize)]
struct Checked {
    query: String,
    error: Option<String>,
    metrics: Vec<String>,
}

struct MetricNames(Vec<String>);

impl ExprVisitor for MetricNames {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let by_matcher = selector
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone());
        if let Some(name) = selector.name.clone().or(by_matcher) {
            self.0.push(name);
        }
        Ok(true)
    }
}

fn check(query: String) -> Checked {
    match parser::parse(&query) {
        Ok(expr) => {
            let mut names = MetricNames(Vec::new());
            let _ = walk_expr(&mut names, &expr);
            names.0.sort();
            names.0.dedup();
            Checked {
                query,
                error: None,
                metrics: names.0,
            }
        }
        Err(error) => Checked {
            query,
            error: Some(error),
            metrics: Vec::new(),
        },
    }
}

fn main() -> std::process::ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: while reading stdin: {e}");
        return std::process::ExitCode::from(2);
    }
    let queries: Vec<String> = match serde_json::from_str(&input) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: stdin must be a JSON array of PromQL strings: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let checked: Vec<Checked> = queries.into_iter().map(check).collect();
    println!("{}", serde_json::to_string(&checked).expect("serialisable"));
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_query_lists_its_metrics_and_an_invalid_one_says_why() {
        let ok = check("sum by (le) (rate(http_server_request_duration_seconds_bucket{service=\"a\"}[5m])) / on() group_left up".into());
        assert_eq!(ok.error, None);
        assert_eq!(
            ok.metrics,
            ["http_server_request_duration_seconds_bucket", "up"]
        );
        let bad = check("sum(rate(x[5m])".into());
        assert!(bad.error.is_some());
        let typed = check("rate(up)".into());
        assert!(
            typed.error.is_some(),
            "rate() of an instant vector is a type error"
        );
    }
}
