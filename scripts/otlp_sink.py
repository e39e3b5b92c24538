#!/usr/bin/env python3
"""A real OTLP receiver for the end-to-end tests, built on oteltest's GrpcSink and HttpSink.

Listens for OTLP/gRPC and OTLP/HTTP on free ports, prints one JSON line with the ports, then one
JSON line per span received (ids in lowercase hex, attributes flattened, the transport it came
by; `--discard` prints only the ports). It exits when its standard input closes, so it never outlives the test that started it.
"""

import json
import logging
import sys
import threading

from oteltest.sink import GrpcSink, HttpSink
from oteltest.sink.handler import RequestHandler

from ports import free_port

_print_lock = threading.Lock()


def emit(record: dict) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class SpanPrinter(RequestHandler):
    def __init__(self, transport: str, discard: bool = False):
        self.transport = transport
        self.discard = discard

    def handle_trace(self, request, headers):  # noqa: ARG002
        if self.discard:
            return
        for resource_spans in request.resource_spans:
            resource = {a.key: any_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    emit({
                        "transport": self.transport,
                        "resource": resource,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status_code": span.status.code,
                        "attributes": {a.key: any_value(a.value) for a in span.attributes},
                    })

    def handle_metrics(self, request, headers):  # noqa: ARG002
        pass

    def handle_logs(self, request, headers):  # noqa: ARG002
        pass


def main() -> None:
    logger = logging.getLogger("otlp-sink")
    grpc_port, http_port = free_port(), free_port()
    discard = "--discard" in sys.argv  # benchmarks: receive and decode, print nothing
    grpc_sink = GrpcSink(SpanPrinter("grpc", discard), logger, port=grpc_port)
    grpc_sink.start()
    HttpSink(SpanPrinter("http", discard), logger, port=http_port).start()
    emit({"grpc_port": grpc_port, "http_port": http_port})
    sys.stdin.read()
    grpc_sink.stop()


if __name__ == "__main__":
    main()
