"""An OTLP/HTTP trace receiver for tests: POST /v1/traces, protobuf decoded with
opentelemetry-proto's ExportTraceServiceRequest, every span kept in memory with the
headers of the request that brought it.

Not a mock of the exporter: the app's real OTLP exporter sends real HTTP to it, as
it would to Honeycomb or a collector.
"""

import gzip
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    status_code: int
    events: list  # (name, attributes) of each event: exceptions are events
    resource: dict
    headers: dict  # of the export request that carried the span, names in lower case


def any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes_of(key_values):
    return {item.key: any_value(item.value) for item in key_values}


class OTLPReceiver:
    """Listens on a free loopback port; `endpoint` is the value of OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404)
                    return
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                receiver.add(export, {name.lower(): value for name, value in self.headers.items()})
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, export, headers):
        received = []
        for resource_spans in export.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=attributes_of(span.attributes),
                        status_code=span.status.code,
                        events=[(event.name, attributes_of(event.attributes)) for event in span.events],
                        resource=resource,
                        headers=headers,
                    ))
        with self.lock:
            self.spans.extend(received)

    def received(self):
        with self.lock:
            return list(self.spans)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
