"""One service's container: its file system spec (image files, compose volumes, the program's
binary at the image's path), its environment (image `ENV`, then compose `environment`), its
user, its memory cgroup (compose `mem_limit`, enforced: exceeding it is an OOM kill, as under
Docker), and how to start it, run a command inside it (healthchecks) and stop it (SIGTERM, then
SIGKILL after the grace period, as `docker stop`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import loopback
from .compose import Project, Service
from .images import ImageFacts
from .network import Network
from .programs import Program

HERE = Path(__file__).resolve().parent
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_GRACE = 10.0   # compose's default stop_grace_period


class MemoryCgroup:
    """A cgroup-v1 memory controller group under `<run prefix>/` (the stack's `mem_limit`s)."""

    BASE = Path("/sys/fs/cgroup/memory")

    def __init__(self, run: str, service: str, limit: int | None):
        self.path = self.BASE / run / service
        self.limit = limit

    @classmethod
    def available(cls) -> bool:
        return cls.BASE.joinpath("memory.limit_in_bytes").exists()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.limit:
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit))

    def oom_kills(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def usage_bytes(self) -> int:
        return int((self.path / "memory.usage_in_bytes").read_text())

    def working_set_bytes(self) -> int | None:
        """What `docker stats` shows: usage less the inactive page cache the kernel reclaims
        first under the limit (a file-writing backend's cache grows to any limit and says
        nothing about its need)."""
        try:
            stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
            return max(0, self.usage_bytes() - int(stat.get("total_inactive_file", 0)))
        except (OSError, ValueError):
            return None

    def peak_bytes(self) -> int | None:
        """The most the group ever held (page cache included, as Docker's limit counts it)."""
        try:
            return int((self.path / "memory.max_usage_in_bytes").read_text())
        except OSError:
            return None

    def remove(self) -> None:
        if not self.path.exists():
            return
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)

    @classmethod
    def remove_all(cls, run: str) -> None:
        root = cls.BASE / run
        if root.exists():
            for child in root.iterdir():
                if child.is_dir():
                    MemoryCgroup(run, child.name, None).remove()
            try:
                root.rmdir()
            except OSError:
                pass


