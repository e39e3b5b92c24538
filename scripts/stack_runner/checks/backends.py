"""Clients of the real Loki 3.7 and Tempo 3.0 HTTP APIs (and of the stand-ins' recordings), as
the checks use them. References: https://grafana.com/docs/loki/v3.7.x/reference/loki-http-api/,
https://grafana.com/docs/tempo/v3.0.x/api_docs/.
"""

from __future__ import annotations

import base64
import time
import urllib.error

from .base import get_json


def hex_id(value: str, width: int) -> str:
    """Tempo's JSON has base64 ids (v2 trace API) or hex without leading zeros (search)."""
    if len(value) <= width and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower().zfill(width)
    return base64.b64decode(value).hex().zfill(width)


class Loki:
    def __init__(self, url: str):
        self.url = url

    def query_range(self, query: str, seconds: float = 600, limit: int = 1000, start_ns: int | None = None,
                    end_ns: int | None = None, step: str | None = None) -> dict:
        end = end_ns or time.time_ns()
        params = {"query": query, "limit": limit, "start": start_ns or end - int(seconds * 1e9), "end": end,
                  "direction": "backward"}
        if step:
            params["step"] = step
        body = get_json(f"{self.url}/loki/api/v1/query_range", **params)
        if body.get("status") != "success":
            raise ValueError(f"Loki: {body}")
        return body["data"]

    def lines(self, query: str, **kwargs) -> list[tuple[dict, str]]:
        """(stream labels incl. structured metadata, line) of a log query."""
        data = self.query_range(query, **kwargs)
        return [(stream["stream"], value[1]) for stream in data["result"] for value in stream["values"]]

    def label_names(self) -> list[str]:
        return get_json(f"{self.url}/loki/api/v1/labels")["data"]


class Tempo:
    def __init__(self, url: str):
        self.url = url

    def search(self, q: str, seconds: float = 900, limit: int = 50) -> list[dict]:
        now = int(time.time())
        body = get_json(f"{self.url}/api/search", q=q, limit=limit, start=now - int(seconds), end=now + 1,
                        spss=100)
        return body.get("traces") or []

    def metrics(self, q: str, seconds: float = 900, step: str = "30s") -> list[dict]:
        now = int(time.time())
        body = get_json(f"{self.url}/api/metrics/query_range", q=q, start=now - int(seconds), end=now + 1, step=step)
        return body.get("series") or []

    def trace(self, trace_id: str) -> list[dict]:
        """The spans of a trace, flattened: service, name, kind, ids (hex), attributes; [] if absent."""
        try:
            body = get_json(f"{self.url}/api/v2/traces/{trace_id}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise
        spans = []
        for resource_spans in (body.get("trace") or {}).get("resourceSpans", []):
            resource = {a["key"]: next(iter(a["value"].values()), None) for a in resource_spans["resource"]["attributes"]}
            for scope in resource_spans.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    spans.append({
                        "service": resource.get("service.name"), "name": span["name"], "kind": span.get("kind"),
                        "trace_id": hex_id(span["traceId"], 32), "span_id": hex_id(span["spanId"], 16),
                        "parent_span_id": hex_id(span["parentSpanId"], 16) if span.get("parentSpanId") else "",
                        "attributes": {a["key"]: next(iter(a["value"].values()), None) for a in span.get("attributes", [])},
                    })
        return spans
