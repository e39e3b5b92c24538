"""Profiles and the stand-ins' own verdicts: both services push profiles that decode as pprof,
labelled with their `service_name`, of the profile types docs/contracts.md names; and no
stand-in rejected anything it received (a malformed push, span, log stream)."""

from __future__ import annotations

from ..images import contract
from .base import Stack, get_json, wait_for

STAND_IN_PORTS = {"pyroscope": 4040, "alloy": 12345, "grafana": 3000, "loki": 3100, "tempo": 3200}


def expected_profile_types(stack: Stack) -> set[str]:
    return set(contract(stack.root)["pyroscope"]["profile_types"].values())


def check(stack: Stack) -> None:
    print("profiles: pushed as pprof by both services, with their service_name and the contract's profile types")
    url = stack.url("pyroscope", 4040)
    expected = expected_profile_types(stack)
    for service in ("sample-app", "sample-app-downstream"):
        pushes = wait_for(f"a profile push from {service}",
                          lambda: get_json(f"{url}/stand-in/pushes", service_name=service), timeout=60)
        types = {t for p in pushes for t in p["profile_types"]}
        stack.ledger.check(expected <= types, f"{service}: {len(pushes)} pushes decode as pprof, profile types "
                                              f"{sorted(types)} include {sorted(expected)}")
    for name, port in STAND_IN_PORTS.items():
        if stack.service(name)["program"] != "stand-in":
            continue
        problems = get_json(f"{stack.url(name, port)}/stand-in/problems")
        stack.ledger.check(not problems, f"the {name} stand-in rejected nothing it received ({problems[:2]})")
