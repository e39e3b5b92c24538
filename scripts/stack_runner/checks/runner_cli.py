"""The runner's own commands behave as their compose counterparts do, on the running stack:
`logs --tail N` and `logs -f`, `stop` then `start` and `restart` (a stopped service used to be
impossible to start again: `up` said "already up"), `status` into a pipe that closes early (it
used to end in a BrokenPipeError traceback), and a second `up` whose host ports are taken
(refused at once, naming the ports, instead of after minutes of retries), and a log-alert lab on
the Loki stand-in (refused with the reason)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from .base import Prometheus, Stack, wait_for

RESTARTED = "alert-log"   # a leaf of the stack: nothing waits on it while it restarts


def run(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(stack.command(*args), capture_output=True, text=True, timeout=timeout)


def check(stack: Stack) -> None:
    tail = run(stack, "logs", "--tail", "3", "sample-app")
    stack.ledger.check(tail.returncode == 0 and len(tail.stdout.splitlines()) == 3,
                       f"runner: `logs --tail 3 sample-app` printed {len(tail.stdout.splitlines())} lines")
    follow(stack)
    piped = subprocess.run(f"{' '.join(stack.command('status'))} | head -1", shell=True, capture_output=True,
                           text=True, timeout=30)
    stack.ledger.check("Traceback" not in piped.stderr and piped.stdout.startswith("service"),
                       f"runner: `status | head -1` ends quietly ({piped.stderr.strip()[-120:] or 'no error'})")
    stop_and_start(stack)
    second_up(stack)
    stand_in_loki(stack)
    alert_links(stack)


def follow(stack: Stack) -> None:
    """`logs -f` prints lines written after it started: load-gen reports progress every 5 s."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(stack.command("logs", "-f", "--tail", "0", "load-gen"), stdout=out, text=True)
        try:
            wait_for("a new load-gen line through `logs -f`", lambda: out.seek(0) or out.read().strip(), 30, 0.2)
            stack.ledger.check(True, "runner: `logs -f load-gen` printed a line written after it started")
        finally:
            process.terminate()
            process.wait(timeout=10)


def stop_and_start(stack: Stack) -> None:
    def status() -> dict:
        stack.refresh()
        return stack.service(RESTARTED)

    starts = status()["starts"]
    stopped = run(stack, "stop", RESTARTED)
    now = wait_for(f"{RESTARTED} to be stopped", lambda: status()["status"] == "stopped" and status(), 30, 0.2)
    stack.ledger.check(stopped.returncode == 0 and now["health"] == "none",
                       f"runner: `stop {RESTARTED}`: status stopped, health {now['health']} (not a stale 'healthy')")
    started = run(stack, "start", RESTARTED)
    stack.ledger.check(started.returncode == 0 and status()["starts"] == starts + 1,
                       f"runner: `start {RESTARTED}` started it again ({started.stdout.strip() or started.stderr.strip()})")
    restarted = run(stack, "restart", RESTARTED)
    stack.ledger.check(restarted.returncode == 0 and status()["starts"] == starts + 2,
                       f"runner: `restart {RESTARTED}` stopped and started it ({restarted.stdout.strip()})")
    wait_for(f"{RESTARTED} to be healthy again", lambda: status()["health"] == "healthy", 60, 0.5)
    stack.started_again[RESTARTED] = 2


def second_up(stack: Stack) -> None:
    """The same ports again, from another state directory: every one is held by this stack."""
    with tempfile.TemporaryDirectory() as other:
        started = time.monotonic()
        build = (stack.state_dir / "build").read_text().strip()
        up = subprocess.run([sys.executable, str(stack.root / "scripts/stack.py"), "--state", other, "up",
                             "--build", build], capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        named = [line for line in up.stderr.splitlines() if "grafana:" in line]
        stack.ledger.check(up.returncode == 1 and named and took < 30,
                           f"runner: a second `up` on the same host ports is refused in {took:.1f} s, naming them "
                           f"({named[0].strip() if named else up.stderr.strip()[-200:]})")


def stand_in_loki(stack: Stack) -> None:
    """Lab 7 needs Loki's ruler: with the stand-in, `run scenario error-logs` says why it cannot
    pass, at once, instead of failing two minutes later with "never became pending"."""
    if stack.real("loki"):
        return
    started = time.monotonic()
    refused = run(stack, "run", "scenario", "error-logs", timeout=60)
    stack.ledger.check(refused.returncode == 1 and "LOKI_BIN" in refused.stderr and time.monotonic() - started < 30,
                       f"runner: with the Loki stand-in, `run scenario error-logs` is refused at once with the reason "
                       f"({refused.stderr.strip()[:100]}…)")


def alert_links(stack: Stack) -> None:
    """Notifications link to Prometheus at the address a browser on the host reaches (compose
    sets --web.external-url), not at the container's id."""
    published = next((p["host"] for p in stack.state["published"] if p["service"] == "prometheus"), None)
    port = published.rsplit(":", 1)[1] if published else "9090"
    links = [record.get("generator_url", "") for record in stack.json_log("alert-log") if "generator_url" in record]
    # Prometheus' own links: at its container port (before) or at the published one (now).
    links = [link for link in links if ":9090/" in link or f"localhost:{port}/" in link]
    if not links:
        # No Prometheus alert fired during this run (whether one does depends on its timing):
        # check what Prometheus builds the links from instead of skipping.
        flags = Prometheus(stack.url("prometheus", 9090)).api("status/flags")
        external = flags.get("web.external-url", "")
        stack.ledger.check(external == f"http://localhost:{port}",
                           f"runner: no Prometheus notification reached alert-log in this run; Prometheus builds "
                           f"their links from --web.external-url={external or '(unset)'} "
                           f"(want http://localhost:{port})")
        return
    wrong = [link for link in links if not link.startswith(f"http://localhost:{port}/")]
    stack.ledger.check(not wrong, f"runner: {len(links)} alert notifications link to http://localhost:{port}/ "
                                  f"({wrong[0][:60] if wrong else 'all of them'})")