class Container:
    def __init__(self, project: Project, service: Service, facts: ImageFacts, program: Program,
                 network: Network, state: Path, extra_args: list[str]):
        self.project, self.service, self.facts, self.program = project, service, facts, program
        self.network, self.state = network, state
        self.hostname = secrets.token_hex(6)      # Docker's short container id
        self.argv = [*program.argv, *extra_args]
        self.loopback = network.mode == "loopback"
        if self.loopback:
            address = network.address(service.name)
            self.argv = [loopback.rewrite(a, address) for a in self.argv]
            self.argv += [flag.format(ip=address) for flag in facts.loopback_flags]
        self.dir = state / "containers" / service.name
        self.cgroup = MemoryCgroup(network.run.prefix, service.name, service.mem_limit) \
            if MemoryCgroup.available() else None
        self.warnings: list[str] = []
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, **self.facts.env, **self.service.environment,
               "HOSTNAME": self.hostname, "HOME": "/"}
        if self.program.kind == "stand-in":
            # A stand-in's view of what a real one would learn from Docker or its own config.
            env.update({"STACK_RUNNER_SERVICE": self.service.name, "STACK_RUNNER_STATE": str(self.state),
                        "STACK_RUNNER_PROJECT": self.project.name, "PYTHONDONTWRITEBYTECODE": "1"})
        if self.loopback:
            address = self.network.address(self.service.name)
            env = {k: loopback.rewrite(v, address) for k, v in env.items()}
            env["STACK_RUNNER_BIND"] = address
        return env

    def volume_dir(self, name: str) -> Path:
        return self.state / "volumes" / f"{self.project.name}_{name}"

    def binds(self) -> list[dict]:
        binds = [{"source": str(self.project.root), "target": str(self.project.root), "read_only": True}]
        binds += [{"source": host, "target": path, "read_only": True} for path, host in self.program.binds.items()]
        binds += [{"source": host, "target": path, "read_only": True} for path, host in self.facts.files.items()]
        for volume in self.service.volumes:
            source = volume.source
            if volume.named:
                directory = self.volume_dir(volume.source)
                if not directory.exists():
                    directory.mkdir(parents=True)
                    uid, gid = self.facts.owned_paths.get(volume.target, (0, 0))
                    os.chown(directory, uid, gid)
                source = str(directory)
            elif not Path(source).exists():
                # Compose would create an empty directory at the missing host path; here the
                # container gets an empty directory and the run says so.
                empty = self.dir / "missing" / volume.target.strip("/").replace("/", "_")
                empty.mkdir(parents=True, exist_ok=True)
                self.warnings.append(f"bind source {source} does not exist on this machine: "
                                     f"{volume.target} is an empty directory")
                source = str(empty)
            if self.loopback and volume.read_only and Path(source).is_file():
                copy = loopback.rewrite_file(Path(source), self.dir / "rewritten" / volume.target.strip("/"),
                                             self.network.address(self.service.name))
                if copy:
                    self.warnings.append(f"loopback fallback: {volume.target} is a copy with this service's "
                                         "address in place of 0.0.0.0 / 127.0.0.1 / localhost")
                    source = str(copy)
            binds.append({"source": source, "target": volume.target, "read_only": volume.read_only})
        # Parents before children, as Docker mounts them (a volume on /var/lib/grafana must not
        # hide a bind on /var/lib/grafana/dashboards).
        return sorted(binds, key=lambda b: len(Path(b["target"]).parts))

    def start(self, stdout, stderr) -> subprocess.Popen:
        rootfs = self.dir / "rootfs"
        for part in ("upper", "work", "merged"):
            (rootfs / part).mkdir(parents=True, exist_ok=True)
        if self.cgroup:
            self.cgroup.create()
        spec = {
            "merged": str(rootfs / "merged"), "upper": str(rootfs / "upper"), "work": str(rootfs / "work"),
            "binds": self.binds(), "hosts": self.network.hosts_file(self.service.name, self.hostname),
            "hostname": self.hostname, **self.user(),
            "workdir": self.facts.workdir, "env": self.environment(), "argv": self.argv,
        }
        spec_path = self.dir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        namespace = self.network.namespace(self.service.name)
        enter = [sys.executable, str(HERE / "enter.py"), str(spec_path)]
        argv = ["unshare", "-m", "-u", "--propagation", "private", *enter]
        if namespace:
            argv = ["ip", "netns", "exec", namespace, *argv]
        if self.cgroup:
            # Joined before `ip netns exec`, which mounts a sysfs without the cgroup hierarchy;
            # everything the container runs inherits the group.
            argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup.path / "cgroup.procs"), *argv]
        self.process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        return self.process

    def user(self) -> dict:
        """The image's user; a stand-in runs as root (its interpreter lives under /root here,
        and what it writes is its own: it has no volume permissions to get wrong)."""
        if self.program.kind == "stand-in":
            return {"uid": 0, "gid": 0}
        return {"uid": self.facts.uid, "gid": self.facts.gid}

    def exec(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """Runs `argv` inside the running container as its user (`docker exec`); `None` on timeout."""
        if not self.process or self.process.poll() is not None:
            return 1, "container is not running"
        if self.loopback:
            argv = [loopback.rewrite(a, self.network.address(self.service.name)) for a in argv]
        command = ["nsenter", "-t", str(self.process.pid), "-m", "-u", *([] if self.loopback else ["-n"]), "-r", "-w",
                   "-S", str(self.user()["uid"]), "-G", str(self.user()["gid"]), "--", *argv]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env=self.environment())
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s"
        return done.returncode, (done.stdout + done.stderr).strip()

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        if not self.process:
            return None
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        return self.process.returncode
