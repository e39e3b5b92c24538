"""The log path, end to end: what each container wrote to stdout is what Loki holds, labelled as
`alloy/config.alloy` says — `service_name` = the compose service, the ids as structured metadata
and never labels — with nothing lost (every settled access line arrives with its trace id)."""

from __future__ import annotations

import json
import time

from ..stand_ins import alloy_config
from .backends import Loki
from .base import Stack, get_json, rfc3339_seconds

SETTLED = 15


def labels_the_config_sets(stack: Stack) -> tuple[set[str], set[str]]:
    """(label names, structured metadata names) `alloy/config.alloy` can put on an entry."""
    labels, metadata = set(), set()
    for block in alloy_config.parse((stack.root / "alloy/config.alloy").read_text()):
        for inner in [block, *block.blocks]:
            if inner.name == "rule" and inner.attributes.get("target_label") and \
                    not inner.attributes["target_label"].startswith("__"):
                labels.add(inner.attributes["target_label"])
            if inner.name in ("stage.labels", "stage.static_labels"):
                labels |= set(inner.attributes.get("values", {}))
            if inner.name == "stage.structured_metadata":
                metadata |= set(inner.attributes.get("values", {}))
    return labels, metadata


def access_lines(stack: Stack, service: str) -> dict[str, dict]:
    """trace_id → access line of every settled request the service logged."""
    settled = time.time() - SETTLED
    lines = {}
    for record in stack.json_log(service):
        if record.get("target") == "access" and record.get("trace_id"):
            if rfc3339_seconds(record["timestamp"]) < settled:
                lines[record["trace_id"]] = record
    return lines


def in_loki(stack: Stack, service: str) -> dict[str, dict]:
    """trace_id (from structured metadata) → stream labels of the service's access lines in Loki."""
    found = {}
    if stack.real("loki"):
        loki = Loki(stack.url("loki", 3100))
        for labels, line in loki.lines(f'{{service_name="{service}"}} |= "request completed"', limit=5000):
            if labels.get("trace_id"):
                found[labels["trace_id"]] = labels
    else:
        for entry in get_json(f"{stack.url('loki', 3100)}/stand-in/entries", service_name=service):
            if "request completed" in entry["line"] and entry["metadata"].get("trace_id"):
                found[entry["metadata"]["trace_id"]] = {**entry["labels"], **entry["metadata"],
                                                        "_line_trace": json.loads(entry["line"]).get("trace_id")}
    return found


def check(stack: Stack) -> None:
    print("logs: container stdout → Alloy's pipeline → Loki, labelled as alloy/config.alloy says, nothing lost")
    labels, metadata = labels_the_config_sets(stack)
    stack.ledger.check("service_name" in labels and {"trace_id", "span_id"} <= metadata and
                       not {"trace_id", "span_id"} & labels,
                       f"alloy/config.alloy sets labels {sorted(labels)} and structured metadata {sorted(metadata)}")
    if stack.real("loki"):
        # `__stream_shard__` and the like are Loki's own (automatic stream sharding), not a label
        # anything shipped.
        names = {n for n in Loki(stack.url("loki", 3100)).label_names() if not n.startswith("__")}
        stack.ledger.check(names <= labels and "service_name" in names,
                           f"Loki's label names {sorted(names)} are only those the config sets")
    for service in ("sample-app", "sample-app-downstream"):
        written = access_lines(stack, service)
        arrived = in_loki(stack, service)
        missing = sorted(set(written) - set(arrived))
        stack.ledger.check(bool(written) and not missing,
                           f"{service}: all {len(written)} settled access lines are in Loki with their trace_id "
                           f"as structured metadata ({len(missing)} missing{': ' + missing[0] if missing else ''})")
        sample = next(iter(arrived.values()), {})
        stack.ledger.check(sample.get("service_name") == service and "trace_id" not in (set(sample) & labels),
                           f"{service}: its lines carry service_name={sample.get('service_name')}")
