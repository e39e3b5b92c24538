#!/usr/bin/env python3
"""Writes deploy/kubernetes/observability/prometheus-rules.yaml: one PrometheusRule per file in
prometheus/rules/, whose spec is that file's content unchanged. The Prometheus Operator loads
rules only from PrometheusRule objects (its Prometheus resource has no rule_files field), so this
is the one generated copy; scripts/checks/kubernetes.py fails when it is stale.

    python3 deploy/kubernetes/tools/gen_prometheus_rules.py
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
TARGET = ROOT / "deploy/kubernetes/observability/prometheus-rules.yaml"


def render() -> str:
    docs = []
    for path in sorted((ROOT / "prometheus/rules").glob("*.yml")):
        docs.append({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": f"four-signal-{path.stem}"},
            "spec": yaml.safe_load(path.read_text()),
        })
    header = ("# Generated from prometheus/rules/*.yml by deploy/kubernetes/tools/gen_prometheus_rules.py:\n"
              "# do not edit; edit the rule files and run the generator.\n")
    return header + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=1000, allow_unicode=True) for d in docs)


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.exit(0)
