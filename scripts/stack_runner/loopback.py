"""The fallback when network namespaces are unavailable: every service shares the host's network
and gets an address of its own on the loopback network (127.213.x.N; all of 127/8 is loopback),
which its compose hostname resolves to (each container still has its own `/etc/hosts`).

That cannot be byte for byte: a service that listens on every address (`0.0.0.0:8080`, or a
program's wildcard default) would collide with the next one on the same port. So the runner
rewrites, for that service only, and says so at start: `0.0.0.0` and `127.0.0.1` (and
`localhost:`) in its environment, command, healthcheck and read-only config files become its
own address, and a program whose default listener is a wildcard gets the flags its image lists
as `loopback_flags` in docs/contracts.md ("Images"). The shipped files are never changed: the
rewritten copies live in the container's directory.
"""

from __future__ import annotations

import re
from pathlib import Path

WILDCARDS = re.compile(r"\b0\.0\.0\.0\b|\b127\.0\.0\.1\b|\blocalhost(?=:)")


def rewrite(text: str, address: str) -> str:
    return WILDCARDS.sub(address, text)


def rewrite_file(source: Path, into: Path, address: str) -> Path | None:
    """A rewritten copy of a config file, or None when it has nothing to rewrite (or is not text)."""
    try:
        text = source.read_text()
    except (UnicodeDecodeError, IsADirectoryError):
        return None
    changed = rewrite(text, address)
    if changed == text:
        return None
    into.parent.mkdir(parents=True, exist_ok=True)
    into.write_text(changed)
    return into
