"""Grafana's reading of its provisioning files, for the Grafana stand-in and the checks that do
what Grafana would do with them: data sources, dashboards, and alerting (grafana_alerting.py).

Values are interpolated as Grafana 13 does (pkg/services/provisioning/values/values.go,
interpolateValue): the text is split on `$$` (a literal `$`), each part has `$__env{NAME}` and
`$__file{PATH}` expanded, then Go's `os.ExpandEnv` (`$NAME`, `${NAME}`; an unset name becomes
empty — which is why a correlation's `${__span.traceId}` must be written `$${__span.traceId}`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

CORE_TYPES = {"prometheus", "loki", "tempo", "grafana-pyroscope-datasource", "alertmanager"}


def _go_expand(text: str, env: dict[str, str]) -> str:
    """Go's os.Expand with os.Getenv (src/os/env.go: Expand, getShellName)."""
    out, i = [], 0
    special = set("*#$@!?-0123456789")
    while i < len(text):
        if text[i] != "$" or i + 1 >= len(text):
            out.append(text[i])
            i += 1
            continue
        rest = text[i + 1:]
        if rest[0] == "{":
            if len(rest) > 2 and rest[1] in special and rest[2] == "}":
                name, width = rest[1], 3
            else:
                close = rest.find("}")
                name, width = (rest[1:close], close + 1) if close > 1 else ("", 2 if close == 1 else 1)
        elif rest[0] in special:
            name, width = rest[0], 1
        else:
            match = re.match(r"[A-Za-z0-9_]*", rest)
            name, width = match.group(), match.end()
        if name:
            out.append(env.get(name, ""))
        elif width == 0:
            out.append("$")
        i += 1 + width
    return "".join(out)


def _expand_var(text: str) -> str:
    def one(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "file":
            return Path(arg).read_text().strip()
        raise ValueError(f"${{__{kind}{{…}}}} is not supported here")

    return re.sub(r"\$__(file|vault)\{(.*?)\}", one, re.sub(r"\$__env\{(.*?)\}", lambda m: "${" + m.group(1) + "}", text))


def interpolate(value, env: dict[str, str]):
    if isinstance(value, str):
        return "$".join(_go_expand(_expand_var(part), env) for part in value.split("$$"))
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def datasources(provisioning: Path, env: dict[str, str]) -> list[dict]:
    found = []
    for path in sorted((provisioning / "datasources").glob("*.y*ml")):
        document = yaml.safe_load(path.read_text()) or {}
        for datasource in document.get("datasources") or []:
            found.append({**interpolate(datasource, env), "_file": path.name})
    return found


def problems(provisioning: Path, env: dict[str, str]) -> list[str]:
    """What would stop Grafana from provisioning, or leave a provisioned link, rule, route or
    notification broken (alerting: grafana_alerting.py)."""
    from . import grafana_alerting

    found = []
    sources = datasources(provisioning, env)
    uids = [d.get("uid") for d in sources]
    found += grafana_alerting.problems(provisioning, env, set(uids), dashboard_panels(provisioning, env))
    for d in sources:
        where = f"datasources/{d['_file']}: {d.get('name')}"
        for key in ("name", "type", "uid", "url"):
            if not d.get(key):
                found.append(f"{where}: no {key}")
        if d.get("type") not in CORE_TYPES:
            found.append(f"{where}: type {d.get('type')!r} is not a core data source of Grafana 13")
    for uid in {u for u in uids if uids.count(u) > 1}:
        found.append(f"datasources: uid {uid} is provisioned twice")
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in (yaml.safe_load(path.read_text()) or {}).get("providers") or []:
            folder = Path(interpolate(provider.get("options", {}).get("path", ""), env))
            if not folder.is_dir():
                found.append(f"dashboards/{path.name}: provider {provider.get('name')}: path {folder} does not exist")
                continue
            found += dashboard_problems(folder, set(uids))
    return found


def dashboard_panels(provisioning: Path, env: dict[str, str]) -> dict[str, set[int]]:
    """uid → panel ids of every dashboard the file providers provision."""
    panels: dict[str, set[int]] = {}
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in (yaml.safe_load(path.read_text()) or {}).get("providers") or []:
            folder = Path(interpolate(provider.get("options", {}).get("path", ""), env))
            for board in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
                try:
                    model = json.loads(board.read_text())
                except ValueError:
                    continue
                panels[model.get("uid")] = {p.get("id") for p in model.get("panels", [])}
    return panels


def dashboard_problems(folder: Path, uids: set[str]) -> list[str]:
    found, seen = [], {}
    for path in sorted(folder.rglob("*.json")):
        try:
            model = json.loads(path.read_text())
        except ValueError as error:
            found.append(f"{path.name}: not JSON: {error}")
            continue
        if "dashboard" in model and "panels" not in model:
            found.append(f"{path.name}: wrapped in {{\"dashboard\": …}}: Grafana says 'Dashboard title cannot be empty'")
        if not model.get("title") or not model.get("uid"):
            found.append(f"{path.name}: no title or uid")
        if model.get("uid") in seen:
            found.append(f"{path.name}: uid {model.get('uid')} also used by {seen[model.get('uid')]}")
        seen[model.get("uid")] = path.name
        for ref in re.findall(r'"datasource":\s*\{[^{}]*?"uid":\s*"([^"]+)"', path.read_text()):
            if ref not in uids and not ref.startswith(("$", "-- ", "grafana")):
                found.append(f"{path.name}: refers to data source uid {ref!r}, which is not provisioned")
    return found
