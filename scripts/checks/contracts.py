#!/usr/bin/env python3
"""Cross-file contracts of the stack: names that several files must agree on (shared/DESIGN.md,
"Contracts"). Each check fails naming the file and the drift. Run by scripts/test.

Checks so far:
- every alert has severity, summary, description, a runbook_url to an existing
  docs/runbooks/<alert>.md, and a dashboard_url;
- every alert a load-gen scenario expects exists in prometheus/rules;
- the SLO objectives in slo.yml are the ones the burn-rate alerts use;
- prometheus/tests/alerts_test.yml is what its generator writes today.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)


def alerts() -> dict:
    rules = {}
    for path in sorted((ROOT / "prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = (path.name, rule)
    return rules


def check_alert_metadata(rules: dict) -> None:
    for name, (file, rule) in rules.items():
        where = f"prometheus/rules/{file}: {name}"
        if rule.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
            fail(f"{where}: severity must be critical, warning or info")
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url", "dashboard_url"):
            if not notes.get(key):
                fail(f"{where}: no {key}")
        if "$value" not in notes.get("summary", "") + notes.get("description", "") and "absent(" not in rule["expr"] and "== 0" not in rule["expr"]:
            fail(f"{where}: summary/description do not show the value")
        runbook = notes.get("runbook_url", "")
        if runbook != f"docs/runbooks/{name}.md":
            fail(f"{where}: runbook_url should be docs/runbooks/{name}.md, is {runbook!r}")
        elif not (ROOT / runbook).is_file():
            fail(f"{where}: runbook {runbook} does not exist")
    for runbook in (ROOT / "docs/runbooks").glob("*.md"):
        if runbook.stem not in rules:
            fail(f"{runbook.relative_to(ROOT)}: no alert of that name")


def check_scenarios(rules: dict) -> None:
    for path in sorted((ROOT / "load-gen/scenarios").glob("*.toml")):
        expected = tomllib.loads(path.read_text()).get("expect", {}).get("alerts", [])
        for alert in expected:
            if alert not in rules:
                fail(f"{path.relative_to(ROOT)}: expects alert {alert!r}, which no rule defines")


def check_slo_objectives(rules: dict) -> None:
    slo = (ROOT / "prometheus/rules/slo.yml").read_text()
    budgets = {"availability": "0.005", "latency": "0.01"}
    for sli, budget in budgets.items():
        if f"/ {budget}" not in slo:
            fail(f"prometheus/rules/slo.yml: the {sli} burn rate is not divided by its budget {budget}")
    for name, (file, rule) in rules.items():
        for sli, budget in budgets.items():
            if f"slo_{sli}" in rule["expr"]:
                for factor in re.findall(r"> ([\d.]+) \* ([\d.]+)", rule["expr"]):
                    if factor[1] != budget:
                        fail(f"prometheus/rules/{file}: {name} multiplies by {factor[1]}, but the {sli} budget is {budget}")


def check_generated_tests() -> None:
    target = ROOT / "prometheus/tests/alerts_test.yml"
    before = target.read_text()
    subprocess.run([sys.executable, str(ROOT / "prometheus/tests/tools/gen_alerts_test.py")], check=True, capture_output=True)
    if target.read_text() != before:
        target.write_text(before)
        fail("prometheus/tests/alerts_test.yml is stale: run prometheus/tests/tools/gen_alerts_test.py and commit it")


def main() -> int:
    rules = alerts()
    check_alert_metadata(rules)
    check_scenarios(rules)
    check_slo_objectives(rules)
    check_generated_tests()
    for f in failures:
        print(f"contract broken: {f}", file=sys.stderr)
    print(f"contracts: {len(rules)} alerts checked, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
