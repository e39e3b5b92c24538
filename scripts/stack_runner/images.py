"""What each image is: its entrypoint, default command, user, working directory, environment,
files, and the commands that exist inside it (for healthchecks).

Upstream images are described in `docs/contracts.md` ("Images"), each fact taken from the pinned
tag's Dockerfile. Images this repository builds are read from their own Dockerfile (the stage
compose's `build.target` names, or the last one): `ENTRYPOINT`, `CMD`, `USER`, `WORKDIR`, `ENV`,
and `COPY` — from the build context (data files, bound read-only at their image path) or from a
builder stage (a workspace binary, found by name in `target/release`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .compose import ComposeError, Project, Service

# Users of the base images our Dockerfiles use (gcr.io/distroless: nonroot is 65532).
KNOWN_USERS = {"root": 0, "nonroot": 65532, "nobody": 65534}


@dataclass
class ImageFacts:
    image: str
    entrypoint: list[str]
    cmd: list[str]
    uid: int
    gid: int
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    owned_paths: dict[str, tuple[int, int]] = field(default_factory=dict)
    commands: set[str] = field(default_factory=set)
    subcommands: dict[str, list[str]] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    # the loopback fallback's flags binding a wildcard default listener to `{ip}`
    loopback_flags: list[str] = field(default_factory=list)
    # container path → host path: data files COPY'd from the build context
    files: dict[str, str] = field(default_factory=dict)
    # container path → workspace binary name (COPY --from=<builder stage>)
    binaries: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def has_command(self, program: str) -> bool:
        return program in self.commands or Path(program).name in {Path(c).name for c in self.commands if "/" not in c}


def repository(image: str) -> str:
    """`grafana/loki:3.7.6` → `grafana/loki` (a registry port is not a tag)."""
    name = image.rsplit("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def contract(root: Path) -> dict:
    """The merged YAML blocks of `docs/contracts.md`, read as the other checks read them."""
    import sys

    sys.path.insert(0, str(root / "scripts/checks"))
    import contract_doc

    return contract_doc.values()


def _user(text: str) -> tuple[int, int]:
    user, _, group = str(text).partition(":")
    uid = KNOWN_USERS[user] if user in KNOWN_USERS else int(user)
    gid = (KNOWN_USERS[group] if group in KNOWN_USERS else int(group)) if group else uid
    return uid, gid


def upstream_facts(root: Path, image: str) -> ImageFacts:
    table = contract(root).get("images", {})
    repo = repository(image)
    if repo not in table:
        raise ComposeError(f"image {image}: not described in docs/contracts.md (Images)")
    entry = table[repo]
    uid, gid = _user(entry["user"])
    return ImageFacts(
        image=image,
        entrypoint=[entry["entrypoint"]],
        cmd=list(entry.get("cmd", [])),
        uid=uid,
        gid=gid,
        workdir=entry.get("workdir", "/"),
        owned_paths={p: _user(o) for p, o in (entry.get("owned_paths") or {}).items()},
        commands=set(entry.get("commands", [])) | {entry["entrypoint"]},
        subcommands=entry.get("subcommands") or {},
        flags=entry.get("flags") or {},
        loopback_flags=entry.get("loopback_flags") or [],
        source=entry.get("source", ""),
    )


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        current = ""
    return lines


def _exec_form(text: str) -> list[str]:
    return json.loads(text) if text.startswith("[") else ["/bin/sh", "-c", text]


def _env_pairs(text: str) -> dict[str, str]:
    if "=" not in text.split()[0]:
        key, _, value = text.partition(" ")
        return {key: value.strip()}
    return dict(pair.split("=", 1) for pair in shlex.split(text))


def dockerfile_facts(project: Project, service: Service, binaries: set[str]) -> ImageFacts:
    build = service.build or {}
    context = (project.root / build.get("context", ".")).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, args in _instructions(dockerfile):
        if keyword == "FROM":
            name = args.split()[-1] if " as " in args.lower() else ""
            stages.append((name.lower(), []))
        elif stages:
            stages[-1][1].append((keyword, args))
    target = build.get("target")
    chosen = next((s for s in stages if s[0] == target), None) if target else stages[-1]
    if chosen is None:
        raise ComposeError(f"{service.name}: build target {target!r} is not a stage of {dockerfile}")
    facts = ImageFacts(image=service.image, entrypoint=[], cmd=[], uid=0, gid=0, workdir="/",
                       source=str(dockerfile.relative_to(project.root)))
    for keyword, args in chosen[1]:
        if keyword == "ENTRYPOINT":
            facts.entrypoint = _exec_form(args)
        elif keyword == "CMD":
            facts.cmd = _exec_form(args)
        elif keyword == "USER":
            facts.uid, facts.gid = _user(args)
        elif keyword == "WORKDIR":
            facts.workdir = args
        elif keyword == "ENV":
            facts.env.update(_env_pairs(args))
        elif keyword == "COPY":
            words = shlex.split(args)
            options = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            *sources, destination = paths
            from_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
            chown = next((o.split("=", 1)[1] for o in options if o.startswith("--chown=")), None)
            if chown and not from_stage:
                # A directory the image owns for a volume (Docker copies its owner onto a new
                # named volume mounted there): no bind, the volume is what is mounted.
                facts.owned_paths[destination] = _user(chown)
                continue
            for source in sources:
                if from_stage:
                    name = Path(source).name
                    if name not in binaries:
                        raise ComposeError(f"{dockerfile}: COPY --from={from_stage} {source}: "
                                           f"{name} is not a binary of this workspace")
                    facts.binaries[destination] = name
                    facts.commands.add(destination)
                else:
                    facts.files[destination] = str((context / source).resolve())
    if not facts.entrypoint:
        raise ComposeError(f"{dockerfile}: the {target or 'final'} stage has no ENTRYPOINT")
    return facts


def facts_for(project: Project, service: Service, binaries: set[str]) -> ImageFacts:
    """An image built here is read from its Dockerfile — also for a service that only names the
    image another service builds (compose runs the image the build produced)."""
    builder = service if service.build else next(
        (s for s in project.services.values() if s.build and s.image == service.image), None)
    if builder is not None:
        return dockerfile_facts(project, builder, binaries)
    return upstream_facts(project.root, service.image)
