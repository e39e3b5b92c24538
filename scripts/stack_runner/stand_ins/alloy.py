#!/usr/bin/env python3
"""Stand-in for Grafana Alloy v1.18 (no build of it runs here): a log shipper that runs exactly
the pipeline `alloy/config.alloy` declares — it reads that file at the path compose mounts it,
and every component and stage in it is executed with Alloy's semantics; a component, stage,
argument or flag it does not implement stops it with an error naming it (so the config and this
shipper cannot silently disagree).

Implemented (their Alloy reference pages, v1.18): `discovery.docker` (containers of the runner,
each with its compose labels as `__meta_docker_container_label_*`, `filter` by label or name),
`discovery.relabel` (Prometheus relabelling: replace, keep, drop, labelmap, labeldrop,
labelkeep), `loki.source.docker` (each container's stdout/stderr line, target labels merged with
`labels`, `relabel_rules` applied, `__*` labels dropped — tailer.go getStreamLabels), `loki.process`
(`stage.json`, `stage.labels`, `stage.structured_metadata`, `stage.static_labels`), `loki.write`
(JSON push with structured metadata, batched every second, retried with backoff, never dropped
while Loki is down). Alloy's own `loki_write_*` counters are served on `/metrics`.

What a real Alloy learns from the Docker socket, this stand-in learns from the runner's
`containers.json` (names, labels, the json-file log of each container).

argv: the service's own (`/bin/alloy run --server.http.listen-addr=… --storage.path=… CONFIG`).
"""

import json
import os
import re
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stack_runner.images import contract  # noqa: E402
from stack_runner.stand_ins import alloy_config  # noqa: E402
from stack_runner.stand_ins.alloy_config import Block, Call, ConfigError, Ref  # noqa: E402
from stack_runner.stand_ins.common import Recorder, flags, serve, split_address  # noqa: E402
from stack_runner.stand_ins.relabel import apply_rules, parse_rule  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
STATE = Path(os.environ.get("STACK_RUNNER_STATE", ROOT / ".stack"))
recorder = Recorder("alloy")
IGNORED = {"logging", "livedebugging"}


def sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def evaluate(value, exports: dict):
    if isinstance(value, Ref):
        if value.path not in exports:
            raise ConfigError(f"reference {value.path} is not an export of any component in the config")
        return exports[value.path]
    if isinstance(value, Call):
        if value.function == "sys.env" and len(value.args) == 1:
            return os.environ.get(value.args[0], "")
        raise ConfigError(f"function {value.function} is not implemented by the stand-in")
    if isinstance(value, list):
        return [evaluate(v, exports) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, exports) for k, v in value.items()}
    return value


def check_arguments(block: Block, allowed: set[str], blocks: set[str] = frozenset()) -> None:
    unknown = set(block.attributes) - allowed
    unknown_blocks = {b.name for b in block.blocks} - set(blocks)
    if unknown or unknown_blocks:
        raise ConfigError(f"{block.name} \"{block.label}\" (line {block.line}): the stand-in does not implement "
                          f"{sorted(unknown | unknown_blocks)}")


def docker_targets(block: Block) -> list[dict]:
    """`discovery.docker`: one target per container, as Prometheus' Docker discovery labels it."""
    check_arguments(block, {"host", "refresh_interval", "port"}, {"filter"})
    filters = [(f.attributes.get("name"), f.attributes.get("values", [])) for f in block.children("filter")]
    targets = []
    for container in json.loads((STATE / "containers.json").read_text()):
        keep = True
        for name, values in filters:
            if name == "label":
                keep &= any(all((k in container["labels"]) if not eq else container["labels"].get(k) == v
                                for k, eq, v in [value.partition("=")]) for value in values)
            elif name == "name":
                keep &= any(re.search(v, container["name"]) for v in values)
            else:
                raise ConfigError(f"discovery.docker filter {name!r} is not implemented by the stand-in")
        if keep:
            labels = {f"__meta_docker_container_label_{sanitize(k)}": v for k, v in container["labels"].items()}
            labels.update({"__meta_docker_container_id": container["id"],
                           "__meta_docker_container_name": container["name"], "__log_path": container["log"]})
            targets.append(labels)
    return targets


