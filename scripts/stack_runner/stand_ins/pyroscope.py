#!/usr/bin/env python3
"""Stand-in for Pyroscope 2.2 (no build of it runs here): the ingest API on port 4040.

`POST /ingest?name=<app>{labels}&from=&until=&format=pprof` with a raw (or gzipped) pprof body is
decoded and checked the way Pyroscope would take it: the label set parses and carries
`service_name`, `from` ≤ `until`, every sample has one value per sample type, and pprof sample
labels `span_id` are 16 hex digits. Each sample type becomes the profile type id Pyroscope 2.2.1
gives it — `<name>:<sample type>:<unit>:<period type>:<period unit>`, the name chosen from the
sample types (`pkg/og/convert/pprof/profile.go:172-206` metricName: `cpu` → `process_cpu`,
`alloc_*`/`inuse_*`/`space`/`objects` → `memory`; the id format of
`pkg/model/profile.go:46-52` SelectorFromProfileType). What arrived is kept per push for the
checks (`/stand-in/pushes`); it answers no profile queries.

argv: the service's own (`/usr/bin/pyroscope -config.file=/etc/pyroscope/pyroscope.yaml`).
"""

import json
import re
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml  # noqa: E402

from stack_runner.stand_ins import pprof  # noqa: E402
from stack_runner.stand_ins.common import BIND, Recorder, flags, selected, serve  # noqa: E402

recorder = Recorder("pyroscope")
pushes: list[dict] = []
lock = threading.Lock()
LABEL_SET = re.compile(r"^(?P<app>[^{}]+)(?:\{(?P<labels>[^{}]*)\})?$")
SPAN_ID = re.compile(r"[0-9a-f]{16}")
PER_SAMPLE = {"span_id", "trace_id", "profile_id"}


def metric_name(sample_types: list[tuple[str, str]]) -> str:
    names = [t for t, _ in sample_types]
    if "wall" in names:
        return "wall"
    for name in names:
        if "cpu" in name:
            return "process_cpu"
        if "alloc_" in name or "inuse_" in name or name in ("space", "objects"):
            return "memory"
        for kind in ("mutex", "block"):
            if f"{kind}_" in name:
                return kind
        if "goroutines" in name:
            return "goroutines"
    return names[-1] if names else ""


def parse_name(raw: str) -> tuple[str, dict[str, str]]:
    match = LABEL_SET.match(raw or "")
    if not match:
        raise ValueError(f"name {raw!r} is not app{{key=value,…}}")
    labels = {}
    for pair in filter(None, (match.group("labels") or "").split(",")):
        key, equals, value = pair.partition("=")
        if not equals or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_.]*", key.strip()):
            raise ValueError(f"label {pair!r} in {raw!r} is not key=value")
        labels[key.strip()] = value.strip()
    return match.group("app"), labels


def ingest(path, query, body, headers):
    if query.get("format", "folded") != "pprof":
        raise ValueError(f"format={query.get('format')}: this stack pushes pprof")
    app, labels = parse_name(query.get("name", ""))
    if "service_name" not in labels:
        raise ValueError("no service_name label: Grafana's queries and trace links select on it")
    start, until = int(query.get("from", 0)), int(query.get("until", 0))
    if not 0 < start <= until:
        raise ValueError(f"from={start} until={until}: not a time range")
    profile = pprof.parse(body)
    if not profile.sample_types:
        raise ValueError("the profile has no sample types")
    name = metric_name(profile.sample_types)
    period_type, period_unit = profile.period_type
    types = [f"{name}:{t}:{u}:{period_type}:{period_unit}" for t, u in profile.sample_types]
    label_keys, span_frames, span_traces, series = Counter(), {}, {}, set()
    for sample in profile.samples:
        label_keys.update(sample.labels.keys())
        span = sample.labels.get("span_id")
        if span is not None:
            if not SPAN_ID.fullmatch(span):
                raise ValueError(f"sample label span_id={span!r} is not 16 hex digits")
            span_frames.setdefault(span, Counter()).update(set(profile.stack(sample)))
            span_traces[span] = sample.labels.get("trace_id", "")
        # Pyroscope keeps span_id and trace_id per sample and makes every other sample label a
        # series label (pkg/model/pprofsplit/pprof_split.go:37-38, GroupSamplesWithoutLabels).
        extra = {k: v for k, v in sample.labels.items() if k not in PER_SAMPLE}
        series.add(json.dumps({**labels, **extra}, sort_keys=True))
    totals = [sum(s.values[i] for s in profile.samples) for i in range(len(types))]
    top = Counter()
    for sample in profile.samples:
        stack = profile.stack(sample)
        if stack:
            top[stack[0]] += sample.values[0]
    entry = {"app": app, "labels": labels, "from": start, "until": until, "spy": query.get("spyName", ""),
             "profile_types": types, "totals": totals, "samples": len(profile.samples),
             "sample_label_keys": dict(label_keys), "span_ids": {k: sorted(v) for k, v in span_frames.items()},
             "span_traces": span_traces, "series": [json.loads(x) for x in sorted(series)],
             "top_leaf_functions": top.most_common(10)}
    with lock:
        pushes.append(entry)
    recorder.count("pyroscope_stand_in_pushes_total", service_name=labels["service_name"])
    return 200, b"", "text/plain"


def list_pushes(path, query, body, headers):
    return selected(pushes, lock, query, "labels")


def main(argv: list[str]) -> None:
    options, _ = flags(argv[1:])
    if "config.file" in options:
        yaml.safe_load(Path(options["config.file"]).read_text())   # must parse, as Pyroscope's would
    routes = {("GET", "/ready"): lambda *a: (200, "ready\n", "text/plain"),
              ("POST", "/ingest"): ingest,
              ("GET", "/stand-in/pushes"): list_pushes}
    print('{"stand-in": "pyroscope", "http_port": 4040}', flush=True)
    serve((BIND, 4040), routes, recorder)


if __name__ == "__main__":
    main(sys.argv[1:])
