#!/usr/bin/env python3
"""Stand-in for Tempo when `TEMPO_BIN` is not set: a real OTLP receiver (gRPC and HTTP, decoded
with the OpenTelemetry protobufs) at the endpoints `tempo.yaml` configures — bound exactly where
the config says, so a receiver left on Tempo 3's localhost default is unreachable from the other
containers, as it would be — and an HTTP port with `/ready`, `/metrics`
(`tempo_distributor_spans_received_total`, counted) and `/stand-in/spans` for the checks.

It validates every span: non-zero trace and span ids, a `service.name` resource attribute, an
end after the start. It answers no TraceQL: checks that need Tempo say they are skipped.

argv: the service's own (`/tempo -config.file=/etc/tempo/tempo.yaml`).
"""

import json
import sys
import threading
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc  # noqa: E402
import yaml  # noqa: E402
from google.protobuf.json_format import Parse  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: E402

from stack_runner.stand_ins.common import BIND, Recorder, flags, serve, split_address  # noqa: E402

recorder = Recorder("tempo")
spans: list[dict] = []
lock = threading.Lock()


def any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def record(request, transport: str) -> None:
    for resource_spans in request.resource_spans:
        resource = {a.key: any_value(a.value) for a in resource_spans.resource.attributes}
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                problems = []
                if not service:
                    problems.append("no service.name resource attribute")
                if span.trace_id == bytes(16) or len(span.trace_id) != 16:
                    problems.append("trace id is not 16 non-zero bytes")
                if span.span_id == bytes(8) or len(span.span_id) != 8:
                    problems.append("span id is not 8 non-zero bytes")
                if span.end_time_unix_nano < span.start_time_unix_nano:
                    problems.append("ends before it starts")
                if problems:
                    recorder.problem(f"span {span.name!r} of {service}: {'; '.join(problems)}")
                    continue
                entry = {"service": service, "name": span.name, "kind": span.kind, "transport": transport,
                         "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                         "parent_span_id": span.parent_span_id.hex(), "start_ns": span.start_time_unix_nano,
                         "end_ns": span.end_time_unix_nano, "status_code": span.status.code,
                         "attributes": {a.key: any_value(a.value) for a in span.attributes}}
                with lock:
                    spans.append(entry)
                recorder.count("tempo_distributor_spans_received_total", tenant="single-tenant")


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):   # noqa: N802 (the gRPC method name)
        record(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def otlp_http(path, query, body, headers):
    request = trace_service_pb2.ExportTraceServiceRequest()
    if "json" in (headers.get("content-type") or ""):
        Parse(body, request)
    else:
        request.ParseFromString(body)
    record(request, "http")
    return 200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"


def list_spans(path, query, body, headers):
    with lock:
        selected = [s for s in spans if all(str(s.get(k)) == v for k, v in query.items())]
    return 200, selected


def main(argv: list[str]) -> None:
    options, _ = flags(argv[1:])
    config = yaml.safe_load(Path(options["config.file"]).read_text()) if "config.file" in options else {}
    http_port = (config.get("server") or {}).get("http_listen_port", 3200)
    protocols = (((config.get("distributor") or {}).get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    if "grpc" in protocols:
        # Tempo 3 binds its receivers to localhost unless the config says otherwise.
        host, port = split_address((protocols["grpc"] or {}).get("endpoint", "localhost:4317"))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
        server.add_insecure_port(f"{host}:{port}")
        server.start()
    routes = {("GET", "/ready"): lambda *a: (200, "ready\n", "text/plain"),
              # What Grafana's Tempo data source health check may ask, as real Tempo answers it.
              ("GET", "/api/echo"): lambda *a: (200, "echo", "text/plain"),
              ("GET", "/stand-in/spans"): list_spans}
    if "http" in protocols:
        host, port = split_address((protocols["http"] or {}).get("endpoint", "localhost:4318"))
        serve((host, port), {("POST", "/v1/traces"): otlp_http}, recorder, block=False)
    print(json.dumps({"stand-in": "tempo", "http_port": http_port, "receivers": sorted(protocols)}), flush=True)
    serve((BIND, http_port), routes, recorder)


if __name__ == "__main__":
    main(sys.argv[1:])