class Pipeline:
    def __init__(self, blocks: list[Block]):
        self.exports: dict = {}
        self.processors: dict[str, Block] = {}
        self.writers: dict[str, "Writer"] = {}
        self.sources: list[tuple[Block, dict]] = []
        for block in blocks:
            if block.name in IGNORED:
                continue
            key = f"{block.name}.{block.label}"
            if block.name == "discovery.docker":
                self.exports[f"{key}.targets"] = docker_targets(block)
            elif block.name == "discovery.relabel":
                check_arguments(block, {"targets"}, {"rule"})
                rules = [parse_rule(r.attributes) for r in block.children("rule")]
                targets = evaluate(block.attributes["targets"], self.exports)
                self.exports[f"{key}.output"] = [t for t in (apply_rules(dict(t), rules) for t in targets) if t]
                self.exports[f"{key}.rules"] = rules
            elif block.name == "loki.source.docker":
                check_arguments(block, {"host", "targets", "relabel_rules", "forward_to", "labels", "refresh_interval"})
                self.sources.append((block, {}))
            elif block.name == "loki.process":
                check_arguments(block, {"forward_to"}, {"stage.json", "stage.labels", "stage.structured_metadata",
                                                        "stage.static_labels"})
                self.processors[f"{key}.receiver"] = block
                self.exports[f"{key}.receiver"] = f"{key}.receiver"
            elif block.name == "loki.write":
                check_arguments(block, {"external_labels"}, {"endpoint"})
                self.writers[f"{key}.receiver"] = Writer(key, block)
                self.exports[f"{key}.receiver"] = f"{key}.receiver"
            else:
                raise ConfigError(f"component {block.name} (line {block.line}) is not implemented by the stand-in")

    def deliver(self, receivers: list[str], entry: dict) -> None:
        for receiver in receivers:
            if receiver in self.writers:
                self.writers[receiver].add(entry)
            elif receiver in self.processors:
                processed = process(self.processors[receiver], entry)
                self.deliver(evaluate(self.processors[receiver].attributes["forward_to"], self.exports), processed)
            else:
                raise ConfigError(f"forward_to names {receiver}, which is not a receiver")


def extract_json(stage: Block, entry: dict) -> None:
    check_arguments(stage, {"expressions", "source", "drop_malformed"})
    source = entry["extracted"].get(stage.attributes["source"]) if "source" in stage.attributes else entry["line"]
    try:
        document = json.loads(source) if isinstance(source, str) else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return
    for name, expression in stage.attributes.get("expressions", {}).items():
        path = expression or name
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", path):
            raise ConfigError(f"stage.json expression {path!r} is beyond the stand-in (plain keys only)")
        value = document
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            entry["extracted"][name] = value if isinstance(value, str) else json.dumps(value)


def process(block: Block, entry: dict) -> dict:
    entry = {**entry, "labels": dict(entry["labels"]), "metadata": dict(entry["metadata"]), "extracted": {}}
    for stage in block.blocks:
        if stage.name == "stage.json":
            extract_json(stage, entry)
            continue
        check_arguments(stage, {"values"})
        for name, source in stage.attributes["values"].items():
            if stage.name == "stage.static_labels":
                entry["labels"][name] = source
                continue
            value = entry["extracted"].get(source or name)
            if value is None:
                continue
            target = entry["labels"] if stage.name == "stage.labels" else entry["metadata"]
            target[name] = str(value)
    return entry


