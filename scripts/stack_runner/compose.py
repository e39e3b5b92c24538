"""Reads `docker-compose.yml` and `.env` the way Docker Compose does, into plain service specs.

The compose file is the only source of truth of the local runner: every service runs with its
own `command`, `environment`, volumes, ports, healthcheck, `depends_on`, `restart` and
`mem_limit`, read from here and nothing restated elsewhere.

Interpolation follows the compose specification: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?error}`, `${VAR?error}`, `$$` for a literal `$`; values come from the process
environment first, then `.env` (as with `docker compose`, the shell wins). YAML anchors and
`<<` merge keys are resolved by the YAML loader, as compose does.
Reference: https://github.com/compose-spec/compose-spec/blob/main/spec.md
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ComposeError(Exception):
    """The compose file asks for something compose itself would refuse."""


_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def read_env_file(path: Path) -> dict[str, str]:
    """`.env`: KEY=VALUE lines; `#` comments and blank lines ignored; optional quotes removed."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ComposeError(f"{path.name}:{number}: not KEY=VALUE: {raw!r}")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(text: str, variables: dict[str, str], where: str) -> str:
    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            return variables.get(match.group("bare"), "")
        expr = match.group("braced")
        parsed = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, re.S)
        if not parsed:
            raise ComposeError(f"{where}: invalid interpolation ${{{expr}}}")
        name, op, arg = parsed.groups()
        value = variables.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if unset_or_empty else value
        if op in ("?", ":?"):
            if unset_or_empty:
                raise ComposeError(f"{where}: required variable {name} is missing: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VAR.sub(substitute, text)


def _interpolate_tree(node, variables: dict[str, str], where: str):
    if isinstance(node, str):
        return interpolate(node, variables, where)
    if isinstance(node, list):
        return [_interpolate_tree(n, variables, where) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, variables, f"{where}.{k}") for k, v in node.items()}
    return node


def parse_duration(text: str | None, default: float) -> float:
    """Compose durations: `10s`, `1m30s`, `500ms`, `1h`."""
    if text is None:
        return default
    total, rest = 0.0, str(text)
    for number, unit in re.findall(r"([\d.]+)(us|ms|s|m|h)", rest):
        total += float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    if not re.fullmatch(r"([\d.]+(us|ms|s|m|h))+", rest):
        raise ComposeError(f"not a compose duration: {text!r}")
    return total


def parse_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([bkmg]?)b?", str(text).lower())
    if not match:
        raise ComposeError(f"not a compose byte value: {text!r}")
    return int(match.group(1)) * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]


@dataclass
class Healthcheck:
    test: list[str]            # exec form: the argv after CMD (CMD-SHELL is wrapped in /bin/sh -c)
    interval: float
    timeout: float
    retries: int
    start_period: float

    @staticmethod
    def parse(raw: dict | None, where: str) -> "Healthcheck | None":
        if not raw or raw.get("disable"):
            return None
        test = raw.get("test")
        if isinstance(test, str):
            argv = ["/bin/sh", "-c", test]
        elif test and test[0] == "CMD":
            argv = list(test[1:])
        elif test and test[0] == "CMD-SHELL":
            argv = ["/bin/sh", "-c", " ".join(test[1:])]
        elif test and test[0] == "NONE":
            return None
        else:
            raise ComposeError(f"{where}: healthcheck test must start with CMD or CMD-SHELL: {test!r}")
        return Healthcheck(argv, parse_duration(raw.get("interval"), 30), parse_duration(raw.get("timeout"), 30),
                           int(raw.get("retries", 3)), parse_duration(raw.get("start_period"), 0))


@dataclass
class Volume:
    source: str                # a named volume, or an absolute host path (bind)
    target: str
    read_only: bool
    named: bool


@dataclass
class Port:
    host_ip: str
    host_port: int
    container_port: int


@dataclass
class Service:
    name: str
    image: str
    build: dict | None
    command: list[str] | None
    entrypoint: list[str] | None
    environment: dict[str, str]
    volumes: list[Volume]
    ports: list[Port]
    healthcheck: Healthcheck | None
    depends_on: dict[str, str]          # service → condition
    restart: str
    mem_limit: int | None
    labels: dict[str, str]
    pull_policy: str | None
    raw: dict = field(repr=False, default_factory=dict)


