"""What every check of the running stack uses: the stack as `state.json` describes it (each
service's address, whether it is real or a stand-in), HTTP helpers with deadlines, and the
ledger of results — passed, failed (with the claim that failed) and skipped (with the reason:
a check that needs real Loki says `skipped: … (LOKI_BIN not set)`; nothing passes silently).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class CheckFailed(Exception):
    pass


def rfc3339_seconds(stamp: str) -> float:
    """`2026-11-21T07:01:23.861670729Z` → Unix seconds (any number of fraction digits)."""
    import calendar
    import re

    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", stamp)
    if not match:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    parts = [int(p) for p in match.groups()[:6]]
    seconds = calendar.timegm((*parts, 0, 0, 0)) + float(match.group(7) or 0)
    zone = match.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds


@dataclass
class Ledger:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)     # language → [passed, total]

    def ok(self, claim: str) -> None:
        self.passed.append(claim)
        print(f"  ok    {claim}", flush=True)

    def fail(self, claim: str) -> None:
        self.failed.append(claim)
        print(f"  FAIL  {claim}", flush=True)

    def check(self, condition: bool, claim: str) -> bool:
        (self.ok if condition else self.fail)(claim)
        return condition

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append(f"{what} ({reason})")
        print(f"  skipped: {what} ({reason})", flush=True)

    def query(self, language: str, passed: bool) -> None:
        tally = self.counts.setdefault(language, [0, 0])
        tally[0] += int(passed)
        tally[1] += 1


def http(url: str, data: bytes | None = None, timeout: float = 15, headers: dict | None = None) -> bytes:
    request = urllib.request.Request(url, data, headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        # A backend says why it refused (a 400's body names the parse error): keep it.
        error.msg = f"{error.msg}: {error.read()[:300].decode(errors='replace').strip()}"
        raise


def get_json(url: str, **params) -> dict | list:
    query = urllib.parse.urlencode(params)
    return json.loads(http(f"{url}?{query}" if query else url))


def wait_for(what: str, probe, timeout: float, every: float = 1.0):
    """Polls `probe` until it returns something truthy; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, KeyError, urllib.error.HTTPError) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}"
                              + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(every)


def reports_in(text: str) -> list[dict[str, int]]:
    """The status counts of every load-gen report (table or JSON) in a text."""
    counts = []
    for line in re.findall(r"status codes\s+(.*)", text):
        counts.append({k: int(v) for k, v in re.findall(r"(\d{3}): (\d+)", line)})
    decoder, index = json.JSONDecoder(), 0
    while (start := text.find("{", index)) != -1:
        try:
            report, index = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        if isinstance(report, dict) and "status_counts" in report:
            counts.append({k: int(v) for k, v in report["status_counts"].items()})
    return counts


def cancelled_in(text: str) -> int:
    """Requests load-gen's reports (table or JSON) count as cancelled: sent, unanswered at a stop."""
    total = sum(int(n) for n in re.findall(r"^\s*cancelled\s+(\d+)", text, re.MULTILINE))
    return total + sum(int(n) for n in re.findall(r'"cancelled": (\d+)', text))


def exported_spans(text: str) -> int:
    """The count load-gen prints at exit: `load-gen: N client spans exported, M failed`."""
    found = re.findall(r"load-gen: (\d+) client spans exported, (\d+) failed", text)
    return int(found[-1][0]) if found else 0


@dataclass
class Stack:
    root: Path
    state_dir: Path
    state: dict
    ledger: Ledger
    incident_ended: float = 0.0     # time.monotonic() when the incident check's scenario ended
    # What one-off scenario runs (the incident's, the ruler check's) sent, for the soak's accounting:
    oneoff_reports: list = field(default_factory=list)     # their reports' status counts
    oneoff_spans: int = 0           # the client spans they exported
    oneoff_cancelled: int = 0       # requests they sent and cancelled at a stop (served or not)
    started_again: dict = field(default_factory=dict)   # service -> extra starts a check caused on purpose

    def one_shots(self) -> set[str]:
        """Services `up` runs once to completion (restart: "no"): the history backfill."""
        return {name for name, s in self.project().services.items() if s.restart == "no"}

    def project(self):
        """The compose project as the run read it (limits, commands)."""
        import os

        from ..compose import load
        return load(self.root, environ=dict(os.environ))

    def service(self, name: str) -> dict:
        return self.state["services"][name]

    def command(self, *args: str) -> list[str]:
        """`scripts/stack.py` on this run's state directory, with `args`."""
        return [sys.executable, str(self.root / "scripts/stack.py"), "--state", str(self.state_dir), *args]

    def scenario_command(self, name: str, scale: str) -> list[str]:
        """A one-off `scenario NAME` container, as a workshop runs it, with its report as JSON."""
        return self.command("run", "scenario", name, "--time-scale", scale, "--quiet", "--output", "json")

    def count_oneoff(self, stdout: str, stderr: str) -> None:
        """Notes what a one-off scenario run sent, from its output, for the soak's accounting."""
        self.oneoff_reports += reports_in(stdout)
        self.oneoff_cancelled += cancelled_in(stdout)
        self.oneoff_spans += exported_spans(stderr)

    def real(self, name: str) -> bool:
        return self.service(name)["program"] == "real"

    def url(self, name: str, port: int) -> str:
        return f"http://{self.service(name)['address']}:{port}"

    def why_stand_in(self, name: str) -> str:
        return self.service(name).get("why") or "stand-in"

    def refresh(self) -> None:
        self.state = json.loads((self.state_dir / "state.json").read_text())

    def log_lines(self, name: str) -> list[str]:
        path = self.state_dir / "logs" / f"{name}.log"
        if not path.exists():
            return []
        return [json.loads(line)["log"] for line in path.read_text().splitlines() if line]

    def json_log(self, name: str) -> list[dict]:
        records = []
        for line in self.log_lines(name):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def api(self, path: str, **params):
        body = get_json(f"{self.url}/api/v1/{path}", **params)
        if body.get("status") != "success":
            raise CheckFailed(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None
