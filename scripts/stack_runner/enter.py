#!/usr/bin/env python3
"""Becomes one container, then executes its program: the last step of starting a service.

Run by the supervisor as `ip netns exec <ns> unshare -m -u --propagation private python3 enter.py
SPEC.json` — so it is already in the service's network namespace and in new mount and UTS
namespaces. It then builds the container's file system as an overlay of the host's root (every
write lands in the container's own upper directory, never on the host), binds the image's files
and the compose volumes at their container paths (read-only where compose says `:ro`), writes
`/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (the supervisor has already put it in the
service's memory cgroup), sets the host name, changes root, drops to the image's user and executes the
program with the image's and the service's environment. Nothing here outlives the container:
its mounts vanish with its mount namespace.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"enter: {' '.join(argv)}: {result.stderr.strip()}")


def ensure_target(merged: Path, target: str, like: Path) -> Path:
    path = merged / target.lstrip("/")
    if like.is_dir():
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch()
    return path


def bind(merged: Path, source: str, target: str, read_only: bool) -> None:
    source_path = Path(source)
    if not source_path.exists():
        raise SystemExit(f"enter: bind source {source} does not exist")
    path = ensure_target(merged, target, source_path)
    run("mount", "--rbind", source, str(path))
    if read_only:
        run("mount", "-o", "remount,bind,ro", str(path))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    merged = Path(spec["merged"])
    run("mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir=/,upperdir={spec['upper']},workdir={spec['work']}", str(merged))
    for system in ("/dev", "/proc", "/sys"):
        run("mount", "--rbind", system, str(merged / system.lstrip("/")))
    for item in spec["binds"]:
        bind(merged, item["source"], item["target"], item["read_only"])
    etc = merged / "etc"
    (etc / "hosts").write_text(spec["hosts"])
    (etc / "hostname").write_text(spec["hostname"] + "\n")
    # Unknown names fail fast, as they do in a compose network; nothing is asked of the host's DNS.
    (etc / "resolv.conf").write_text("nameserver 127.0.0.11\noptions timeout:1 attempts:1\n")
    socket.sethostname(spec["hostname"])
    os.chroot(merged)
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as error:
        # What Docker says when an entrypoint is missing: the container exits 127.
        print(f"exec {argv[0]}: {error.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1])
