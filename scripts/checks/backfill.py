#!/usr/bin/env python3
"""The `backfill` one-shot's script (docker-compose.yml, services.backfill.entrypoint), run
here with Debian's prometheus and promtool on a history of its own, small enough for seconds:

- a first run turns the OpenMetrics history into blocks, evaluates the recording rules over it
  with a Prometheus of its own, moves those blocks beside the raw ones and writes its marker;
  the recorded series holds the value the rule gives;
- a second run does nothing and changes nothing;
- with no history files it does nothing;
- when its evaluating Prometheus cannot start (its port is taken) it fails at once, saying so.

The script is the compose file's, with `$$` unescaped as compose does; only its paths
(`/prometheus`, `/history`, `/tmp/backfill.yml`) and the evaluator's port are moved into a
temporary directory and a free port, so runs never touch the machine's own.

    .venv/bin/python scripts/checks/backfill.py
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ports import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RULE = "job:test_requests:rate5m"
STEP_S = 60
HOURS = 30
RUN_DEADLINE_S = 240


class Failure(Exception):
    pass


def compose_script() -> str:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    entrypoint = compose["services"]["backfill"]["entrypoint"]
    if entrypoint[:2] != ["/bin/sh", "-c"]:
        raise Failure(f"docker-compose.yml: backfill's entrypoint is not a /bin/sh -c script: {entrypoint[:2]}")
    return entrypoint[2].replace("$$", "$")


def write_history(history: Path, end: int) -> None:
    """A counter rising by one a second, `HOURS` hours to `end`, and a rule over it."""
    start = end - HOURS * 3600
    lines = ["# TYPE test_requests counter"]
    lines += [f'test_requests_total{{route="/a"}} {t - start} {t}' for t in range(start, end + 1, STEP_S)]
    lines.append("# EOF")
    (history / "day-1.om").write_text("\n".join(lines) + "\n")
    (history / "rules.yml").write_text(
        "groups:\n- name: test\n  interval: 1m\n  rules:\n"
        f"  - record: {RULE}\n    expr: sum(rate(test_requests_total[5m]))\n")
    (history / "backfill.env").write_text(f"HISTORY_START={start + 600}\nHISTORY_END={end}\n")
    (history / "generated").write_text("test history, written by scripts/checks/backfill.py\n")


def run(script: str, work: Path, port: int) -> subprocess.CompletedProcess:
    local = script.replace("/tmp/backfill.yml", str(work / "backfill.yml"))
    # Only where a path starts (not `/prometheus/history-rules`'s second part).
    for path in ("prometheus", "history"):
        local = re.sub(rf"(?<![\w.-])/{path}\b", str(work / path).replace("\\", "\\\\"), local)
    local = local.replace("127.0.0.1:9091", f"127.0.0.1:{port}")
    try:
        return subprocess.run(["/bin/sh", "-c", local], capture_output=True, text=True, timeout=RUN_DEADLINE_S)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"the script did not finish within {RUN_DEADLINE_S} s: {e.stderr!r}") from e


def blocks(prometheus: Path) -> list[str]:
    return sorted(p.name for p in prometheus.iterdir() if (p / "meta.json").is_file())


def recorded(prometheus: Path) -> list[float]:
    out = subprocess.run(["promtool", "tsdb", "dump", "--match", f'{{__name__="{RULE}"}}', str(prometheus)],
                         capture_output=True, text=True, check=True).stdout
    return [float(line.split()[-2]) for line in out.splitlines() if line.strip()]


def expect(ok: bool, what: str, result: subprocess.CompletedProcess | None = None) -> None:
    if not ok:
        detail = f"\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}" if result else ""
        raise Failure(what + detail)


def check(script: str, root: Path) -> list[str]:
    said = []
    work = root / "fresh"
    (work / "prometheus").mkdir(parents=True)
    (work / "history").mkdir()
    write_history(work / "history", int(time.time()) // 3600 * 3600 - 24 * 3600)

    first = run(script, work, free_port())
    expect(first.returncode == 0, f"the first run exited {first.returncode}", first)
    expect("recording rules evaluated over the history; done" in first.stdout, "the first run did not say it was done", first)
    made = blocks(work / "prometheus")
    expect(len(made) >= 2, f"the first run left {len(made)} blocks (want the raw series and the rules')", first)
    expect(not (work / "prometheus/history-rules").exists(), "the rules' own directory was left behind", first)
    marker = work / "prometheus/history-backfilled"
    expect(marker.is_file() and marker.read_text() == (work / "history/generated").read_text(),
           "the marker is missing or does not copy the history's `generated`", first)
    values = recorded(work / "prometheus")
    # One sample a minute over the evaluated range; the counter rises 1/s, so the rate is 1.
    expect(len(values) > (HOURS - 1) * 60 * 0.9, f"{len(values)} samples of {RULE}, want about {HOURS * 60}")
    expect(all(abs(v - 1.0) < 1e-9 for v in values), f"{RULE} is not 1 everywhere: {sorted(set(values))[:5]}")
    said.append(f"first run: {len(made)} blocks, {len(values)} samples of {RULE}, each 1.0")

    second = run(script, work, free_port())
    expect(second.returncode == 0 and "already has the history" in second.stdout,
           "a second run did not say there was nothing to do", second)
    expect(blocks(work / "prometheus") == made, "a second run changed the blocks", second)
    said.append("second run: nothing to do, blocks unchanged")

    empty = root / "empty"
    (empty / "prometheus").mkdir(parents=True)
    (empty / "history").mkdir()
    none = run(script, empty, free_port())
    expect(none.returncode == 0 and "no history files" in none.stdout, "with no history it did not do nothing", none)
    expect(not any((empty / "prometheus").iterdir()), "with no history it wrote into Prometheus' directory", none)
    said.append("no history: nothing to do")

    taken = root / "taken"
    (taken / "prometheus").mkdir(parents=True)
    (taken / "history").mkdir()
    write_history(taken / "history", int(time.time()) // 3600 * 3600 - 24 * 3600)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        started = time.monotonic()
        failed = run(script, taken, holder.getsockname()[1])
        took = time.monotonic() - started
    expect(failed.returncode != 0 and "the evaluating Prometheus exited before it was ready" in failed.stderr,
           "with its port taken the script did not fail naming the evaluating Prometheus", failed)
    expect(not (taken / "prometheus/history-backfilled").exists(), "a failed run wrote the marker", failed)
    said.append(f"port taken: failed in {took:.1f} s, naming the evaluating Prometheus")
    return said


def main() -> int:
    for tool in ("prometheus", "promtool", "wget"):
        if shutil.which(tool) is None:
            print(f"backfill: {tool} is not installed (scripts/install-test-tools installs it)", file=sys.stderr)
            return 1
    root = Path(tempfile.mkdtemp(prefix="backfill-check-"))
    try:
        for line in check(compose_script(), root):
            print(f"backfill: {line}")
    except Failure as e:
        print(f"backfill: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("backfill: the compose one-shot's script, 4 cases, 0 problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
