"""The compose network, without a Docker engine: one network namespace per service, each with
an `eth0` on a private bridge (in a hub namespace of its own), and a `/etc/hosts` in every
container that resolves every service name, as compose's embedded DNS would. So every service
listens on the address and port its config says (`0.0.0.0:8080` twice is fine) and every
hostname in every config resolves.

The host reaches the bridge through one veth pair (`<prefix>0`, `.1` of the run's /24): that is
how published ports are forwarded and how the checks talk to services. Traffic never leaves
the namespaces this run created. A run's names and subnet derive from its state directory
(`RunIdentity`), so two runs with different state directories do not collide. Everything is
removed by `destroy()`, which also cleans up after a run that crashed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ONE_OFF_FIRST = 150     # host numbers of one-off containers: .150 to .249 of the run's /24
ONE_OFF_SLOTS = 100


class NetworkError(Exception):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class RunIdentity:
    """Names and addresses of one run: `fs<3 hex>-<service>` namespaces, 10.213.<n>.0/24."""
    prefix: str
    subnet: str

    @staticmethod
    def of(state: Path) -> "RunIdentity":
        digest = hashlib.sha1(str(state.resolve()).encode()).hexdigest()
        return RunIdentity(f"fs{digest[:3]}", f"10.213.{100 + int(digest[3:7], 16) % 150}")

    @property
    def hub(self) -> str:
        return f"{self.prefix}-net"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}0"

    @property
    def host_address(self) -> str:
        return f"{self.subnet}.1"

    def leftovers(self) -> list[str]:
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        return [line.split()[0] for line in listed if line.startswith(f"{self.prefix}-")]


def namespaces_available() -> str | None:
    """None when network namespaces can be used, else why not."""
    probe = "fsr-probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return result.stderr.strip() or "ip netns add failed"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Network:
    services: list[str]
    run: RunIdentity
    mode: str = "netns"
    # One-off containers (`stack.py run`) on this network: name -> host number. Each has its
    # own slot, so two at once get their own address and link.
    one_offs: dict[str, int] = field(default_factory=dict)

    def namespace(self, service: str) -> str | None:
        return f"{self.run.prefix}-{service}" if self.mode == "netns" else None

    def host_number(self, service: str) -> int:
        return self.one_offs[service] if service in self.one_offs else self.services.index(service) + 10

    def link(self, service: str) -> str:
        """The bridge side of the service's veth pair (in the hub namespace)."""
        return f"v{self.host_number(service)}"

    def address(self, service: str) -> str:
        index = self.host_number(service)
        if self.mode == "netns":
            return f"{self.run.subnet}.{index}"
        return f"127.{self.run.subnet.split('.', 1)[1]}.{index}"   # the loopback fallback

    def hosts_file(self, service: str, hostname: str) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.address(service)}\t{hostname}"]
        lines += [f"{self.address(s)}\t{s}" for s in self.services if s not in self.one_offs]
        return "\n".join(lines) + "\n"

    def create(self) -> None:
        if self.mode != "netns":
            return
        stale = self.run.leftovers()
        if stale:
            raise NetworkError(f"namespaces of an earlier run still exist ({', '.join(stale)}): "
                               "run `scripts/stack.py down` (with the same --state) first")
        hub = self.run.hub
        _ip("netns", "add", hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        _ip("link", "add", self.run.host_link, "type", "veth", "peer", "name", "up0", "netns", hub)
        _ip("-n", hub, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{self.run.host_address}/24", "dev", self.run.host_link)
        _ip("link", "set", self.run.host_link, "up")
        for service in self.services:
            self.attach(service)

    def attach(self, service: str) -> None:
        """One container's namespace on the bridge (also for `stack.py run`'s late containers)."""
        if self.mode != "netns":
            return
        namespace, peer, hub = self.namespace(service), self.link(service), self.run.hub
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", peer, "netns", hub)
        _ip("-n", hub, "link", "set", peer, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{self.address(service)}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")

    def detach(self, service: str) -> None:
        if self.mode != "netns":
            return
        _ip("-n", self.run.hub, "link", "del", self.link(service), check=False)
        _ip("link", "del", self.link(service), check=False)   # an attach that failed half-way
        _ip("netns", "del", self.namespace(service), check=False)

    @staticmethod
    def destroy(run: RunIdentity) -> list[str]:
        """Removes the run's links and namespaces, including a crashed run's; returns them."""
        removed = []
        if _ip("link", "show", run.host_link, check=False).returncode == 0:
            _ip("link", "del", run.host_link, check=False)
            removed.append(run.host_link)
        for namespace in run.leftovers():
            _ip("netns", "del", namespace, check=False)
            removed.append(namespace)
        return removed


class OneOffSlot:
    """A claim on one of the run's one-off addresses, as a file `<state>/one-offs/<slot>` holding
    the claimant's pid (created exclusively; a dead claimant's file is taken over)."""

    def __init__(self, state: Path):
        self.dir = state / "one-offs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.slot = self._claim()

    @property
    def host_number(self) -> int:
        return ONE_OFF_FIRST + self.slot

    def _claim(self) -> int:
        # The pid is written first and the claim made by a hard link, which is atomic and fails
        # when the slot is taken: nobody ever reads a claim without its pid.
        mine = self.dir / f".claim-{os.getpid()}"
        mine.write_text(str(os.getpid()))
        try:
            for slot in range(ONE_OFF_SLOTS):
                path = self.dir / str(slot)
                for _ in range(2):
                    try:
                        os.link(mine, path)
                        return slot
                    except FileExistsError:
                        if _alive(path.read_text().strip()):
                            break
                        path.unlink(missing_ok=True)     # its run ended without releasing it
        finally:
            mine.unlink(missing_ok=True)
        raise NetworkError(f"all {ONE_OFF_SLOTS} one-off container slots are in use")

    def release(self) -> None:
        (self.dir / str(self.slot)).unlink(missing_ok=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