@dataclass
class Project:
    name: str
    root: Path
    services: dict[str, Service]
    volumes: list[str]
    variables: dict[str, str]

    def start_order(self) -> list[str]:
        """Services ordered so that each comes after what it depends on (compose's order)."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, chain: list[str]) -> None:
            if name in order:
                return
            if name in visiting:
                raise ComposeError(f"dependency cycle: {' → '.join(chain + [name])}")
            visiting.add(name)
            for dependency in self.services[name].depends_on:
                if dependency not in self.services:
                    raise ComposeError(f"{name} depends on {dependency}, which is not a service")
                visit(dependency, chain + [name])
            visiting.discard(name)
            order.append(name)

        for name in self.services:
            visit(name, [])
        return order


def _as_list(value, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    raise ComposeError(f"{where}: must be a string or a list")


def _environment(raw, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {k: "" if v is None else str(v) for k, v in raw.items()}
    env = {}
    for item in raw:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def _volumes(raw: list, root: Path, declared: set[str], where: str) -> list[Volume]:
    volumes = []
    for entry in raw or []:
        if not isinstance(entry, str):
            raise ComposeError(f"{where}: only the short volume syntax is supported here: {entry!r}")
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise ComposeError(f"{where}: volume {entry!r} is not SOURCE:TARGET[:MODE]")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        named = not source.startswith((".", "/", "~"))
        if named and source not in declared:
            raise ComposeError(f"{where}: named volume {source!r} is not declared under top-level volumes")
        if not named:
            source = str((root / source).resolve()) if source.startswith(".") else os.path.expanduser(source)
        volumes.append(Volume(source, target, "ro" in mode.split(","), named))
    return volumes


def _ports(raw: list, where: str) -> list[Port]:
    ports = []
    for entry in raw or []:
        match = re.fullmatch(r"(?:(\d+\.\d+\.\d+\.\d+):)?(\d+):(\d+)(?:/tcp)?", str(entry))
        if not match:
            raise ComposeError(f"{where}: port mapping {entry!r} is not [IP:]HOST:CONTAINER")
        ports.append(Port(match.group(1) or "0.0.0.0", int(match.group(2)), int(match.group(3))))
    return ports


def project_name(root: Path, variables: dict[str, str]) -> str:
    """COMPOSE_PROJECT_NAME, else the project directory's name, normalised as compose does."""
    raw = variables.get("COMPOSE_PROJECT_NAME") or root.name
    return re.sub(r"[^a-z0-9_-]", "", raw.lower())


def load(root: Path, file: str = "docker-compose.yml", environ: dict[str, str] | None = None) -> Project:
    root = root.resolve()
    environ = dict(os.environ if environ is None else environ)
    variables = {**read_env_file(root / ".env"), **environ}
    document = yaml.safe_load((root / file).read_text())
    if not isinstance(document, dict) or "services" not in document:
        raise ComposeError(f"{file}: no services")
    declared = set((document.get("volumes") or {}).keys())
    services: dict[str, Service] = {}
    active = set(filter(None, variables.get("COMPOSE_PROFILES", "").split(",")))
    for name, raw in document["services"].items():
        where = f"{file}: services.{name}"
        raw = _interpolate_tree(raw, variables, where)
        if raw.get("profiles") and "*" not in active and not active & set(raw["profiles"]):
            continue   # a service in a profile starts only when that profile is active (compose spec)
        depends = raw.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: "service_started" for d in depends}
        else:
            depends = {d: (c or {}).get("condition", "service_started") for d, c in depends.items()}
        labels = raw.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(str(l).split("=", 1) if "=" in str(l) else (str(l), "") for l in labels)
        services[name] = Service(
            name=name,
            image=raw.get("image", ""),
            build=raw.get("build") if isinstance(raw.get("build"), dict) else ({"context": raw["build"]} if raw.get("build") else None),
            command=_as_list(raw.get("command"), f"{where}.command"),
            entrypoint=_as_list(raw.get("entrypoint"), f"{where}.entrypoint"),
            environment=_environment(raw.get("environment"), f"{where}.environment"),
            volumes=_volumes(raw.get("volumes"), root, declared, where),
            ports=_ports(raw.get("ports"), where),
            healthcheck=Healthcheck.parse(raw.get("healthcheck"), where),
            depends_on=depends,
            restart=raw.get("restart", "no"),
            mem_limit=parse_bytes(raw["mem_limit"]) if raw.get("mem_limit") else None,
            labels={str(k): str(v) for k, v in labels.items()},
            pull_policy=raw.get("pull_policy"),
            raw=raw,
        )
    return Project(project_name(root, variables), root, services, sorted(declared), variables)
