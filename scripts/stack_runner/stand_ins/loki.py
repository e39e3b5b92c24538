#!/usr/bin/env python3
"""Stand-in for Loki when `LOKI_BIN` is not set: a push recorder on the port `loki.yaml` gives.

`POST /loki/api/v1/push` takes the JSON push format (`{"streams": [{"stream": {labels},
"values": [[ns, line, {structured metadata}]]}]}`) and validates it as Loki would: label names
valid, values strings, timestamps integers in nanoseconds, and — this stack's contract — no
high-cardinality id (`trace_id`, `span_id`) as a label, and structured metadata only while
`allow_structured_metadata` is on. It counts under Loki's own metric names
(`loki_distributor_lines_received_total`, `loki_distributor_bytes_received_total`) and keeps the
entries for the checks (`/stand-in/entries`). It answers no LogQL: checks that need Loki say
they are skipped.

The ruler: at start it reads the rule files where loki.yaml says
(`common.storage.filesystem.rules_directory`, `<dir>/<tenant>/*.yaml`, tenant `fake` with auth
off) and exits non-zero when the directory is not there (a missing compose mount) or a file is
not rule groups of alerts and recording rules. It evaluates nothing: its Prometheus-compatible
rules API (`/prometheus/api/v1/rules`) lists those rules as never evaluated, and its alerts API
(`/prometheus/api/v1/alerts`) has none, so a scenario watching Loki's alerts runs here too.

argv: the service's own (`/usr/bin/loki -config.file=/etc/loki/loki.yaml`).
"""

import re
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml  # noqa: E402

from stack_runner.stand_ins.common import BIND, Recorder, flags, selected, serve  # noqa: E402

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FORBIDDEN_LABELS = {"trace_id", "span_id"}
recorder = Recorder("loki")
entries: list[dict] = []
lock = threading.Lock()
settings = {"structured_metadata": True}


def push(path, query, body, headers):
    import json

    if "json" not in (headers.get("content-type") or ""):
        raise ValueError("only the JSON push format is read by this stand-in (content-type application/json)")
    document = json.loads(body)
    accepted = []
    for stream in document.get("streams", []):
        labels = stream.get("stream") or {}
        if not labels:
            raise ValueError("a stream without labels")
        for name, value in labels.items():
            if not LABEL_NAME.fullmatch(name) or not isinstance(value, str):
                raise ValueError(f"invalid label {name}={value!r}")
        leaked = FORBIDDEN_LABELS & set(labels)
        if leaked:
            raise ValueError(f"{sorted(leaked)} must be structured metadata, not labels (one stream per id)")
        for value in stream.get("values", []):
            if not (2 <= len(value) <= 3) or not str(value[0]).isdigit() or not isinstance(value[1], str):
                raise ValueError(f"an entry is not [\"<ns>\", \"<line>\", {{metadata}}]: {value!r}"[:200])
            metadata = value[2] if len(value) == 3 else {}
            if metadata and not settings["structured_metadata"]:
                raise ValueError("structured metadata sent while allow_structured_metadata is off")
            accepted.append({"labels": labels, "ts": int(value[0]), "line": value[1], "metadata": metadata})
    with lock:
        entries.extend(accepted)
    for entry in accepted:
        tenant = headers.get("X-Scope-OrgID") or "fake"
        recorder.count("loki_distributor_lines_received_total", tenant=tenant)
        recorder.count("loki_distributor_bytes_received_total", len(entry["line"]), tenant=tenant)
    return 204, b"", "text/plain"


def instant_query(path, query, body, headers):
    """Only Grafana's data source health check (`vector(1)+vector(1)`): the stand-in evaluates
    no LogQL; anything else is a 501 saying so, not an empty answer that reads as "no data"."""
    text = "".join((query.get("query") or "").split())
    if text != "vector(1)+vector(1)":
        return 501, {"status": "error", "errorType": "unavailable",
                     "error": "the Loki stand-in evaluates no LogQL (set LOKI_BIN to run real Loki)"}
    return 200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [int(query.get("time") or 0) / 1e9 if query.get("time") else 0, "2"]}]}}


def list_entries(path, query, body, headers):
    return selected(entries, lock, query, "labels")


RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def ruler_groups(config: dict) -> list[dict]:
    """The rule groups of the tenant Loki evaluates, in the Prometheus rules API's shape."""
    if "ruler" not in config:
        return []
    directory = ((config.get("common") or {}).get("storage") or {}).get("filesystem", {}).get("rules_directory")
    tenant = "fake" if not config.get("auth_enabled", True) else None
    if not directory or not Path(directory).is_dir():
        raise SystemExit(f"stand-in loki: the ruler's rules_directory {directory!r} does not exist in the container")
    if tenant is None or not (Path(directory) / tenant).is_dir():
        raise SystemExit(f"stand-in loki: no {directory}/{tenant}/: with auth off the ruler reads the tenant 'fake'")
    groups = []
    for path in sorted((Path(directory) / tenant).glob("*.y*ml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            rules = []
            for rule in group.get("rules") or []:
                unknown = set(rule) - RULE_KEYS
                if unknown or not rule.get("expr") or bool(rule.get("alert")) == bool(rule.get("record")):
                    raise SystemExit(f"stand-in loki: {path.name}: rule {rule.get('alert') or rule.get('record')!r} "
                                     f"is not an alert or a recording rule with an expr ({sorted(unknown)})")
                kind = "alerting" if rule.get("alert") else "recording"
                rules.append({"name": rule.get("alert") or rule["record"], "query": rule["expr"], "type": kind,
                              "health": "unknown", "labels": rule.get("labels") or {},
                              **({"state": "inactive", "alerts": [], "annotations": rule.get("annotations") or {}}
                                 if kind == "alerting" else {})})
            groups.append({"name": group["name"], "file": path.name, "rules": rules, "interval": 0})
    return groups


def main(argv: list[str]) -> None:
    options, _ = flags(argv[1:])
    config = yaml.safe_load(Path(options["config.file"]).read_text()) if "config.file" in options else {}
    port = (config.get("server") or {}).get("http_listen_port", 3100)
    limits = config.get("limits_config") or {}
    settings["structured_metadata"] = limits.get("allow_structured_metadata", True)
    groups = ruler_groups(config)
    routes = {("GET", "/ready"): lambda *a: (200, "ready\n", "text/plain"),
              ("POST", "/loki/api/v1/push"): push,
              ("GET", "/stand-in/entries"): list_entries,
              ("GET", "/loki/api/v1/query"): instant_query,
              ("GET", "/prometheus/api/v1/rules"): lambda *a: (200, {"status": "success", "data": {"groups": groups}}),
              ("GET", "/prometheus/api/v1/alerts"): lambda *a: (200, {"status": "success", "data": {"alerts": []}})}
    print(f'{{"stand-in": "loki", "http_port": {port}}}', flush=True)
    serve((BIND, port), routes, recorder)


if __name__ == "__main__":
    main(sys.argv[1:])
