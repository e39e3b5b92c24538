//! Reads what the stack provisions from the repository's own files, so the lists verify checks
//! against never drift from them: Grafana's data sources, dashboards and alerting provisioning,
//! the rule groups of Prometheus and Loki's ruler, and the query catalogs (`queries/*.md`).
//! Writes `$OUT_DIR/expected.rs`, which `src/expected.rs` includes.
//!
//! The YAML files are read line by line at the indentation they are written with (the repo's
//! yamllint keeps it at two spaces per level); a file whose shape this reader does not know
//! fails the build, naming the file, rather than yielding a short list.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = String::new();
    if let Err(error) = generate(&root, &mut out) {
        // A build script reports by failing: cargo prints this.
        eprintln!("stack-verify build: {error}");
        std::process::exit(1);
    }
    let path =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("expected.rs");
    fs::write(&path, out).expect("OUT_DIR is writable");
}

fn generate(root: &Path, out: &mut String) -> Result<(), String> {
    let provisioning = root.join("grafana/provisioning");
    for dir in [
        "grafana/provisioning",
        "grafana/dashboards",
        "prometheus/rules",
        "loki/rules",
        "queries",
        "docs/contracts.md",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    // Data sources.
    let mut sources = Vec::new();
    for path in files(&provisioning.join("datasources"), &["yaml", "yml"])? {
        let text = read(&path)?;
        for item in items(&text, 2) {
            let field = |k: &str| {
                item.get(k)
                    .cloned()
                    .ok_or_else(|| format!("{}: a data source without {k}", path.display()))
            };
            sources.push((field("uid")?, field("name")?, field("type")?));
        }
    }
    if sources.is_empty() {
        return Err("grafana/provisioning/datasources: no data source found".into());
    }
    writeln!(out, "pub const DATASOURCES: &[Datasource] = &[").unwrap();
    for (uid, name, kind) in &sources {
        writeln!(
            out,
            "    Datasource {{ uid: {uid:?}, name: {name:?}, kind: {kind:?} }},"
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();

    // Dashboards: the bare models under grafana/dashboards (the file provider's path).
    let mut boards = Vec::new();
    for path in walk(&root.join("grafana/dashboards"), "json")? {
        let model: serde_json::Value =
            serde_json::from_str(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;
        let uid = model["uid"]
            .as_str()
            .ok_or(format!("{}: no uid", path.display()))?;
        let title = model["title"]
            .as_str()
            .ok_or(format!("{}: no title", path.display()))?;
        boards.push((uid.to_owned(), title.to_owned()));
    }
    writeln!(out, "pub const DASHBOARDS: &[Dashboard] = &[").unwrap();
    for (uid, title) in &boards {
        writeln!(out, "    Dashboard {{ uid: {uid:?}, title: {title:?} }},").unwrap();
    }
    writeln!(out, "];").unwrap();

    // Grafana-managed alerting.
    let alerting = provisioning.join("alerting");
    let rules_text = read(&alerting.join("rules.yaml"))?;
    let mut rules = Vec::new();
    let mut group = (String::new(), String::new());
    let mut uid = None;
    for line in rules_text.lines() {
        if let Some(v) = scalar(line, "    name:") {
            group.0 = v;
        } else if let Some(v) = scalar(line, "    folder:") {
            group.1 = v;
        } else if let Some(v) = scalar(line, "      - uid:") {
            uid = Some(v);
        } else if let Some(title) = scalar(line, "        title:") {
            let uid = uid
                .take()
                .ok_or("grafana/provisioning/alerting/rules.yaml: a title before its uid")?;
            rules.push((uid, title, group.0.clone(), group.1.clone()));
        }
    }
    if rules.is_empty() {
        return Err("grafana/provisioning/alerting/rules.yaml: no rule found".into());
    }
    writeln!(out, "pub const GRAFANA_RULES: &[GrafanaRule] = &[").unwrap();
    for (uid, title, group, folder) in &rules {
        writeln!(
            out,
            "    GrafanaRule {{ uid: {uid:?}, title: {title:?}, group: {group:?}, folder: {folder:?} }},"
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
    let points: Vec<String> = items(&read(&alerting.join("contact-points.yaml"))?, 2)
        .into_iter()
        .filter_map(|item| item.get("name").cloned())
        .collect();
    if points.is_empty() {
        return Err(
            "grafana/provisioning/alerting/contact-points.yaml: no contact point found".into(),
        );
    }
    writeln!(out, "pub const CONTACT_POINTS: &[&str] = &{points:?};").unwrap();
    let policies = read(&alerting.join("policies.yaml"))?;
    let root_receiver = items(&policies, 2)
        .into_iter()
        .find_map(|item| item.get("receiver").cloned())
        .ok_or("grafana/provisioning/alerting/policies.yaml: no root receiver")?;
    let severities: Vec<String> = policies
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- [severity, \"=\", "))
        .map(|v| v.trim_end_matches(']').trim().to_owned())
        .collect();
    writeln!(out, "pub const POLICY_RECEIVER: &str = {root_receiver:?};").unwrap();
    writeln!(
        out,
        "pub const POLICY_SEVERITIES: &[&str] = &{severities:?};"
    )
    .unwrap();

    // Rule groups of Prometheus and of Loki's ruler (tenant `fake`: auth is off).
    let prometheus = rule_groups(root, &root.join("prometheus/rules"))?;
    let loki = rule_groups(root, &root.join("loki/rules/fake"))?;
    for (name, groups) in [("PROMETHEUS_GROUPS", &prometheus), ("LOKI_GROUPS", &loki)] {
        writeln!(out, "pub const {name}: &[RuleGroup] = &[").unwrap();
        for (file, group, rules) in groups {
            writeln!(
                out,
                "    RuleGroup {{ file: {file:?}, name: {group:?}, rules: &{rules:?} }},"
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let recorded: Vec<&String> = loki
        .iter()
        .flat_map(|(_, _, rules)| rules)
        .filter(|r| r.contains(':'))
        .collect();
    writeln!(out, "pub const LOKI_RECORDED: &[&str] = &{recorded:?};").unwrap();

    // The profile types the services push (docs/contracts.md, Profiles: `profile_types:`).
    let contract = read(&root.join("docs/contracts.md"))?;
    let types: Vec<String> = contract
        .lines()
        .skip_while(|l| *l != "  profile_types:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .filter_map(|l| l.split_once(": ").map(|(_, v)| v.trim().to_owned()))
        .collect();
    if types.is_empty() {
        return Err("docs/contracts.md: no pyroscope.profile_types".into());
    }
    writeln!(out, "pub const PROFILE_TYPES: &[&str] = &{types:?};").unwrap();

    // The query catalogs.
    writeln!(out, "pub const CATALOG: &[CatalogQuery] = &[").unwrap();
    let mut count = 0;
    for path in files(&root.join("queries"), &["md"])? {
        let text = read(&path)?;
        let file = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut heading = String::new();
        let mut block: Option<(String, usize, String)> = None;
        for (index, line) in text.lines().enumerate() {
            if let Some((language, line_no, mut body)) = block.take() {
                if line.starts_with("```") {
                    let needs = heading
                        .split_once("(needs ")
                        .and_then(|(_, rest)| rest.split_once(')'))
                        .map(|(needs, _)| needs.to_owned())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "    CatalogQuery {{ language: {language:?}, file: {file:?}, line: {line_no}, heading: {:?}, needs: {needs:?}, query: {:?} }},",
                        heading.trim_start_matches('#').trim(),
                        body.trim()
                    )
                    .unwrap();
                    count += 1;
                } else {
                    body.push_str(line);
                    body.push('\n');
                    block = Some((language, line_no, body));
                }
                continue;
            }
            if line.starts_with("### ") {
                heading = line.to_owned();
            } else if let Some(language) = line.strip_prefix("```")
                && ["promql", "logql", "traceql", "pyroscope"].contains(&language)
            {
                block = Some((language.to_owned(), index + 1, String::new()));
            }
        }
    }
    writeln!(out, "];").unwrap();
    if count == 0 {
        return Err("queries/: no catalog query found".into());
    }
    Ok(())
}

/// (file, group, rule names) of every rule file in `dir`.
fn rule_groups(root: &Path, dir: &Path) -> Result<Vec<(String, String, Vec<String>)>, String> {
    let mut groups = Vec::new();
    for path in files(dir, &["yaml", "yml"])? {
        let file = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = read(&path)?;
        let before = groups.len();
        for line in text.lines() {
            if let Some(name) = scalar(line, "  - name:") {
                groups.push((file.clone(), name, Vec::new()));
            } else if let Some(rule) =
                scalar(line, "      - alert:").or_else(|| scalar(line, "      - record:"))
            {
                if groups.len() == before {
                    return Err(format!("{file}: a rule before its group"));
                }
                if let Some((_, _, rules)) = groups.last_mut() {
                    rules.push(rule);
                }
            }
        }
        if groups.len() == before || groups[before..].iter().any(|(_, _, r)| r.is_empty()) {
            return Err(format!("{file}: a rule file without groups of rules"));
        }
    }
    Ok(groups)
}

/// The value after `prefix` on a line that starts with it exactly (indentation included),
/// unquoted.
fn scalar(line: &str, prefix: &str) -> Option<String> {
    let value = line.strip_prefix(prefix)?.trim();
    let value = value.split(" #").next().unwrap_or(value).trim();
    Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

/// The scalar fields of each list item that starts at `indent` spaces (`- key: value`, then
/// `key: value` lines two spaces deeper).
fn items(text: &str, indent: usize) -> Vec<BTreeMap<String, String>> {
    let item = format!("{}- ", " ".repeat(indent));
    let field = " ".repeat(indent + 2);
    let mut found: Vec<BTreeMap<String, String>> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let rest = if let Some(rest) = line.strip_prefix(&item) {
            found.push(BTreeMap::new());
            open = true;
            rest
        } else if let Some(rest) = line.strip_prefix(&field).filter(|r| !r.starts_with(' ')) {
            if !open {
                continue;
            }
            rest
        } else {
            if line.len() - line.trim_start().len() <= indent {
                open = false;
            }
            continue;
        };
        if let (Some((key, value)), Some(current)) = (rest.split_once(':'), found.last_mut()) {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if !value.is_empty() && !key.contains(' ') {
                current.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    found
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn files(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            found.extend(walk(&path, extension)?);
        } else if path.extension().and_then(|e| e.to_str()) == Some(extension) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
