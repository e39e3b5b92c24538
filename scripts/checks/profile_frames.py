#!/usr/bin/env python3
"""The frames the labs name are in real profiles of the release build (what the images run).

Lab 4 sends learners to `inject_cpu_burn` in a CPU flame graph and Lab 5 to `leak_memory` under
`Faults::leak` in a heap profile. A debug build cannot show what goes wrong here: the release
optimiser merges functions with identical bodies into one address (so a profile named only one
of `inject_cpu_burn` and `burn_cpu`), and inlines async bodies into their callers. So this runs
the release binary, switches each fault on, and reads its own pprof endpoints with
`go tool pprof`. Every request loop is bounded in count and time; traffic stays on 127.0.0.1.

    scripts/checks/profile_frames.py [target/release/sample-app]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from ports import free_port  # noqa: E402
# Each frame a lab names, and the profile it must be in.
CPU_FRAMES = ["sample_app::faults::inject::inject_cpu_burn"]                       # Lab 4
HEAP_FRAMES = ["sample_app::faults::state::leak_memory", "sample_app::faults::state::Faults::leak"]  # Lab 5
# Functions that must keep their own address, or a profile names the wrong one.
DISTINCT = ["sample_app::faults::inject::inject_cpu_burn", "sample_app::routes::demo::burn_cpu"]

problems: list[str] = []


def symbol_addresses(binary: Path) -> dict[str, str]:
    out = subprocess.run(["nm", "-C", str(binary)], capture_output=True, text=True, check=True).stdout
    addresses = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in ("t", "T"):
            addresses[parts[2]] = parts[0]
    return addresses


def check_distinct(binary: Path) -> None:
    addresses = symbol_addresses(binary)
    found = {name: addresses.get(name) for name in DISTINCT}
    for name, address in found.items():
        if address is None:
            problems.append(f"{name} is not a function of its own in the release build (inlined or renamed)")
    shared = [n for n in DISTINCT if found[n] and list(found.values()).count(found[n]) > 1]
    if shared:
        problems.append(f"{' and '.join(shared)} share one address ({found[shared[0]]}): a profile names only one")


def call(url: str, method: str = "GET", body: dict | None = None, timeout: float = 10) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.read()


def traffic(base: str, seconds: float) -> None:
    """Requests for `seconds` (at most 2,000), so the profile has request work to sample."""
    deadline = time.monotonic() + seconds
    for _ in range(2000):
        if time.monotonic() > deadline:
            return
        try:
            call(f"{base}/api/orders/1", timeout=5)
        except OSError:
            pass


def frames_of(profile: bytes, *args: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".pb") as f:
        f.write(profile)
        f.flush()
        done = subprocess.run(["go", "tool", "pprof", *args, f.name], capture_output=True, text=True,
                              env={**os.environ, "GOPROXY": "off"}, timeout=120)
    if done.returncode != 0:
        problems.append(f"go tool pprof could not read the profile: {done.stderr.strip()[:200]}")
    return done.stdout


def wait_ready(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            call(f"{base}/ready", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"profile frames: the release sample-app did not become ready (exit {process.poll()})")


def check_profiles(binary: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SAMPLE_APP_LISTEN": f"127.0.0.1:{port}", "SAMPLE_APP_FAULTS_ENABLED": "true",
           "OTEL_TRACES_EXPORTER": "none", "RUST_LOG": "warn"}
    process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(base, process)
        call(f"{base}/admin/faults", "PUT", {"cpu_burn_ms": 20, "ttl_seconds": 60})
        load = threading.Thread(target=traffic, args=(base, 4.0))
        load.start()
        cpu = call(f"{base}/debug/pprof/profile?seconds=3", timeout=30)
        load.join()
        top = frames_of(cpu, "-top", "-nodecount=200")
        for frame in CPU_FRAMES:
            if frame not in top:
                problems.append(f"Lab 4's frame {frame} is not in a CPU profile taken during the cpu_burn fault")
        call(f"{base}/admin/faults", "PUT", {"leak_bytes_per_request": 262144, "leak_cap_bytes": 33554432})
        traffic(base, 2.0)
        traces = frames_of(call(f"{base}/debug/pprof/heap"), "-sample_index=inuse_space", "-traces")
        for frame in HEAP_FRAMES:
            if frame not in traces:
                problems.append(f"Lab 5's frame {frame} is not in the heap profile during the leak fault")
        call(f"{base}/admin/faults", "DELETE")
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> int:
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/release/sample-app"
    check_distinct(binary)
    check_profiles(binary)
    for problem in problems:
        print(f"profile frames: {problem}")
    print(f"profile frames: {len(CPU_FRAMES) + len(HEAP_FRAMES)} lab frames, {len(DISTINCT)} distinct functions "
          f"checked in {binary.name}; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
