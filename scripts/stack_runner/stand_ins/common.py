"""What every stand-in shares: a threaded HTTP server with `GET /stand-in/ready` (what a
validated healthcheck asks), `GET /metrics` (real counts of what the stand-in did, under the
real program's metric names where it does the same job, so the stack's scrapes and alerts see a
healthy backend), `GET /stand-in/problems` (everything it rejected), and flag parsing in the
real program's style (`-config.file=F`, `--flag=value`, `--flag value`).

A stand-in validates what it receives and records it for the checks; it never invents data.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


# Where a stand-in listens when its config says nothing: everywhere, as the real server would —
# or, in the runner's loopback fallback, only on the address the runner gave the service.
BIND = os.environ.get("STACK_RUNNER_BIND", "0.0.0.0")


class Recorder:
    """Counters for `/metrics` and a list of rejected inputs, shared by the handler threads."""

    def __init__(self, program: str):
        self.program = program
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, tuple], float] = {}
        self.problems: list[str] = []

    def count(self, name: str, value: float = 1, **labels) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + value

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        print(f"stand-in {self.program}: rejected: {text}", file=sys.stderr, flush=True)

    def exposition(self) -> str:
        lines = [f'stand_in_info{{program="{self.program}"}} 1']
        with self.lock:
            for (name, labels), value in sorted(self.counters.items()):
                rendered = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    """Routes `(METHOD, path)` to the stand-in's functions; each returns (status, body, type)."""

    routes: dict = {}
    recorder: Recorder | None = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):   # access logs would drown the container's output
        pass

    def _answer(self, status: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/stand-in/ready":
            return self._answer(200, "ready\n", "text/plain")
        if url.path == "/metrics":
            return self._answer(200, self.recorder.exposition(), "text/plain; version=0.0.4")
        if url.path == "/stand-in/problems":
            return self._answer(200, self.recorder.problems)
        for (route_method, prefix), function in self.routes.items():
            if route_method == method and (url.path == prefix or (prefix.endswith("*") and url.path.startswith(prefix[:-1]))):
                try:
                    return self._answer(*function(url.path, query, body, self.headers))
                except Exception as error:     # a bad input is a 400 naming it, never a crash
                    self.recorder.problem(f"{method} {url.path}: {error}")
                    return self._answer(400, {"error": str(error)})
        self._answer(404, {"error": f"no route {method} {url.path}"})

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")


def serve(address: tuple[str, int], routes: dict, recorder: Recorder, block: bool = True) -> ThreadingHTTPServer:
    handler = type("StandInHandler", (Handler,), {"routes": routes, "recorder": recorder})
    server = ThreadingHTTPServer(address, handler)
    server.daemon_threads = True
    if block:
        server.serve_forever()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def selected(items: list[dict], lock: threading.Lock, query: dict, key: str) -> tuple[int, list[dict]]:
    """A `/stand-in/…` listing: the recorded items whose `key` mapping has every query pair."""
    with lock:
        return 200, [i for i in items if all(i[key].get(k) == v for k, v in query.items())]


def flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`-a=b`, `--a=b`, `--a b`, `--switch` → ({a: b, switch: "true"}, positional)."""
    values, positional, index = {}, [], 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("-"):
            name, equals, value = arg.lstrip("-").partition("=")
            if not equals:
                following = argv[index + 1] if index + 1 < len(argv) else None
                if following is not None and not following.startswith("-") and "." in name:
                    value, index = following, index + 1
                else:
                    value = "true"
            values[name] = value
        else:
            positional.append(arg)
        index += 1
    return values, positional


def split_address(text: str, default_host: str = BIND) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host or default_host), int(port)
