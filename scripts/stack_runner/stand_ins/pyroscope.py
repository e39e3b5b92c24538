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
checks (`/stand-in/pushes`).

It answers the part of Pyroscope's query API (Connect, JSON bodies; `api/querier/v1/querier.proto`)
that Grafana's data source and `load-gen verify` use, from what it received: `ProfileTypes`,
`SelectMergeStacktraces` (the total of the samples of one profile type whose series match a
Prometheus-style label selector — span_id and trace_id are no series labels, every other sample
label is) and `SelectMergeSpanProfile` (the samples labelled with one of the selector's span
ids). Times are milliseconds; a malformed request is a 400 naming the problem. The flame graph
it returns has the total only (one root node): the stand-in keeps no stacks per series.

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
    series_values: dict[str, list[int]] = {}
    span_values: dict[str, list[int]] = {}
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
        key = json.dumps({**labels, **extra}, sort_keys=True)
        series.add(key)
        add(series_values.setdefault(key, [0] * len(types)), sample.values)
        if span is not None:
            add(span_values.setdefault(span, [0] * len(types)), sample.values)
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
             "top_leaf_functions": top.most_common(10),
             "series_values": [{"labels": json.loads(k), "values": v} for k, v in sorted(series_values.items())],
             "span_values": span_values}
    with lock:
        pushes.append(entry)
    recorder.count("pyroscope_stand_in_pushes_total", service_name=labels["service_name"])
    return 200, b"", "text/plain"


def add(total: list[int], values: list[int]) -> None:
    for i, value in enumerate(values[:len(total)]):
        total[i] += value


MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_selector(text: str) -> list[tuple[str, str, str]]:
    """A Prometheus-style selector `{name="v", other=~"re"}` → matchers; ValueError otherwise."""
    text = (text or "").strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"labelSelector {text!r} is not {{…}}")
    inner, matchers, at = text[1:-1], [], 0
    while at < len(inner.strip()):
        match = MATCHER.match(inner, at)
        if not match:
            raise ValueError(f"labelSelector {text!r}: cannot parse at {inner[at:]!r}")
        name, op, value = match.group(1), match.group(2), match.group(3).replace('\\"', '"')
        if op in ("=~", "!~"):
            re.compile(value)
        matchers.append((name, op, value))
        at = match.end()
    return matchers


def matches(labels: dict, matchers: list[tuple[str, str, str]]) -> bool:
    """Prometheus' semantics: an absent label is the empty string; regexes are anchored."""
    for name, op, value in matchers:
        got = labels.get(name, "")
        ok = {"=": got == value, "!=": got != value,
              "=~": re.fullmatch(value, got) is not None, "!~": re.fullmatch(value, got) is None}[op]
        if not ok:
            return False
    return True


def connect_request(body: bytes, *required: str) -> dict:
    request = json.loads(body or b"{}")
    if not isinstance(request, dict):
        raise ValueError("the body is not a JSON object")
    for key in required:
        if key not in request:
            raise ValueError(f"{key} is required")
    for key in ("start", "end"):
        if key in request:
            request[key] = int(request[key])     # int64: a number or a string in Connect's JSON
    if "start" in request and "end" in request and request["start"] >= request["end"]:
        raise ValueError(f"start {request['start']} is not before end {request['end']} (milliseconds)")
    return request


def in_window(push: dict, request: dict) -> bool:
    start, end = request.get("start", 0), request.get("end", 2**63)
    return push["from"] * 1000 <= end and push["until"] * 1000 >= start


def profile_type(request: dict) -> str:
    type_id = request["profileTypeID"]
    if len(type_id.split(":")) != 5:
        raise ValueError(f"profileTypeID {type_id!r} is not name:sample_type:unit:period_type:period_unit")
    return type_id


def flamegraph(total: int) -> dict:
    # int64 fields are strings in Connect's JSON (protojson).
    return {"flamegraph": {"names": ["total"], "levels": [{"values": ["0", str(total), "0", "0"]}],
                           "total": str(total), "maxSelf": "0"}}


def profile_types(path, query, body, headers):
    request = connect_request(body)
    with lock:
        found = sorted({t for p in pushes if in_window(p, request) for t in p["profile_types"]})
    out = []
    for type_id in found:
        name, sample_type, sample_unit, period_type, period_unit = type_id.split(":")
        out.append({"ID": type_id, "name": name, "sampleType": sample_type, "sampleUnit": sample_unit,
                    "periodType": period_type, "periodUnit": period_unit})
    return 200, {"profileTypes": out}


def select_merge_stacktraces(path, query, body, headers):
    request = connect_request(body, "profileTypeID", "labelSelector", "start", "end")
    type_id, matchers = profile_type(request), parse_selector(request["labelSelector"])
    total = 0
    with lock:
        for push in pushes:
            if type_id in push["profile_types"] and in_window(push, request):
                index = push["profile_types"].index(type_id)
                total += sum(s["values"][index] for s in push["series_values"] if matches(s["labels"], matchers))
    return 200, flamegraph(total)


def select_merge_span_profile(path, query, body, headers):
    request = connect_request(body, "profileTypeID", "labelSelector", "spanSelector", "start", "end")
    type_id, matchers = profile_type(request), parse_selector(request["labelSelector"])
    spans = request["spanSelector"]
    if not isinstance(spans, list) or not all(isinstance(s, str) and SPAN_ID.fullmatch(s) for s in spans):
        raise ValueError("spanSelector must be a list of span ids, 16 hex digits each")
    wanted, total = set(spans), 0
    with lock:
        for push in pushes:
            if type_id in push["profile_types"] and in_window(push, request) and matches(push["labels"], matchers):
                index = push["profile_types"].index(type_id)
                total += sum(v[index] for span, v in push["span_values"].items() if span in wanted)
    return 200, flamegraph(total)


def list_pushes(path, query, body, headers):
    return selected(pushes, lock, query, "labels")


def main(argv: list[str]) -> None:
    options, _ = flags(argv[1:])
    if "config.file" in options:
        yaml.safe_load(Path(options["config.file"]).read_text())   # must parse, as Pyroscope's would
    routes = {("GET", "/ready"): lambda *a: (200, "ready\n", "text/plain"),
              ("POST", "/ingest"): ingest,
              ("GET", "/stand-in/pushes"): list_pushes,
              ("POST", "/querier.v1.QuerierService/ProfileTypes"): profile_types,
              ("POST", "/querier.v1.QuerierService/SelectMergeStacktraces"): select_merge_stacktraces,
              ("POST", "/querier.v1.QuerierService/SelectMergeSpanProfile"): select_merge_span_profile}
    print('{"stand-in": "pyroscope", "http_port": 4040}', flush=True)
    serve((BIND, 4040), routes, recorder)


if __name__ == "__main__":
    main(sys.argv[1:])
