"""What runs for each image on this machine: the real program wherever one exists here, a
validating stand-in (`stand_ins/`) where none does.

| image | here |
|---|---|
| four-signal/* (this repository) | the workspace's build (release, as the image's; `--build debug` to reuse the test build), bound at the image's path |
| prom/prometheus, prom/alertmanager | Debian's `prometheus` and `prometheus-alertmanager` |
| grafana/loki, grafana/tempo | `$LOKI_BIN` / `$TEMPO_BIN` when set, else a recording stand-in |
| grafana/pyroscope, grafana/alloy, grafana/grafana | a stand-in (no build of them runs here) |

A real program runs with the compose command unchanged. A stand-in gets the same argv (it checks
the flags it is given against the image's facts) and listens where the real service would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .compose import ComposeError, Project, Service
from .images import ImageFacts, repository

HERE = Path(__file__).resolve().parent

# Debian's packages, bound at the image's entrypoint path.
DEBIAN = {"prom/prometheus": "prometheus", "prom/alertmanager": "prometheus-alertmanager"}
# The images' other tools, bound where the image has them (a one-shot runs promtool from the
# image's shell: the history backfill).
DEBIAN_TOOLS = {"prom/prometheus": {"/bin/promtool": "promtool"}, "prom/alertmanager": {"/bin/amtool": "amtool"}}
# The variable a contributor sets to run the real program instead of the stand-in.
OPTIONAL_BINARIES = {"grafana/loki": "LOKI_BIN", "grafana/tempo": "TEMPO_BIN"}
STAND_INS = {
    "grafana/loki": "loki",
    "grafana/tempo": "tempo",
    "grafana/pyroscope": "pyroscope",
    "grafana/alloy": "alloy",
    "grafana/grafana": "grafana",
}


@dataclass
class Program:
    kind: str                                 # "real" or "stand-in"
    argv: list[str]                           # what is executed inside the container
    binds: dict[str, str] = field(default_factory=dict)   # container path → host path
    version: str = ""
    why: str = ""                             # for a stand-in: why the real program is not run

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.version})" if self.version else self.kind


def _version(binary: str, flag: str = "--version") -> str:
    try:
        out = subprocess.run([binary, flag], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown version"


def workspace_binaries(root: Path) -> set[str]:
    """The binaries of the Cargo workspace: members with a `src/main.rs`, by package name."""
    import tomllib

    members = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
    names = set()
    for member in members:
        manifest = root / member / "Cargo.toml"
        if (root / member / "src/main.rs").exists() and manifest.exists():
            names.add(tomllib.loads(manifest.read_text())["package"]["name"])
    return names


def program_for(project: Project, service: Service, facts: ImageFacts, python: str,
                build: str = "release") -> Program:
    repo = repository(service.image)
    entrypoint = service.entrypoint or facts.entrypoint
    command = service.command if service.command is not None else ([] if service.entrypoint else facts.cmd)
    argv = [*entrypoint, *command]
    if facts.binaries:
        binds = {}
        for path, name in facts.binaries.items():
            binary = project.root / "target" / build / name
            if not binary.exists():
                flag = "--release " if build == "release" else ""
                raise ComposeError(f"{service.name}: {binary} is missing: run `cargo build {flag}--locked -p {name}` "
                                   "(the image's builder stage builds it with --release)")
            binds[path] = str(binary)
        return Program("real", argv, binds, f"{build} build of this workspace")
    if repo in DEBIAN:
        binary = shutil.which(DEBIAN[repo])
        if binary is None:
            raise ComposeError(f"{service.name}: Debian's {DEBIAN[repo]} is not installed "
                               "(scripts/install-test-tools installs it)")
        binds = {facts.entrypoint[0]: binary}
        for path, tool in DEBIAN_TOOLS.get(repo, {}).items():
            if shutil.which(tool):
                binds[path] = shutil.which(tool)
        if entrypoint[0] not in binds and not facts.has_command(entrypoint[0]):
            raise ComposeError(f"{service.name}: {entrypoint[0]} is not a command of {service.image}")
        # A shell entrypoint (the image's busybox sh) runs this machine's POSIX sh.
        return Program("real", argv, binds, _version(binary))
    variable = OPTIONAL_BINARIES.get(repo)
    if variable and os.environ.get(variable):
        binary = str(Path(os.environ[variable]).resolve())
        if not os.access(binary, os.X_OK):
            raise ComposeError(f"{variable}={os.environ[variable]} is not an executable file")
        return Program("real", argv, {entrypoint[0]: binary}, _version(binary, "-version"))
    if repo in STAND_INS:
        script = HERE / "stand_ins" / f"{STAND_INS[repo]}.py"
        why = f"{variable} not set" if variable else "no build of it runs here"
        return Program("stand-in", [python, str(script), *argv], {}, "", why)
    raise ComposeError(f"{service.name}: nothing runs image {service.image} here")


def default_python() -> str:
    return sys.executable
