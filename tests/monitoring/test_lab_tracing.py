"""Traces on the lab fleet: a request through the DNS name from the client host
reaches the trace receiver on the monitoring host (roles/otlp_receiver) as a
trace that joins the client's traceparent and carries the balancer's request id.

The lab samples at the production default (1 %, parent-based), so the client
sends a sampled W3C traceparent: the app must keep it whatever its own ratio.
"""
import json
import secrets
import urllib.request

import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.lab
RECEIVER_HOST = "mon1"
QUERY_PORT = 4319
SERVICE_URL = "http://turnomatic.lab:7017"
ACCESS_LOG = "/var/log/nginx/turnomatic.access.log"
SERVER_SPAN = 2  # SpanKind SERVER in OTLP's enum
# The app's batch processor exports every few seconds (OTEL_BSP_SCHEDULE_DELAY, 5 s by default).
EXPORT_TIMEOUT = 30


def query(fleet, path):
    with urllib.request.urlopen(f"http://{fleet.address(RECEIVER_HOST)}:{QUERY_PORT}{path}", timeout=10) as answer:
        return json.load(answer)["spans"]


def test_a_request_through_the_dns_name_is_a_trace_with_the_balancers_request_id(fleet):
    trace_id, client_span_id = secrets.token_hex(16), secrets.token_hex(8)
    ticket_id = f"tracing-{secrets.token_hex(4)}"
    # The client host has Python, not curl.
    request = (f"import urllib.request; print(urllib.request.urlopen(urllib.request.Request("
               f"'{SERVICE_URL}/turno/{ticket_id}', headers={{'traceparent': '00-{trace_id}-{client_span_id}-01'}}), "
               f"timeout=10).read().decode())")
    answer = fleet.ssh("client1", f'python3 -c "{request}"').stdout
    assert json.loads(answer) == {"id": ticket_id, "turno": 1}

    def trace():
        spans = query(fleet, f"/traces/{trace_id}")
        return spans if any(span["kind"] == SERVER_SPAN for span in spans) else None

    spans = wait_until(trace, timeout=EXPORT_TIMEOUT, interval=1)
    assert spans, f"the trace {trace_id} was not in the receiver within {EXPORT_TIMEOUT} s"
    server = next(span for span in spans if span["kind"] == SERVER_SPAN)
    # Joined: the app's server span is the child of the client's span, in the client's trace.
    assert server["parent_span_id"] == client_span_id
    assert server["attributes"]["http.route"] == "/turno/<id>"
    assert server["attributes"]["http.response.status_code"] == 200
    assert any(span["parent_span_id"] == server["span_id"] and span["name"].startswith("redis") for span in spans), spans

    # The balancer's request id is on the span, and it is the one in that balancer's access log.
    request_id = server["request_id"]
    assert request_id and len(request_id) == 32, server["attributes"]
    logged = [json.loads(line) for lb in fleet.lab.group("lb")
              for line in fleet.ssh(lb, f"grep -F {trace_id} {ACCESS_LOG} || true").stdout.splitlines()]
    assert [entry["request_id"] for entry in logged] == [request_id]
    # And the receiver finds the trace from the log line's request id.
    assert [span["trace_id"] for span in query(fleet, f"/spans?request_id={request_id}")] == [trace_id]
