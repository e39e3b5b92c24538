"""The stand-ins' own verdicts: no stand-in rejected anything it received (a malformed push,
span, log stream, or a query `verify` sent). That profiles arrive, decode and carry the
contract's profile types is verify's to prove (its `profiles.*` checks, through Pyroscope's
query API), once."""

from __future__ import annotations

from .base import Stack, get_json

STAND_IN_PORTS = {"pyroscope": 4040, "alloy": 12345, "grafana": 3000, "loki": 3100, "tempo": 3200}


def check(stack: Stack) -> None:
    print("stand-ins: none rejected anything it received")
    for name, port in STAND_IN_PORTS.items():
        if stack.service(name)["program"] != "stand-in":
            continue
        problems = get_json(f"{stack.url(name, port)}/stand-in/problems")
        stack.ledger.check(not problems, f"the {name} stand-in rejected nothing it received ({problems[:2]})")
