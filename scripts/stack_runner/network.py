"""The compose network, without a Docker engine: one network namespace per service, each with
an `eth0` on a private bridge (in a hub namespace of its own), and a `/etc/hosts` in every
container that resolves every service name, as compose's embedded DNS would. So every service
listens on the address and port its config says (`0.0.0.0:8080` twice is fine) and every
hostname in every config resolves.

The host reaches the bridge through one veth pair (`fsr0`, 10.213.0.1): that is how published
ports are forwarded and how the checks talk to services. Traffic never leaves the namespaces
this run created. Everything is removed by `destroy()`, which also cleans up after a run that
crashed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

PREFIX = "fsr"
SUBNET = "10.213.0"
HOST_ADDRESS = f"{SUBNET}.1"
HUB = f"{PREFIX}-net"
HOST_LINK = f"{PREFIX}0"


class NetworkError(Exception):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def namespaces_available() -> str | None:
    """None when network namespaces can be used, else why not."""
    probe = f"{PREFIX}-probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return result.stderr.strip() or "ip netns add failed"
    _ip("netns", "del", probe, check=False)
    return None


def leftovers() -> list[str]:
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(f"{PREFIX}-")]


@dataclass
class Network:
    services: list[str]
    mode: str = "netns"          # or "loopback" (fallback)

    def namespace(self, service: str) -> str | None:
        return f"{PREFIX}-{service}" if self.mode == "netns" else None

    def address(self, service: str) -> str:
        index = self.services.index(service) + 10
        return f"{SUBNET}.{index}" if self.mode == "netns" else f"127.0.1.{index}"

    def hosts_file(self, service: str, hostname: str) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.address(service)}\t{hostname}"]
        lines += [f"{self.address(s)}\t{s}" for s in self.services]
        return "\n".join(lines) + "\n"

    def create(self) -> None:
        if self.mode != "netns":
            return
        stale = leftovers()
        if stale:
            raise NetworkError(f"namespaces of an earlier run still exist ({', '.join(stale)}): "
                               "run `scripts/stack.py down` first")
        _ip("netns", "add", HUB)
        _ip("-n", HUB, "link", "add", "br0", "type", "bridge")
        _ip("-n", HUB, "link", "set", "br0", "up")
        _ip("link", "add", HOST_LINK, "type", "veth", "peer", "name", "up0", "netns", HUB)
        _ip("-n", HUB, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_LINK)
        _ip("link", "set", HOST_LINK, "up")
        for index, service in enumerate(self.services):
            namespace = self.namespace(service)
            peer = f"v{index}"
            _ip("netns", "add", namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _ip("link", "set", peer, "netns", HUB)
            _ip("-n", HUB, "link", "set", peer, "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{self.address(service)}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")

    @staticmethod
    def destroy() -> list[str]:
        """Removes this runner's links and namespaces, including a crashed run's; returns them."""
        removed = []
        if _ip("link", "show", HOST_LINK, check=False).returncode == 0:
            _ip("link", "del", HOST_LINK, check=False)
            removed.append(HOST_LINK)
        for namespace in leftovers():
            _ip("netns", "del", namespace, check=False)
            removed.append(namespace)
        return removed