class Writer:
    """`loki.write`: batches entries per second and pushes them, retrying until Loki takes them."""

    def __init__(self, key: str, block: Block):
        endpoints = block.children("endpoint")
        if len(endpoints) != 1:
            raise ConfigError(f"{key}: the stand-in expects exactly one endpoint block")
        check_arguments(endpoints[0], {"url"})
        self.key, self.url = key, endpoints[0].attributes["url"]
        self.host = self.url.split("/")[2]
        self.pending: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.loop, daemon=True).start()

    def add(self, entry: dict) -> None:
        with self.lock:
            self.pending.append(entry)

    def loop(self) -> None:
        backoff = 0.5
        while True:
            time.sleep(1.0)
            with self.lock:
                batch, self.pending = self.pending[:5000], self.pending[5000:]
            if not batch:
                continue
            while True:
                try:
                    self.push(batch)
                    recorder.count("loki_write_sent_entries_total", len(batch), component_id=self.key, host=self.host)
                    backoff = 0.5
                    break
                except OSError as error:
                    recorder.count("loki_write_request_failures_total", component_id=self.key, host=self.host)
                    print(f"stand-in alloy: push to {self.url} failed ({error}); retrying", file=sys.stderr, flush=True)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)

    def push(self, batch: list[dict]) -> None:
        streams: dict[tuple, list] = {}
        for entry in batch:
            key = tuple(sorted(entry["labels"].items()))
            value = [str(entry["ts"]), entry["line"]] + ([entry["metadata"]] if entry["metadata"] else [])
            streams.setdefault(key, []).append(value)
        body = json.dumps({"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}).encode()
        request = urllib.request.Request(self.url, body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status >= 300:
                raise OSError(f"Loki answered {response.status}")


def stream_labels(target: dict, defaults: dict, rules: list, stream: str) -> dict | None:
    labels = {**target, **defaults, "__meta_docker_container_log_stream": stream}
    labels = apply_rules(labels, rules)
    return None if labels is None else {k: v for k, v in labels.items() if not k.startswith("__")}


def tail(pipeline: Pipeline, block: Block, target: dict) -> None:
    """Follows one container's json-file log from its beginning, as loki.source.docker reads it."""
    rules = evaluate(block.attributes.get("relabel_rules", []), pipeline.exports)
    defaults = evaluate(block.attributes.get("labels", {}), pipeline.exports)
    forward = evaluate(block.attributes["forward_to"], pipeline.exports)
    path = Path(target["__log_path"])
    while not path.exists():
        time.sleep(0.5)
    with open(path, "rb") as log:
        while True:
            line = log.readline()
            if not line.endswith(b"\n"):
                time.sleep(0.2)
                log.seek(-len(line), os.SEEK_CUR)
                continue
            record = json.loads(line)
            content = record["log"].rstrip("\n")
            labels = stream_labels(target, defaults, rules, record["stream"])
            if not content or labels is None:
                continue
            ts = int(datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp() * 1e9)
            pipeline.deliver(forward, {"labels": labels, "metadata": {}, "line": content, "ts": ts})


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "run":
        raise SystemExit(f"stand-in alloy: only `alloy run` starts a server; got {argv[1:2]}")
    options, positional = flags(argv[2:])
    allowed = set(contract(ROOT)["images"]["grafana/alloy"]["flags"]["/bin/alloy run"])
    unknown = set(options) - allowed
    if unknown:
        raise SystemExit(f"stand-in alloy: unknown flag(s) for alloy run: {sorted(unknown)}")
    if len(positional) != 1:
        raise SystemExit(f"stand-in alloy: alloy run takes one config path, got {positional}")
    try:
        pipeline = Pipeline(alloy_config.parse(Path(positional[0]).read_text()))
    except ConfigError as error:
        raise SystemExit(f"stand-in alloy: {positional[0]}: {error}")
    for block, _ in pipeline.sources:
        for target in evaluate(block.attributes["targets"], pipeline.exports):
            threading.Thread(target=tail, args=(pipeline, block, target), daemon=True).start()
    host, port = split_address(options.get("server.http.listen-addr", "127.0.0.1:12345"))
    print(json.dumps({"stand-in": "alloy", "listen": f"{host}:{port}", "usage_reporting":
                      "off" if options.get("disable-reporting") == "true" else "on (Alloy would report usage)"}),
          flush=True)
    serve((host, port), {("GET", "/-/ready"): lambda *a: (200, "Alloy is ready.\n", "text/plain"),
                         ("GET", "/-/healthy"): lambda *a: (200, "All Alloy components are healthy.\n", "text/plain")},
          recorder)


if __name__ == "__main__":
    main(sys.argv[1:])
