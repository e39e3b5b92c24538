"""Ports for the programs a check or benchmark starts: free now, and outside the kernel's
ephemeral range, so that nothing on the machine takes them before the program binds them.

The usual trick (bind port 0, read the port, close the socket, hand the number on) returns a port
from the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 on Debian), the range
every outgoing connection on the machine draws its local port from, and every other `bind(0)`.
Between closing the probe and the program's own bind, anything that connects over loopback may
be given that port: CI failed that way ("sample-app-downstream: cannot publish 127.0.0.1:34579 →
8080: Address already in use"; the stack publishes its ports one service at a time, seconds after
they were chosen, while other programs on the shared machine open connections). A port below the
range is never handed out by the kernel; only a program that asks for it by number can take it.
A client that connects to such a port while nothing listens is refused, and never connected to
itself (a socket whose automatic local port equals the port it dials)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Below 10000 sit the well-known ports of the stack's own programs (3000, 3100, 3200, 4040, 4317,
# 9090, 9093, ...), which a developer's machine may be running.
LOWEST = 10000
ATTEMPTS = 200


def ephemeral_range(text: str | None = None) -> tuple[int, int]:
    """The kernel's ephemeral range; Linux's default when the file cannot be read."""
    try:
        low, high = (int(v) for v in (text if text is not None else RANGE_FILE.read_text()).split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def candidates(low: int, high: int) -> list[range]:
    """The port ranges outside [low, high], from LOWEST up."""
    return [r for r in (range(LOWEST, min(low, 65536)), range(max(high + 1, LOWEST), 65536)) if len(r) > 0]


# Ports already returned by this process: a run that picks several before binding any (the stack
# publishes nine, one service at a time) must not be given the same one twice.
GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A port nothing holds on `host` (nor on the wildcard address), outside the ephemeral range,
    picked at random so that runs started at the same time do not pick the same one, and never
    one this process was already given."""
    ranges = candidates(*ephemeral_range())
    size = sum(len(r) for r in ranges)
    if size < 1000:
        raise RuntimeError(f"the ephemeral port range ({RANGE_FILE}: {ephemeral_range()}) leaves only {size} "
                           f"ports from {LOWEST} up that the kernel never hands out; narrow it")
    rng = rng or random.Random()
    for _ in range(ATTEMPTS):
        index = rng.randrange(size)
        for r in ranges:
            if index < len(r):
                port = r[index]
                break
            index -= len(r)
        if port in GIVEN:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))     # no SO_REUSEADDR: a port with connections in TIME_WAIT is skipped too
            except OSError:
                continue
        GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port on {host} outside the ephemeral range after {ATTEMPTS} tries")


def self_test() -> None:
    assert ephemeral_range("32768\t60999\n") == (32768, 60999)
    assert ephemeral_range("garbage") == (32768, 60999)
    assert candidates(32768, 60999) == [range(10000, 32768), range(61000, 65536)]
    assert candidates(1024, 65535) == []
    assert candidates(5000, 9000) == [range(10000, 65536)]
    low, high = ephemeral_range()
    rng = random.Random(7)
    seen = {free_port(rng=rng) for _ in range(50)}
    assert all(not low <= p <= high and p >= LOWEST for p in seen), seen
    assert len(seen) > 40, "random, not one port"
    # A port something holds is never returned, even when the generator offers it first.
    port = free_port()
    ranges = candidates(low, high)
    at = next(i for i, r in enumerate(ranges) if port in r)
    index = sum(len(r) for r in ranges[:at]) + ranges[at].index(port)

    class OfferFirst(random.Random):
        def __init__(self):
            super().__init__(1)
            self.offered = False

        def randrange(self, *args):
            if not self.offered:
                self.offered = True
                return index
            return super().randrange(*args)

    GIVEN.discard(port)
    assert free_port(rng=OfferFirst()) == port, "the offered port is taken while it is free"
    assert free_port(rng=OfferFirst()) != port, "a port already given was given again"
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        GIVEN.discard(port)
        assert free_port(rng=OfferFirst()) != port, "a held port was returned"
    print("ports: self-test passed")


if __name__ == "__main__":
    self_test()
