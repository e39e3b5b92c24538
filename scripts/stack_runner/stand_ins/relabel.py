"""Prometheus relabelling, as `discovery.relabel` and `loki.source.docker`'s `relabel_rules` run
it: rules in order; `replace` (the default), `keep`, `drop`, `labelmap`, `labeldrop`,
`labelkeep`; regexes fully anchored; `$1`/`${name}` expanded in the replacement.
Reference: https://grafana.com/docs/alloy/v1.18/reference/components/discovery/discovery.relabel/
"""

from __future__ import annotations

import re

from stack_runner.stand_ins.alloy_config import ConfigError

ACTIONS = {"replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"}
KNOWN = {"source_labels", "separator", "regex", "target_label", "replacement", "action"}


def parse_rule(attributes: dict) -> dict:
    unknown = set(attributes) - KNOWN
    if unknown:
        raise ConfigError(f"rule: the stand-in does not implement {sorted(unknown)}")
    action = attributes.get("action", "replace").lower()
    if action not in ACTIONS:
        raise ConfigError(f"rule action {action!r} is not implemented by the stand-in")
    if action == "replace" and "target_label" not in attributes:
        raise ConfigError("a replace rule needs target_label")
    return {"source_labels": attributes.get("source_labels", []), "separator": attributes.get("separator", ";"),
            "regex": re.compile(attributes.get("regex", "(.*)")), "target_label": attributes.get("target_label", ""),
            "replacement": attributes.get("replacement", "$1"), "action": action}


def expand(template: str, match: re.Match) -> str:
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except (IndexError, re.error):
            return ""
        return value or ""

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", one, template)


def apply_rules(labels: dict, rules: list[dict]) -> dict | None:
    """The labels after every rule, or None when a keep/drop rule dropped the target."""
    for rule in rules:
        regex, action = rule["regex"], rule["action"]
        value = rule["separator"].join(labels.get(s, "") for s in rule["source_labels"])
        if action == "replace":
            match = regex.fullmatch(value)
            if match:
                target = expand(rule["target_label"], match)
                result = expand(rule["replacement"], match)
                if result:
                    labels[target] = result
                else:
                    labels.pop(target, None)
        elif action == "keep" and not regex.fullmatch(value):
            return None
        elif action == "drop" and regex.fullmatch(value):
            return None
        elif action == "labelmap":
            for name in list(labels):
                match = regex.fullmatch(name)
                if match:
                    labels[expand(rule["replacement"], match)] = labels[name]
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.fullmatch(k)}
        elif action == "labelkeep":
            labels = {k: v for k, v in labels.items() if regex.fullmatch(k)}
    return labels
