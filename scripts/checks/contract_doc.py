"""Reads docs/contracts.md, the single source of the stack's shared names, for the checks.

Two forms are read, each right under a `## ` heading:
- fenced ```yaml blocks, merged into one mapping (`values()`); a key defined twice is an error;
- the first Markdown table after a heading, as a list of rows keyed by the header cells
  (`table("Ports")`).
"""
import re
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/contracts.md"


def _sections() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@cache
def values() -> dict:
    merged: dict = {}
    for heading, body in _sections().items():
        for block in re.findall(r"```yaml\n(.*?)```", body, re.S):
            for key, value in (yaml.safe_load(block) or {}).items():
                if key in merged:
                    raise ValueError(f"docs/contracts.md: `{key}` is defined twice (again under '## {heading}')")
                merged[key] = value
    return merged


@cache
def table(heading: str) -> tuple[dict[str, str], ...]:
    body = _sections().get(heading)
    if body is None:
        raise KeyError(f"docs/contracts.md has no '## {heading}' section")
    rows = [l.strip() for l in body.splitlines() if l.strip().startswith("|")]
    if len(rows) < 2:
        raise KeyError(f"docs/contracts.md: '## {heading}' has no table")
    cells = lambda row: [c.strip() for c in row.strip("|").split("|")]
    header = cells(rows[0])
    return tuple(dict(zip(header, cells(r))) for r in rows[2:])


def uids() -> set[str]:
    return {row["uid"] for row in table("Datasources")}


def cpu_profile_type() -> str:
    return values()["pyroscope"]["profile_types"]["cpu"]


def profile_types() -> set[str]:
    """Every profile type id the services push (CPU and memory)."""
    return set(values()["pyroscope"]["profile_types"].values())


def services() -> list[str]:
    return list(values()["services"])
