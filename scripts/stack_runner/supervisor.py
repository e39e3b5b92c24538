"""The long-running part of `scripts/stack.py up`: what the Docker engine does for compose.

It creates the network, starts every service in dependency order — waiting for
`service_healthy` / `service_started` as `depends_on` says —, writes each container's stdout and
stderr as Docker's json-file driver would (`logs/<service>.log`), runs the healthchecks,
restarts services by their `restart` policy (Docker's backoff: 100 ms doubling to 1 min),
notices OOM kills, forwards the published ports, and keeps `state.json` current for the other
commands. On SIGTERM or SIGINT it stops everything in reverse dependency order and removes
every namespace, link, cgroup and container file system it made.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import health
from .compose import ComposeError, Project
from .containers import Container, MemoryCgroup
from .network import Network
from .publish import Publisher

DEPENDENCY_DEADLINE = 300.0
# A one-shot is waited for until it ends (compose sets no bound): the history backfill took 122 s
# alone and 218 s beside the other services' start on this 2-core machine; 900 s bounds a stuck one.
COMPLETION_DEADLINE = 900.0
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}


@dataclass
class Runtime:
    container: Container
    plan: health.HealthPlan
    status: str = "created"            # created, running, restarting, exited, stopped
    health: str = "none"               # none, starting, healthy, unhealthy
    health_detail: str = ""
    started_at: float = 0.0
    starts: int = 0
    exits: list[dict] = field(default_factory=list)
    failing_streak: int = 0
    oom_kills_seen: int = 0


class Supervisor:
    def __init__(self, project: Project, containers: dict[str, Container], network: Network, state: Path):
        self.project, self.network, self.state = project, network, state
        self.order = project.start_order()
        self.runtimes = {name: Runtime(c, health.plan(c.service.healthcheck, c.facts, c.program))
                         for name, c in containers.items()}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.phase = "starting"
        self.problem = ""
        self.started = time.time()
        self.publisher = Publisher()
        self.start_asked = threading.Event()
        (state / "logs").mkdir(parents=True, exist_ok=True)

    # --- state -------------------------------------------------------------------------------
    def write_state(self) -> None:
        with self.lock:
            services = {}
            for name, rt in self.runtimes.items():
                c = rt.container
                services[name] = {
                    "status": rt.status, "health": rt.health, "health_detail": rt.health_detail,
                    "health_mode": rt.plan.mode, "program": c.program.kind, "version": c.program.version,
                    "why": c.program.why, "address": self.network.address(name), "hostname": c.hostname,
                    "pid": c.process.pid if c.process else None, "starts": rt.starts, "exits": rt.exits,
                    "image": c.service.image, "argv": c.argv, "warnings": c.warnings,
                    "ports": [vars(p) for p in c.service.ports], "log": str(self.log_path(name)),
                }
            document = {"supervisor": os.getpid(), "phase": self.phase, "problem": self.problem, "started": self.started,
                        "project": self.project.name, "network": self.network.mode,
                        "published": self.publisher.published, "services": services}
            # Under the lock, so two threads never write the same temporary file at once (its
            # replace by one used to fail the other's with a traceback in supervisor.log).
            temporary = self.state / "state.json.tmp"
            temporary.write_text(json.dumps(document, indent=1))
            temporary.replace(self.state / "state.json")

    def log_path(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def write_containers(self) -> None:
        """What a Docker client (Alloy's discovery) would learn about the containers."""
        entries = []
        for name, rt in self.runtimes.items():
            labels = {"com.docker.compose.project": self.project.name, "com.docker.compose.service": name,
                      "com.docker.compose.oneoff": "False", "com.docker.compose.container-number": "1",
                      **rt.container.service.labels}
            entries.append({"name": f"/{self.project.name}-{name}-1", "labels": labels,
                            "log": str(self.log_path(name)), "id": rt.container.hostname})
        (self.state / "containers.json").write_text(json.dumps(entries, indent=1))

    # --- logs --------------------------------------------------------------------------------
    def pump(self, name: str, stream, kind: str) -> None:
        path = self.log_path(name)
        with open(path, "a", buffering=1) as out:
            for raw in iter(stream.readline, b""):
                stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
                line = raw.decode("utf-8", "replace")
                out.write(json.dumps({"log": line, "stream": kind, "time": stamp}) + "\n")

    # --- lifecycle ---------------------------------------------------------------------------
    def start_service(self, name: str) -> None:
        rt = self.runtimes[name]
        process = rt.container.start(stdout=-1, stderr=-1)
        rt.starts += 1
        rt.status, rt.started_at = "running", time.monotonic()
        if rt.plan.mode != "none" and rt.health in ("none", "unhealthy"):
            rt.health, rt.failing_streak = "starting", 0
        for stream, kind in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            threading.Thread(target=self.pump, args=(name, stream, kind), daemon=True).start()
        threading.Thread(target=self.watch, args=(name, process), daemon=True).start()
        self.write_state()

    def watch(self, name: str, process) -> None:
        """Waits for the container to exit, records why, and restarts it if its policy says so."""
        code = process.wait()
        rt = self.runtimes[name]
        oom = rt.container.cgroup.oom_kills() if rt.container.cgroup else 0
        rt.exits.append({"code": code, "oom_killed": oom > rt.oom_kills_seen,
                         "after_seconds": round(time.monotonic() - rt.started_at, 1)})
        rt.oom_kills_seen = oom
        rt.status = "exited"
        self.write_state()
        policy = rt.container.service.restart
        stopped_on_purpose = (self.state / "stopped" / name).exists()   # `stack.py stop`, as `docker compose stop`
        if stopped_on_purpose:
            rt.status, rt.health, rt.health_detail = "stopped", "none", ""
            self.write_state()
        if self.stopping.is_set() or stopped_on_purpose or policy not in RESTART_POLICIES \
                or (policy == "on-failure" and code == 0):
            return
        ran = time.monotonic() - rt.started_at
        backoff = 0.1 * 2 ** min(len(rt.exits) - 1, 10) if ran < 10 else 0.1
        rt.status = "restarting"
        self.write_state()
        if not self.stopping.wait(min(backoff, 60.0)):
            self.start_service(name)

    def healthchecks(self, name: str) -> None:
        rt = self.runtimes[name]
        check = rt.container.service.healthcheck
        if rt.plan.problem:
            rt.health, rt.health_detail = "unhealthy", rt.plan.problem
            self.write_state()
            return
        while not self.stopping.wait(check.interval):
            if rt.status != "running":
                continue
            ok, detail = self.probe(name, check)
            in_grace = time.monotonic() - rt.started_at < check.start_period
            if ok:
                rt.health, rt.failing_streak = "healthy", 0
            elif not in_grace:
                rt.failing_streak += 1
                if rt.failing_streak >= check.retries:
                    rt.health = "unhealthy"
            rt.health_detail = detail[-300:]
            self.write_state()

    def probe(self, name: str, check) -> tuple[bool, str]:
        rt = self.runtimes[name]
        if rt.plan.mode == "validated":
            port = next((p.container_port for p in rt.container.service.ports), None)
            if port is None:
                return False, "a validated healthcheck needs a port to ask the stand-in"
            return health.stand_in_ready(self.network.address(name), port, check.timeout)
        code, output = rt.container.exec(check.test, check.timeout)
        return code == 0, f"exit {code}: {output}"

    def wait_for(self, dependency: str, condition: str, dependent: str) -> None:
        bound = COMPLETION_DEADLINE if condition == "service_completed_successfully" else DEPENDENCY_DEADLINE
        deadline = time.monotonic() + bound
        rt = self.runtimes[dependency]
        while not self.stopping.is_set():
            if condition == "service_started" and rt.status in ("running", "exited", "restarting"):
                return
            if condition == "service_healthy":
                if rt.health == "healthy":
                    return
                if rt.health == "unhealthy" or rt.plan.mode == "none":
                    raise ComposeError(f"dependency failed to start: {dependency} is "
                                       f"{'unhealthy' if rt.plan.mode != 'none' else 'without a healthcheck'} "
                                       f"({rt.health_detail}); {dependent} waits for it to be healthy")
            if condition == "service_completed_successfully" and rt.exits:
                if rt.exits[-1]["code"] == 0:
                    return
                raise ComposeError(f"{dependency} exited {rt.exits[-1]['code']}; {dependent} needed it to succeed")
            if time.monotonic() > deadline:
                raise ComposeError(f"{dependent} waited {bound:.0f} s for {dependency} "
                                   f"({condition}); it is {rt.status}/{rt.health}: {rt.health_detail}")
            time.sleep(0.2)

    def up(self) -> None:
        self.network.create()
        self.write_containers()
        for name in self.order:
            rt = self.runtimes[name]
            for dependency, condition in rt.container.service.depends_on.items():
                self.wait_for(dependency, condition, name)
            if self.stopping.is_set():
                return
            self.start_service(name)
            if rt.plan.mode != "none":
                threading.Thread(target=self.healthchecks, args=(name,), daemon=True).start()
            for port in rt.container.service.ports:
                self.publisher.publish(name, port, self.network.address(name))
        self.phase = "running"
        self.write_state()

    def down(self) -> None:
        self.stopping.set()
        self.phase = "stopping"
        self.write_state()
        self.publisher.close()
        for level in reversed(self.levels()):
            threads = [threading.Thread(target=self.runtimes[n].container.stop) for n in level]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        MemoryCgroup.remove_all(self.network.run.prefix)
        Network.destroy(self.network.run)
        self.phase = "down"
        self.write_state()

    def levels(self) -> list[list[str]]:
        depth: dict[str, int] = {}
        for name in self.order:
            deps = self.runtimes[name].container.service.depends_on
            depth[name] = 1 + max((depth[d] for d in deps), default=-1)
        return [[n for n in self.order if depth[n] == level] for level in range(max(depth.values()) + 1)]

    def start_requested(self) -> None:
        """`stack.py start SERVICE` (as `docker compose start`): it removes the service's `stopped`
        mark, leaves a file in `<state>/start/` and sends SIGUSR1; a stopped or exited service
        named there is started again."""
        while not self.stopping.is_set():
            self.start_asked.wait(1.0)     # a signal, or a look once a second for a request left over
            self.start_asked.clear()
            for request in sorted((self.state / "start").glob("*")):
                rt = self.runtimes.get(request.name)
                if rt is None or self.phase != "running":
                    request.unlink(missing_ok=True)
                elif rt.status in ("stopped", "exited"):
                    request.unlink(missing_ok=True)
                    self.start_service(request.name)
                # else: its stop is still being recorded; the request waits for the next look

    def run_forever(self) -> int:
        def stop(signum, frame):
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.start_asked.set())
        threading.Thread(target=self.start_requested, daemon=True).start()
        try:
            self.up()
        except Exception as error:   # the reason goes to state.json for `stack.py up` to print
            self.problem = f"{type(error).__name__}: {error}" if not isinstance(error, ComposeError) else str(error)
            self.phase = "failed"
            self.write_state()
        self.stopping.wait()
        problem = self.problem
        self.down()
        self.problem = problem
        self.write_state()
        return 1 if problem else 0
