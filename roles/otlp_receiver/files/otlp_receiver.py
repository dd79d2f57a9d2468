"""An OTLP/HTTP trace receiver that keeps spans in SQLite so they can be queried.

Why this and not a collector: the OpenTelemetry Collector, Jaeger, Tempo and Zipkin
are not packaged anywhere this fleet installs from, and the OTLP sinks on PyPI
(oteltest's otelsink) print what they receive and keep nothing. This program takes
what an OTLP/HTTP exporter sends (POST /v1/traces, protobuf, optionally gzip),
decodes it with the official opentelemetry-proto classes and stores one row per span.

Two listeners, so that the firewall can treat them apart:
  ingest (4318): POST /v1/traces, from the app hosts only
  query  (4319): GET /traces/<trace id>          every span of a trace
                 GET /spans?request_id=<id>      the spans carrying a balancer request id
                 GET /healthz                    the number of spans stored
Storage is bounded: past --max-spans the oldest spans are deleted. Export headers
are not stored (they may carry a vendor's API key).

    python3 otlp_receiver.py --database /var/lib/otlp-receiver/spans.db \
        --ingest 0.0.0.0:4318 --query 0.0.0.0:4319 --max-spans 200000
"""

import argparse
import gzip
import json
import logging
import sqlite3
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

log = logging.getLogger("otlp-receiver")
REQUEST_ID_ATTRIBUTE = "http.request.header.x-request-id"
MAX_BODY = 16 * 1024 * 1024  # the Python exporter's batches are far smaller
SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT NOT NULL,
    name TEXT NOT NULL, kind INTEGER NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
    status_code INTEGER NOT NULL, request_id TEXT,
    attributes TEXT NOT NULL, events TEXT NOT NULL, resource TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_request ON spans (request_id);
"""
COLUMNS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
           "status_code", "request_id", "attributes", "events", "resource")


def any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def attributes_of(key_values):
    return {item.key: any_value(item.value) for item in key_values}


def rows_of(export):
    """One tuple per span (COLUMNS order), JSON for the nested parts."""
    for resource_spans in export.resource_spans:
        resource = json.dumps(attributes_of(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = attributes_of(span.attributes)
                request_id = attributes.get(REQUEST_ID_ATTRIBUTE)
                if isinstance(request_id, list):
                    request_id = request_id[0] if request_id else None
                events = [{"name": event.name, "attributes": attributes_of(event.attributes)} for event in span.events]
                yield (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name, span.kind,
                       span.start_time_unix_nano, span.end_time_unix_nano, span.status.code, request_id,
                       json.dumps(attributes), json.dumps(events), resource)


class Store:
    """SQLite, one connection behind a lock: a few hundred spans a second at most here."""

    def __init__(self, path, max_spans):
        self.max_spans = max_spans
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def add(self, rows):
        with self.lock, self.db:
            self.db.executemany("INSERT INTO spans VALUES (%s)" % ",".join("?" * len(COLUMNS)), rows)
            # Bounded: keep the newest max_spans (rowids only grow while rows are added).
            self.db.execute("DELETE FROM spans WHERE rowid <= (SELECT max(rowid) FROM spans) - ?", (self.max_spans,))

    def query(self, where, argument):
        with self.lock:
            cursor = self.db.execute("SELECT %s FROM spans WHERE %s = ? ORDER BY start_ns" % (",".join(COLUMNS), where),
                                     (argument,))
            rows = cursor.fetchall()
        spans = []
        for row in rows:
            span = dict(zip(COLUMNS, row))
            for nested in ("attributes", "events", "resource"):
                span[nested] = json.loads(span[nested])
            spans.append(span)
        return spans

    def count(self):
        with self.lock:
            return self.db.execute("SELECT count(*) FROM spans").fetchone()[0]


class Handler(BaseHTTPRequestHandler):
    store = None  # set on the subclass each server gets

    def reply(self, code, body, content_type="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, code, document):
        self.reply(code, json.dumps(document).encode() + b"\n")

    def log_message(self, format, *args):
        pass  # one line per export would flood the journal; errors are logged below


class IngestHandler(Handler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            log.warning("refused an export to %s (%s): only protobuf traces on /v1/traces",
                        self.path, self.headers.get("Content-Type"))
            self.reply_json(404, {"error": "only POST /v1/traces with application/x-protobuf"})
            return
        if length > MAX_BODY:
            log.warning("refused an export of %d bytes from %s", length, self.client_address[0])
            self.reply_json(413, {"error": "export larger than %d bytes" % MAX_BODY})
            return
        body = self.rfile.read(length)
        try:
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            rows = list(rows_of(export))
        except Exception as error:  # a malformed export is the sender's fault: 400, not a crash
            log.warning("refused an undecodable export from %s: %s", self.client_address[0], error)
            self.reply_json(400, {"error": "not an OTLP ExportTraceServiceRequest"})
            return
        self.store.add(rows)
        self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


class QueryHandler(Handler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.reply_json(200, {"spans": self.store.count()})
        elif url.path.startswith("/traces/"):
            self.reply_json(200, {"spans": self.store.query("trace_id", url.path[len("/traces/"):].lower())})
        elif url.path == "/spans" and parse_qs(url.query).get("request_id"):
            self.reply_json(200, {"spans": self.store.query("request_id", parse_qs(url.query)["request_id"][0])})
        else:
            self.reply_json(404, {"error": "GET /traces/<trace id>, /spans?request_id=<id> or /healthz"})


def address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def serve(handler_class, listen, store):
    handler = type(handler_class.__name__, (handler_class,), {"store": store})
    server = ThreadingHTTPServer(listen, handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--ingest", type=address, default=("127.0.0.1", 4318), help="HOST:PORT of the OTLP listener")
    parser.add_argument("--query", type=address, default=("127.0.0.1", 4319), help="HOST:PORT of the query listener")
    parser.add_argument("--max-spans", type=int, default=200000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    store = Store(args.database, args.max_spans)
    serve(QueryHandler, args.query, store)
    _, thread = serve(IngestHandler, args.ingest, store)
    log.info("OTLP/HTTP on %s:%d, queries on %s:%d, at most %d spans in %s",
             *args.ingest, *args.query, args.max_spans, args.database)
    thread.join()


if __name__ == "__main__":
    main()
