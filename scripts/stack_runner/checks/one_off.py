"""One-off containers stop when told, at any moment, and leave nothing behind — the way a
workshop uses them (`docker compose run --rm scenario …`, Ctrl-C, another one beside it).

The soak's hang came from here: a `stack.py run` started as a background job inherits SIGINT
ignored, so Python never raised KeyboardInterrupt and the Ctrl-C never reached load-gen, which
went on repeating its scenario. Each stop here is sent to a `stack.py run` whose SIGINT is
ignored on entry, at a random moment of `scenario fault-tour --repeat` (the up-front checks,
alert polls, fault switches, traffic, between iterations), and must end it within
STOP_BOUND with load-gen's exit code 130. Two run at once, as in a lab, and neither may leave a
namespace or link behind.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import tempfile
import time

from ..network import ONE_OFF_FIRST, RunIdentity, _ip
from .base import Stack, get_json

# load-gen's own stop ends within 2 s; the rest is the container's teardown (cgroup, link,
# namespace, its directory), measured at well under a second here.
STOP_BOUND = 5.0
STOPS = 5


def ignoring_sigint() -> None:
    """What a shell does to a background job: SIGINT ignored from the start."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(stack: Stack, scale: str) -> tuple[subprocess.Popen, tuple]:
    files = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
    command = stack.command("run", "-e", "OTEL_TRACES_EXPORTER=none", "scenario", "fault-tour", "--repeat",
                            "--time-scale", scale, "--quiet", "--output", "json")
    process = subprocess.Popen(command, stdout=files[0], stderr=files[1], text=True, preexec_fn=ignoring_sigint)
    return process, files


def stop(stack: Stack, process: subprocess.Popen, files: tuple, what: str) -> None:
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        process.wait(timeout=STOP_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    took = time.monotonic() - sent
    out, err = (f.seek(0) or f.read() for f in files)
    for f in files:
        f.close()
    stack.count_oneoff(out, err)
    tail = [line for line in err.strip().splitlines() if not line.startswith("evidence:")][-2:]
    stack.ledger.check(process.returncode == 130 and took <= STOP_BOUND,
                       f"one-off: {what}: Ctrl-C ended it in {took:.1f} s (bound {STOP_BOUND:.0f} s), exit "
                       f"{process.returncode} ({tail})")


def leftovers(stack: Stack) -> list[str]:
    """One-off namespaces, bridge links and address claims still there."""
    run = RunIdentity.of(stack.state_dir)
    left = [n for n in run.leftovers() if "-run-" in n]
    if stack.state.get("network") == "netns":
        links = _ip("-n", run.hub, "-o", "link", "show", check=False).stdout
        left += [name for name, number in re.findall(r"^\d+: (v(\d+))@", links, re.MULTILINE)
                 if int(number) >= ONE_OFF_FIRST]
    claims = stack.state_dir / "one-offs"
    left += [f"one-off address claim {p.name}" for p in claims.iterdir()] if claims.exists() else []
    return left


def check(stack: Stack) -> None:
    argv = stack.service("load-gen")["argv"]
    scale = argv[argv.index("--time-scale") + 1] if "--time-scale" in argv else "1"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"one-off: {STOPS} Ctrl-C at random moments of `run scenario fault-tour --repeat` (seed {seed})")
    for attempt in range(STOPS):
        process, files = start(stack, scale)
        time.sleep(rng.uniform(1.0, 12.0))   # from its start-up to its second iteration
        stop(stack, process, files, f"stop {attempt + 1} of {STOPS}")
    first, second = start(stack, scale), start(stack, scale)
    time.sleep(rng.uniform(2.0, 6.0))
    stop(stack, *first, "the first of two at once")
    stop(stack, *second, "the second of two at once")
    left = leftovers(stack)
    stack.ledger.check(not left, f"one-off: no namespace or link left behind ({', '.join(left) or 'none'})")
    for service in ("sample-app", "sample-app-downstream"):
        view = get_json(f"{stack.url(service, 8080)}/admin/faults")
        stack.ledger.check(view.get("plan") is None, f"one-off: {service}: every stopped scenario cleared its faults")
