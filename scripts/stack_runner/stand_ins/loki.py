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


def list_entries(path, query, body, headers):
    return selected(entries, lock, query, "labels")


def main(argv: list[str]) -> None:
    options, _ = flags(argv[1:])
    config = yaml.safe_load(Path(options["config.file"]).read_text()) if "config.file" in options else {}
    port = (config.get("server") or {}).get("http_listen_port", 3100)
    limits = config.get("limits_config") or {}
    settings["structured_metadata"] = limits.get("allow_structured_metadata", True)
    routes = {("GET", "/ready"): lambda *a: (200, "ready\n", "text/plain"),
              ("POST", "/loki/api/v1/push"): push,
              ("GET", "/stand-in/entries"): list_entries}
    print(f'{{"stand-in": "loki", "http_port": {port}}}', flush=True)
    serve((BIND, port), routes, recorder)


if __name__ == "__main__":
    main(sys.argv[1:])
