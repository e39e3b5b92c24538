#!/usr/bin/env python3
"""Runs `docker-compose.yml` on a machine without a Docker engine, the way compose runs it.

    scripts/stack.py up [--time-scale X]   start the stack (root: it makes network namespaces)
    scripts/stack.py status                every service: real or stand-in, state, health
    scripts/stack.py logs [-f] [--tail N] SERVICE   a container's output (the json-file log)
    scripts/stack.py run SERVICE [ARGS]    a one-off container (`docker compose run --rm`)
    scripts/stack.py stop SERVICE          stop one service, no restart (`docker compose stop`)
    scripts/stack.py start SERVICE         start a stopped service again (`docker compose start`)
    scripts/stack.py restart SERVICE       stop, then start (`docker compose restart`)
    scripts/stack.py check                 the checks of the whole stack (scripts/stack_runner/checks)
    scripts/stack.py down [-v]             stop everything, remove namespaces (and volumes with -v)
    scripts/stack.py test                  up + check + down, with free host ports (scripts/test)

Every service runs with its own compose `command`, `environment`, volumes (at their container
paths, in its own mount namespace), ports, healthcheck, `depends_on`, `restart` and `mem_limit`,
in its own network namespace where every compose hostname resolves. Real programs where they
exist here (this workspace's release build, Debian's Prometheus and Alertmanager, Loki and Tempo
when LOKI_BIN / TEMPO_BIN name binaries), validating stand-ins elsewhere (scripts/stack_runner/
stand_ins). See docs/architecture.md ("What the tests run for real").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from ports import free_port  # noqa: E402
from stack_runner import compose, images, network, programs  # noqa: E402
from stack_runner.compose import ComposeError  # noqa: E402
from stack_runner.containers import Container, MemoryCgroup  # noqa: E402

DEFAULT_STATE = ROOT / ".stack"
UP_DEADLINE = 600.0


def load_project(environ: dict[str, str] | None = None) -> compose.Project:
    return compose.load(ROOT, environ=environ)


def build_containers(project: compose.Project, state: Path, time_scale: float | None, mode: str,
                     build: str = "release"):
    binaries = programs.workspace_binaries(ROOT)
    order = project.start_order()
    net = network.Network(order, network.RunIdentity.of(state), mode)
    containers = {}
    for name in order:
        service = project.services[name]
        facts = images.facts_for(project, service, binaries)
        program = programs.program_for(project, service, facts, sys.executable, build)
        command = service.command or []
        # The one deviation from compose, and only when asked: scenarios run time-scaled.
        extra = ["--time-scale", str(time_scale)] if time_scale and is_scenario_run(command) else []
        containers[name] = Container(project, service, facts, program, net, state, extra)
    return containers, net


def is_scenario_run(argv: list[str]) -> bool:
    return "scenario" in argv and "run" in argv


def busy_ports(project: compose.Project) -> list[str]:
    """Host ports of the stack that something else already holds (said before anything starts)."""
    busy = []
    for name, service in project.services.items():
        for port in service.ports:
            with socket.socket() as probe:
                try:
                    probe.bind((port.host_ip, port.host_port))
                except OSError as error:
                    busy.append(f"{name}: {port.host_ip}:{port.host_port} ({error.strerror})")
    return busy


def read_state(state: Path) -> dict | None:
    try:
        return json.loads((state / "state.json").read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    """Running: a zombie is not (`test` starts the supervisor as its own child, and a `down` in
    the same process used to wait the full 120 s for an exited supervisor nobody had reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def network_mode(asked: str) -> str:
    why = network.namespaces_available() if asked != "loopback" else "asked for with --network loopback"
    if why is None:
        return "netns"
    if asked == "netns":
        print(f"stack: network namespaces are unavailable ({why})", file=sys.stderr)
        raise SystemExit(2)
    print(f"stack: WARNING: network namespaces are unavailable ({why}).\n"
          "stack: WARNING: falling back to the loopback network: each service gets its own 127.x address,\n"
          "stack: WARNING: and its wildcard listen addresses (0.0.0.0, 127.0.0.1) are rewritten to it in its\n"
          "stack: WARNING: environment, command, healthcheck and copies of its config files — the stack does\n"
          "stack: WARNING: NOT run byte for byte as compose would (scripts/stack_runner/loopback.py).", file=sys.stderr)
    return "loopback"


def missing_modules() -> list[str]:
    """Python modules the runner and its stand-ins import, that this interpreter lacks."""
    import importlib

    missing = []
    for name in ("yaml", "grpc", "google.protobuf", "opentelemetry.proto"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def cmd_up(args) -> int:
    if os.geteuid() != 0:
        print("stack: `up` needs root (network and mount namespaces, cgroups): run it as root, or with sudo",
              file=sys.stderr)
        return 2
    if missing := missing_modules():
        print(f"stack: this Python ({sys.executable}) lacks {', '.join(missing)}, which the stand-ins need: "
              "run the runner with .venv/bin/python, which `scripts/install-test-tools` makes", file=sys.stderr)
        return 2
    state: Path = args.state
    current = read_state(state)
    if current and alive(current.get("supervisor")):
        print(f"stack: already up (supervisor {current['supervisor']}); `scripts/stack.py down` first", file=sys.stderr)
        return 1
    mode = network_mode(args.network)
    try:
        project = load_project()
        build_containers(project, state, args.time_scale, mode, args.build)   # every problem before anything starts
    except ComposeError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    if busy := busy_ports(project):
        print("stack: host ports already in use (set the *_PORT variables of .env to free ones):\n  "
              + "\n  ".join(busy), file=sys.stderr)
        return 1
    state.mkdir(parents=True, exist_ok=True)
    (state / "state.json").unlink(missing_ok=True)
    shutil.rmtree(state / "stopped", ignore_errors=True)
    # New containers start with new logs (compose's `up` after `down` recreates them).
    shutil.rmtree(state / "logs", ignore_errors=True)
    (state / "build").write_text(args.build)
    (state / "time-scale").write_text(str(args.time_scale) if args.time_scale else "")
    argv = [sys.executable, __file__, "--state", str(state), "_supervise", "--build", args.build, "--network", mode]
    if args.time_scale:
        argv += ["--time-scale", str(args.time_scale)]
    with open(state / "supervisor.log", "a") as log:
        supervisor = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + UP_DEADLINE
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            print(f"stack: the supervisor exited ({supervisor.returncode}); its log:\n"
                  + (state / "supervisor.log").read_text()[-3000:], file=sys.stderr)
            cmd_down(argparse.Namespace(state=state, volumes=False, quiet=True))
            return 1
        current = read_state(state)
        if current and current["phase"] == "running":
            print_status(current)
            return 0
        if current and current["phase"] in ("failed", "down"):
            print_status(current)
            print(f"stack: up failed: {current['problem']}", file=sys.stderr)
            cmd_down(argparse.Namespace(state=state, volumes=False, quiet=True))
            return 1
        time.sleep(0.5)
    print(f"stack: not up after {UP_DEADLINE:.0f} s (see {state}/supervisor.log)", file=sys.stderr)
    return 1


def cmd_supervise(args) -> int:
    from stack_runner.supervisor import Supervisor

    project = load_project()
    containers, net = build_containers(project, args.state, args.time_scale, args.network, args.build)
    return Supervisor(project, containers, net, args.state).run_forever()


def cmd_down(args) -> int:
    state: Path = args.state
    current = read_state(state)
    pid = current.get("supervisor") if current else None
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    run = network.RunIdentity.of(state)
    MemoryCgroup.remove_all(run.prefix)
    removed = network.Network.destroy(run)
    shutil.rmtree(state / "containers", ignore_errors=True)
    if args.volumes:
        shutil.rmtree(state / "volumes", ignore_errors=True)
    if not getattr(args, "quiet", False):
        print(f"stack: down{' (also removed ' + ', '.join(removed) + ')' if removed else ''}")
    return 0


def print_status(current: dict) -> None:
    print(f"{'service':<24} {'program':<10} {'status':<11} {'health':<10} {'starts':>6}  address")
    for name, s in current["services"].items():
        print(f"{name:<24} {s['program']:<10} {s['status']:<11} {s['health']:<10} {s['starts']:>6}  {s['address']}")
        for warning in s.get("warnings", []):
            print(f"{'':<24} warning: {warning}")
        if s["health"] == "unhealthy":
            print(f"{'':<24} {s['health_detail']}")


def cmd_status(args) -> int:
    current = read_state(args.state)
    if not current:
        print("stack: not up", file=sys.stderr)
        return 1
    print_status(current)
    return 0


def cmd_logs(args) -> int:
    """`docker compose logs [-f] [--tail N] SERVICE`: the container's output, from its json-file log."""
    path = args.state / "logs" / f"{args.service}.log"
    if not path.exists():
        print(f"stack: no log for {args.service}", file=sys.stderr)
        return 1
    with open(path) as log:
        lines = log.readlines()
        for line in lines[-args.tail:] if args.tail is not None else lines:
            sys.stdout.write(json.loads(line)["log"])
        sys.stdout.flush()
        while args.follow:     # until Ctrl-C, or the reader goes away
            line = log.readline()
            if line.endswith("\n"):
                sys.stdout.write(json.loads(line)["log"])
                sys.stdout.flush()
            else:
                log.seek(log.tell() - len(line))
                time.sleep(0.2)   # a file has no "new line" event to wait on: poll it
    return 0


def cmd_stop(args) -> int:
    """`docker compose stop SERVICE`: SIGTERM, SIGKILL after the grace period, and no restart."""
    current = read_state(args.state)
    service = (current or {}).get("services", {}).get(args.service)
    if not service or not alive(service.get("pid")):
        print(f"stack: {args.service} is not running", file=sys.stderr)
        return 1
    (args.state / "stopped").mkdir(exist_ok=True)
    (args.state / "stopped" / args.service).touch()
    os.kill(service["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 10
    while alive(service["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(service["pid"]):
        os.kill(service["pid"], signal.SIGKILL)
    return 0


def cmd_start(args) -> int:
    """`docker compose start SERVICE`: starts a stopped service again (its restart policy, health
    check and published ports as before)."""
    current = read_state(args.state)
    if not current or not alive(current.get("supervisor")):
        print("stack: the stack is not up", file=sys.stderr)
        return 2
    service = current["services"].get(args.service)
    if not service:
        print(f"stack: no service {args.service!r}", file=sys.stderr)
        return 2
    if service["status"] == "running" and alive(service.get("pid")):
        print(f"stack: {args.service} is already running")
        return 0
    (args.state / "stopped" / args.service).unlink(missing_ok=True)
    (args.state / "start").mkdir(exist_ok=True)
    (args.state / "start" / args.service).touch()
    os.kill(current["supervisor"], signal.SIGUSR1)
    starts = service["starts"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = (read_state(args.state) or {}).get("services", {}).get(args.service, {})
        if now.get("starts", 0) > starts and now.get("status") == "running":
            print(f"stack: {args.service} started")
            return 0
        time.sleep(0.2)
    print(f"stack: {args.service} did not start within 30 s (see `stack.py logs {args.service}` "
          f"and {args.state}/supervisor.log)", file=sys.stderr)
    return 1


def cmd_restart(args) -> int:
    """`docker compose restart SERVICE`: stop (SIGTERM, SIGKILL after the grace period), then start."""
    current = read_state(args.state)
    service = (current or {}).get("services", {}).get(args.service)
    if service and alive(service.get("pid")):
        cmd_stop(args)
    return cmd_start(args)


def cmd_run(args) -> int:
    """`docker compose run --rm SERVICE [ARGS]`: a one-off container of SERVICE (its profile is
    activated, as compose does), ARGS replacing its command, on the running stack's network.

    As compose's signal proxy does, SIGINT, SIGTERM and SIGHUP are forwarded to the container,
    whatever this process inherited (a shell's background job starts with SIGINT ignored: then
    Python raises no KeyboardInterrupt, and the soak's Ctrl-C used to be lost). The container
    then has the stop grace period to exit; after that, or on a second signal, it is killed.
    Each one-off gets its own address and link, so several can run at once, and whatever the
    run set up is removed however it ends."""
    signals: list[tuple[int, float]] = []
    delivered = [0]
    container: Container | None = None

    def deliver() -> None:
        process = container.process if container else None
        while process and process.poll() is None and delivered[0] < len(signals):
            signum = signals[delivered[0]][0] if delivered[0] == 0 else signal.SIGKILL
            delivered[0] += 1
            os.kill(process.pid, signum)

    def forward(signum, frame):
        signals.append((signum, time.monotonic()))
        deliver()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    current = read_state(args.state)
    if not current or current.get("phase") != "running":
        print("stack: the stack is not up", file=sys.stderr)
        return 2
    project = load_project({**os.environ, "COMPOSE_PROFILES": "*"})
    if args.service not in project.services:
        print(f"stack: no service {args.service!r}", file=sys.stderr)
        return 2
    service = project.services[args.service]
    if args.args:
        service.command = list(args.args)
    if (why := needs_real_loki(current, service)) is not None:
        print(f"stack: skipped: {why}", file=sys.stderr)
        return 1
    scale = (args.state / "time-scale").read_text().strip() if (args.state / "time-scale").exists() else ""
    if scale and is_scenario_run([*(service.entrypoint or []), *(service.command or [])]) and "--time-scale" not in service.command:
        # As `up --time-scale` did for the stack's own scenarios (the one deviation from compose).
        service.command = [*service.command, "--time-scale", scale]
        print(f"stack: run time-scaled ×{scale}, as `up --time-scale {scale}` asked", file=sys.stderr)
    service.environment.update(dict(item.split("=", 1) for item in args.env))
    facts = images.facts_for(project, service, programs.workspace_binaries(ROOT))
    build = (args.state / "build").read_text().strip()
    program = programs.program_for(project, service, facts, sys.executable, build)
    name = f"{args.service}-run-{os.getpid()}"
    service = dataclasses.replace(service, name=name)
    slot = network.OneOffSlot(args.state)
    net = network.Network(list(current["services"]), network.RunIdentity.of(args.state), current["network"],
                          one_offs={name: slot.host_number})
    container = Container(project, service, facts, program, net, args.state, [])
    container.dir = args.state / "containers" / name
    if container.cgroup:
        container.cgroup = MemoryCgroup(net.run.prefix, name, service.mem_limit)
    try:
        net.attach(name)
        if signals:
            return 128 + signals[0][0]
        process = container.start(stdout=None, stderr=None)
        deliver()   # a signal that came while it was starting
        return wait_for_one_off(process, signals)
    except network.NetworkError as error:
        print(f"stack: cannot attach {name} to the network: {error}", file=sys.stderr)
        return 1
    finally:
        if container.cgroup:
            container.cgroup.remove()
        net.detach(name)
        slot.release()
        shutil.rmtree(container.dir, ignore_errors=True)


def needs_real_loki(current: dict, service: compose.Service) -> str | None:
    """Why a scenario cannot pass here, when it expects an alert of Loki's ruler and Loki is the
    stand-in (which evaluates no rules); None otherwise."""
    import tomllib

    import yaml

    if current["services"].get("loki", {}).get("program") != "stand-in":
        return None
    argv = [*(service.entrypoint or []), *(service.command or [])]
    if not is_scenario_run(argv):
        return None
    name = argv[argv.index("run") + 1] if argv.index("run") + 1 < len(argv) else ""
    path = ROOT / "load-gen/scenarios" / f"{name}.toml"
    if not path.is_file():
        return None   # load-gen itself says what is wrong with the name
    expected = set(tomllib.loads(path.read_text()).get("expect", {}).get("alerts", []))
    log_alerts = {rule["alert"] for rules in (ROOT / "loki/rules").rglob("*.y*ml")
                  for group in (yaml.safe_load(rules.read_text()) or {}).get("groups", [])
                  for rule in group.get("rules", []) if "alert" in rule}
    if not expected & log_alerts:
        return None
    return (f"scenario {name} expects {', '.join(sorted(expected & log_alerts))}, an alert of Loki's ruler, but Loki "
            "is a stand-in here (LOKI_BIN not set), which evaluates no LogQL rules: the scenario could only fail. "
            "Run the stack with LOKI_BIN=/path/to/loki (README, \"Real Loki and Tempo\") for this lab.")


def wait_for_one_off(process: subprocess.Popen, signals: list[tuple[int, float]]) -> int:
    """The container's exit code; once a signal was forwarded, at most the stop grace period."""
    from stack_runner.containers import STOP_GRACE

    while True:
        try:
            code = process.wait(timeout=0.2)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            if signals and time.monotonic() - signals[0][1] > STOP_GRACE:
                process.kill()


def cmd_check(args) -> int:
    from stack_runner.checks import run as checks

    return checks.main(ROOT, args.state, read_state(args.state), getattr(args, "soak", 0) or 0)


def cmd_test(args) -> int:
    """up with every published port moved to a free one (as `GRAFANA_PORT=… docker compose up`
    would), the checks, and down — always, also on failure and Ctrl-C."""
    for variable in [k for k in compose.read_env_file(ROOT / ".env") if k.endswith("_PORT")]:
        os.environ[variable] = str(free_port())
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a background job inherits it ignored, and then no KeyboardInterrupt.
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    try:
        code = cmd_up(args)
        if code == 0:
            code = cmd_check(args)
        return code
    except KeyboardInterrupt:
        print("stack: interrupted; tearing down", file=sys.stderr)
        return 130
    finally:
        cmd_down(argparse.Namespace(state=args.state, volumes=True, quiet=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="where the run keeps its state")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{up,status,logs,run,start,stop,restart,check,down,test}")
    for name in ("up", "test", "_supervise"):
        p = sub.add_parser(name)
        p.add_argument("--time-scale", type=float, default=None,
                       help="append --time-scale X to load-gen scenario commands (the one deviation from compose)")
        p.add_argument("--network", choices=["auto", "netns", "loopback"], default="auto",
                       help="network namespaces (auto: when available), or the loopback fallback")
        p.add_argument("--build", choices=["release", "debug"], default="release",
                       help="which cargo build of this workspace runs (the images hold the release build)")
        if name == "test":
            p.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                           help="end with a soak: faults cycling for SECONDS, then prove nothing was lost")
    down = sub.add_parser("down")
    down.add_argument("-v", "--volumes", action="store_true", help="also remove the named volumes")
    sub.add_parser("status")
    check = sub.add_parser("check")
    check.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                       help="end with a soak: faults cycling for SECONDS, then prove nothing was lost")
    logs = sub.add_parser("logs")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines, as `docker compose logs -f`")
    logs.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines")
    logs.add_argument("service")
    stop = sub.add_parser("stop", help="stop a service without restarting it, as `docker compose stop`")
    stop.add_argument("service")
    start = sub.add_parser("start", help="start a stopped service again, as `docker compose start`")
    start.add_argument("service")
    restart = sub.add_parser("restart", help="stop and start a service, as `docker compose restart`")
    restart.add_argument("service")
    run = sub.add_parser("run", help="a one-off container, as `docker compose run --rm SERVICE ARGS`")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                     help="set an environment variable in the container, as `docker compose run -e`")
    run.add_argument("service")
    run.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    handlers = {"up": cmd_up, "_supervise": cmd_supervise, "down": cmd_down, "status": cmd_status,
                "logs": cmd_logs, "check": cmd_check, "test": cmd_test, "run": cmd_run,
                "stop": cmd_stop, "start": cmd_start, "restart": cmd_restart}
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        # The reader went away (`status | head -2`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
