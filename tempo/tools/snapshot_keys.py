#!/usr/bin/env python3
"""Regenerates tempo/config-keys.lock.yaml: every key Tempo 3.0.3's configuration file accepts,
and the keys it accepts but never uses, read from the pinned Tempo source.

The check (scripts/checks/contracts.py) runs where no Tempo source or binary may be present: it
reads this list to reject a key tempo/tempo.yaml has that Tempo does not (Tempo fails at start
on one: cmd/tempo/main.go:185 reads the file with yaml.UnmarshalStrict) and a key Tempo accepts
but ignores (a setting that looks like it does something and does nothing). Where TEMPO_BIN
names a binary, `tempo -config.file=tempo/tempo.yaml -config.verify=true` checks it too.

    python3 tempo/tools/snapshot_keys.py --git-dir /path/to/tempo.git   # a clone with tag v3.0.3

Keys come from the configuration manifest (docs/sources/tempo/configuration/manifest.md), which
upstream generates from the config structs with their defaults (pkg/docsgen/generate_manifest.go).
It leaves out `omitempty` fields whose default is empty; OMITTED names the ones this project
uses, each checked here against its struct tag at the tag. UNUSED names keys Tempo accepts and
never reads, with the source lines that show it; each line is checked to still say so.

Tree format: a key is `leaf` (any value), `open` (a map whose keys are free, e.g. receivers) or a
mapping of its own keys.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "tempo/config-keys.lock.yaml"
TAG = "v3.0.3"
MANIFEST = "docs/sources/tempo/configuration/manifest.md"

# Keys the manifest leaves out (omitempty, empty default): dotted path → (file, kind). The file
# must declare the last part of the path with `,omitempty` in its yaml tag.
OMITTED = {
    "stream_over_http_enabled": ("cmd/tempo/app/config.go", "leaf"),
    "metrics_generator.registry.external_labels": ("modules/generator/registry/config.go", "open"),
    "metrics_generator.storage.remote_write": ("modules/generator/storage/config.go", "leaf"),
    "overrides.defaults.metrics_generator.processors": ("modules/overrides/config.go", "leaf"),
}

# Keys Tempo accepts and never uses: why, and (file, line, text the line must contain) that show
# it; `unread` is a pattern no non-test Go file may match outside those lines (what would read it).
UNUSED = {
    "storage.trace.wal": {
        "why": "Tempo 3 writes its WAL under live_store.wal (default path /var/tempo/live-store/traces); "
               "storage.trace.wal only has its directories created at start, and nothing reads that WAL",
        "evidence": [
            ("modules/livestore/config.go", 32, 'yaml:"wal"'),
            ("modules/livestore/config.go", 138, "/var/tempo/live-store/traces"),
            ("tempodb/tempodb.go", 235, "wal.New("),
            ("tempodb/wal/wal.go", 53, "os.MkdirAll("),
            ("tempodb/tempodb.go", 302, "WAL() *wal.WAL"),
        ],
        "unread": r"\.WAL\(\)",
    },
    "metrics_generator_client": {
        "why": "deprecated, kept for one release so that Tempo 2 configs still load; nothing reads it",
        "evidence": [("cmd/tempo/app/config.go", 57, "Deprecated")],
        "unread": r"MetricsGeneratorClient",
    },
}


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout


def tree(node) -> object:
    """The key tree of a manifest value: nested blocks, `open` for empty maps, `leaf` otherwise."""
    if isinstance(node, dict):
        return {str(k): tree(v) for k, v in node.items()} if node else "open"
    return "leaf"


def add(keys: dict, path: str, kind: str) -> None:
    *parents, last = path.split(".")
    node = keys
    for part in parents:
        node = node[part]
        if not isinstance(node, dict):
            sys.exit(f"OMITTED {path}: {part} is not a block in the manifest")
    if last in node:
        sys.exit(f"OMITTED {path}: the manifest already has it; drop it from OMITTED")
    node[last] = kind


def line_of(git_dir: str, path: str, number: int) -> str:
    lines = git(git_dir, "show", f"{TAG}:{path}").splitlines()
    return lines[number - 1] if number <= len(lines) else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", required=True, help="a Tempo git directory that has the tag " + TAG)
    args = parser.parse_args()
    commit = git(args.git_dir, "rev-parse", f"{TAG}^{{commit}}").strip()
    text = git(args.git_dir, "show", f"{TAG}:{MANIFEST}")
    body = re.search(r"## Complete configuration\n\n```yaml\n(.*?)```", text, re.S).group(1)
    keys = tree(yaml.safe_load(body))
    omitted = {}
    for path, (source, kind) in OMITTED.items():
        tag = re.compile(rf'yaml:"{re.escape(path.rsplit(".", 1)[-1])},omitempty')
        found = [i + 1 for i, l in enumerate(git(args.git_dir, "show", f"{TAG}:{source}").splitlines()) if tag.search(l)]
        if not found:
            sys.exit(f"OMITTED {path}: no omitempty field of that name in {source} at {TAG}")
        add(keys, path, kind)
        omitted[path] = f"{source}:{found[0]}"
    unused = {}
    for path, spec in UNUSED.items():
        for source, number, needle in spec["evidence"]:
            if needle not in line_of(args.git_dir, source, number):
                sys.exit(f"UNUSED {path}: {source}:{number} no longer contains {needle!r} at {TAG}")
        grep = subprocess.run(["git", "--git-dir", args.git_dir, "grep", "-n", "-E", spec["unread"], TAG, "--", "*.go",
                               ":!*_test.go"], capture_output=True, text=True)
        if grep.returncode not in (0, 1):   # 1: no match
            sys.exit(f"git grep failed: {grep.stderr}")
        readers = grep.stdout
        readers = [r for r in readers.splitlines() if not any(f"{s}:{n}:" in r for s, n, _ in spec["evidence"])]
        if readers:
            sys.exit(f"UNUSED {path}: read by {readers[:3]}")
        unused[path] = {"why": spec["why"], "evidence": [f"{s}:{n}" for s, n, _ in spec["evidence"]]}
    header = (f"# Generated by tempo/tools/snapshot_keys.py from Tempo {TAG}'s configuration manifest: do not\n"
              "# edit. `keys`: every key tempo.yaml may have (leaf, open map, or block); `unused`: keys\n"
              "# Tempo accepts and never uses, with the source lines that show it.\n")
    body = {"source": {"repo": "grafana/tempo", "tag": TAG, "commit": commit, "manifest": MANIFEST},
            "omitted_from_manifest": omitted, "unused": unused, "keys": keys}
    LOCK.write_text(header + yaml.safe_dump(body, sort_keys=False, width=200))
    print(f"{LOCK.relative_to(ROOT)}: {TAG} ({commit[:12]}), {len(omitted)} omitted keys added, {len(unused)} unused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
