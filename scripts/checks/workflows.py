#!/usr/bin/env python3
"""Static checks of the GitHub Actions workflows (.github/workflows/*.yml), which no runner here
can execute:

- GitHub's workflow schema (check-jsonschema's vendored `github-workflows`): keys, types, events;
- zizmor's audits, offline: every action pinned to a commit, no credentials persisted in the
  checkout, no template injection, no excessive permissions;
- release.yml against the project: it builds exactly the images docs/contracts.md lists as
  built here (its `built_here` targets), for linux/amd64 and linux/arm64, on a version tag, and
  pushes to the registry .env names.

`--self-test` breaks a copy of release.yml in each of those ways and fails unless each is caught.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts/checks"))
import contract_doc  # noqa: E402

BIN = Path(sys.executable).parent
PLATFORMS = {"linux/amd64", "linux/arm64"}


def schema_problems(path: Path) -> list[str]:
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)
    return [] if done.returncode == 0 else [f"{path.name}: GitHub's workflow schema: {done.stdout.strip()[-400:]}"]


def zizmor_problems(path: Path) -> list[str]:
    done = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", "--format", "plain", str(path)],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return []
    found = [line for line in done.stdout.splitlines() if re.match(r"^(error|warning|help|note)\[", line)]
    return [f"{path.name}: zizmor: {'; '.join(found[:5]) or done.stdout.strip()[-400:] or done.stderr.strip()[-400:]}"]


def release_problems(path: Path, root: Path) -> list[str]:
    workflow = yaml.safe_load(path.read_text())
    problems = []
    on = workflow.get(True, workflow.get("on")) or {}  # YAML 1.1 reads the key `on` as True
    tags = (on.get("push") or {}).get("tags") if isinstance(on, dict) else None
    if not tags or not all(str(t).startswith("v") for t in tags):
        problems.append(f"{path.name}: must run on version tags (on.push.tags: [\"v*.*.*\"]), not {on!r}")
    built_here = set(contract_doc.values()["built_here"].values())
    matrices = [job.get("strategy", {}).get("matrix", {}) for job in workflow.get("jobs", {}).values()]
    build = next((m for m in matrices if "platform" in m), None)
    if build is None:
        problems.append(f"{path.name}: no job builds per platform (a matrix with `platform`)")
    else:
        if set(build.get("target", [])) != built_here:
            problems.append(f"{path.name}: builds {sorted(build.get('target', []))}, docs/contracts.md lists "
                            f"{sorted(built_here)} as built here")
        if set(build.get("platform", [])) != PLATFORMS:
            problems.append(f"{path.name}: platforms {sorted(build.get('platform', []))}, not {sorted(PLATFORMS)}")
    text = path.read_text()
    env = dict(line.split("=", 1) for line in (root / ".env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    registry = workflow.get("env", {}).get("REGISTRY")
    for variable in contract_doc.values()["built_here"]:
        if not env.get(variable, "").startswith(f"{registry}/"):
            problems.append(f".env: {variable}={env.get(variable)!r} is not in the registry {path.name} pushes to ({registry})")
        if variable not in text:
            problems.append(f"{path.name}: does not compare {variable} in .env with the tag it releases")
    return problems


def check(root: Path) -> list[str]:
    problems = []
    workflows = sorted((root / ".github/workflows").glob("*.yml"))
    if not any(w.name == "release.yml" for w in workflows):
        return [".github/workflows/release.yml is missing"]
    for path in workflows:
        problems += schema_problems(path) + zizmor_problems(path)
    return problems + release_problems(root / ".github/workflows/release.yml", root)


def self_test() -> None:
    release = (ROOT / ".github/workflows/release.yml").read_text()
    mutations = {
        "an action pinned to a tag, not a commit": ("docker/login-action@4907a6ddec9925e35a0a9e82d7399ccc52663121", "docker/login-action@v4"),
        "a misspelt key": ("    runs-on: ${{ matrix.runner }}", "    run-on: ${{ matrix.runner }}"),
        "credentials left in the checkout": ("        with:\n          persist-credentials: false\n", ""),
        "one platform only": ("        platform: [linux/amd64, linux/arm64]", "        platform: [linux/amd64]"),
        "an image the project does not build": ("        target: [sample-app, load-gen]", "        target: [sample-app, loadgen]"),
    }
    for what, (old, new) in mutations.items():
        assert old in release, f"self-test: {old!r} is no longer in release.yml"
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp)
            (copy / ".github/workflows").mkdir(parents=True)
            shutil.copy(ROOT / ".env", copy / ".env")
            (copy / ".github/workflows/release.yml").write_text(release.replace(old, new, 1))
            if not check(copy):
                sys.exit(f"workflows self-test: {what} was not caught")
    print(f"workflows self-test: {len(mutations)} broken copies, each caught")


def main() -> None:
    if "--self-test" in sys.argv:
        self_test()
        return
    problems = check(ROOT)
    for problem in problems:
        print(f"workflow problem: {problem}")
    count = len(list((ROOT / ".github/workflows").glob("*.yml")))
    print(f"workflows: {count} checked (schema, zizmor, release targets and platforms); {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
