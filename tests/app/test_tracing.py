"""Traces: turnomatic exporting over OTLP/HTTP to a receiver started by the test
(otlp_receiver.py decodes the protobuf), with a real redis-server.

Every request has its server span (route, id, status, outcome, the balancer's request id)
and, for an increment, a Redis child span in the same trace; a failure's log line names
its trace; the x-honeycomb-team header from OTEL_EXPORTER_OTLP_HEADERS arrives; a
client's traceparent is joined; a dead collector neither fails nor slows a request.
"""

import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.otlp_receiver import OTLPReceiver
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.service import get
from tests.support.waiting import wait_for

MAX_TURNO = 2**53 - 1
TEAM_KEY = "test-team-key-0123456789"


@pytest.fixture
def receiver():
    receiver = OTLPReceiver()
    yield receiver
    receiver.stop()


def tracing_env(endpoint, **more):
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-honeycomb-team={TEAM_KEY}",
        "OTEL_SERVICE_NAME": "turnomatic-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
        **more,
    }


def request(base, path, headers=None, connection=None):
    own = connection is None
    if own:
        connection = http.client.HTTPConnection(base, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        if own:
            connection.close()


def server_spans(receiver, count):
    """The server spans of /turno requests (not the start's /healthz probes)."""

    def turno_spans():
        return [s for s in receiver.received()
                if s.kind == Span.SPAN_KIND_SERVER and s.attributes["url.path"].startswith("/turno/")]

    wait_for(lambda: len(turno_spans()) >= count, 10, f"{count} server spans at the receiver")
    return turno_spans()


def test_every_request_has_its_server_span_and_redis_child_span(start_service, redis_server, redis_client, receiver):
    redis_client.set("turno:full", MAX_TURNO)
    service = start_service("--store", redis_server.url,
                            env=tracing_env(receiver.endpoint, OTEL_TRACES_SAMPLER="parentbased_always_on"))
    tickets = 30
    for n in range(tickets):
        status, body = request(service.base, f"/turno/traced{n % 3}", {"X-Request-ID": f"req-{n:04d}"})
        assert status == 200
    assert request(service.base, "/turno/full", {"X-Request-ID": "req-full"})[0] == 409
    assert request(service.base, "/turno/-bad", {"X-Request-ID": "req-bad"})[0] == 400

    spans = server_spans(receiver, tickets + 2)
    assert len(spans) == tickets + 2, "one server span per request, no more"
    by_request = {span.attributes["http.request.header.x-request-id"][0]: span for span in spans}
    children = {}
    for span in receiver.received():
        if span.kind == Span.SPAN_KIND_CLIENT:
            children.setdefault((span.trace_id, span.parent_span_id), []).append(span)

    for n in range(tickets):
        span = by_request[f"req-{n:04d}"]
        assert span.name == "GET /turno/<id>"
        assert span.attributes["http.route"] == "/turno/<id>"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["turnomatic.id"] == f"traced{n % 3}"
        assert span.attributes["turnomatic.outcome"] == "ticket"
        assert span.attributes["turnomatic.turno"] == n // 3 + 1
        assert span.resource["service.name"] == "turnomatic-test"
        assert span.headers["x-honeycomb-team"] == TEAM_KEY
        [redis_span] = children[(span.trace_id, span.span_id)]
        assert redis_span.name.startswith("redis ")
        assert redis_span.attributes["db.system"] == "redis"

    full = by_request["req-full"]
    assert (full.attributes["http.response.status_code"], full.attributes["turnomatic.outcome"]) == (409, "counter_exhausted")
    assert full.attributes["turnomatic.id"] == "full"
    assert [name for name, _ in full.events] == ["exception"]
    assert (full.trace_id, full.span_id) in children
    bad = by_request["req-bad"]
    assert (bad.attributes["http.response.status_code"], bad.attributes["turnomatic.outcome"]) == (400, "bad_id")
    assert (bad.trace_id, bad.span_id) not in children, "a bad id never reaches Redis"

    # A failed request's log line leads to its trace; the API key is never logged.
    log = service.log()
    assert "tracing to http://127.0.0.1:" in log and TEAM_KEY not in log
    for span in (full, bad):
        assert re.search(rf"-> (409|400) .*\[trace {span.trace_id}\]", log), log


def test_a_timeout_is_traced_as_may_have_run_with_the_exception(start_service, redis_server, redis_client, receiver):
    service = start_service("--store", redis_server.url + "?socket_timeout=0.3",
                            env=tracing_env(receiver.endpoint, OTEL_TRACES_SAMPLER_ARG="1"))
    assert request(service.base, "/turno/slow")[0] == 200
    sleeper = threading.Thread(target=redis_server.client().execute_command, args=("DEBUG", "SLEEP", "1"))
    sleeper.start()
    time.sleep(0.2)
    status, body = request(service.base, "/turno/slow")
    sleeper.join()
    assert (status, body["error"]) == (503, "store_unavailable")
    span = server_spans(receiver, 2)[-1]
    assert span.attributes["turnomatic.outcome"] == "may_have_run"
    assert span.status_code == Status.STATUS_CODE_ERROR
    [(event, attributes)] = span.events
    assert event == "exception" and attributes["exception.type"].endswith("StoreUnavailable")
    [redis_span] = [s for s in receiver.received() if s.parent_span_id == span.span_id]
    assert redis_span.status_code == Status.STATUS_CODE_ERROR
    assert f"[trace {span.trace_id}]" in service.log()


def test_a_client_traceparent_is_joined(start_service, redis_server, redis_client, receiver):
    """At the default sampling ratio too: the client sampled the trace, so it is kept whole."""
    service = start_service("--store", redis_server.url, env=tracing_env(receiver.endpoint))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for n in range(10):
        assert request(service.base, "/turno/joined", {"traceparent": f"00-{trace_id}-{parent_id}-01"})[0] == 200
    spans = server_spans(receiver, 10)
    assert {(span.trace_id, span.parent_span_id) for span in spans} == {(trace_id, parent_id)}
    assert len(spans) == 10


@pytest.mark.parametrize("sampler", [
    {},  # the app's default sampler, whose decision the app takes by one comparison
    {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"},  # the same, named as the turnomatic role does
    {"OTEL_TRACES_SAMPLER": "traceidratio"},  # another sampler, the same decisions here: the SDK's is asked
], ids=["default", "named", "asked"])
def test_the_ratio_sampler_keeps_its_share_and_unsampled_failures_name_their_trace(
        start_service, redis_server, redis_client, receiver, sampler):
    """At a ratio of 1/2, about half the requests are traced, each with the trace id the
    sampler decided on (the ratio sampler keeps the ids whose lower 64 bits fall below
    ratio x 2^64), and the log line of a failed request that was not traced names the
    trace id the sampler refused. The app has the sampler's decision before making any
    span (an unsampled request gets none): were the span given a fresh id, it would be sampled
    a second time, a quarter of the requests instead of half."""
    service = start_service("--store", redis_server.url, env=tracing_env(receiver.endpoint, OTEL_TRACES_SAMPLER_ARG="0.5", **sampler))
    tickets, bad = 200, 40
    connection = http.client.HTTPConnection(service.base, timeout=10)
    for n in range(tickets):
        assert request(service.base, f"/turno/ratio{n % 4}", connection=connection)[0] == 200
    for n in range(bad):
        assert request(service.base, f"/turno/-bad{n}", connection=connection)[0] == 400
    # A sampled traceparent is traced (by traceidratio too: the ratio keeps its id), and
    # the exporter keeps the order: once this last request's span has arrived, so have
    # all the others.
    marker = "5bf92f3577b34da613ce929d0e0e4736"
    assert request(service.base, "/turno/marker", {"traceparent": f"00-{marker}-00f067aa0ba902b7-01"},
                   connection=connection)[0] == 200
    connection.close()
    wait_for(lambda: any(s.trace_id == marker for s in receiver.received()), 10, "the last request's span")
    spans = [s for s in server_spans(receiver, 1) if s.trace_id != marker]
    children = {s.parent_span_id for s in receiver.received() if s.kind == Span.SPAN_KIND_CLIENT}

    def kept_by_the_ratio(trace_id):
        return int(trace_id, 16) & (2**64 - 1) < 2**63

    traced_tickets = [s for s in spans if s.attributes["turnomatic.outcome"] == "ticket"]
    # Half of 200 is 100, standard deviation 7: 70..130 is over four of them either way.
    assert 70 <= len(traced_tickets) <= 130, len(traced_tickets)
    assert all(kept_by_the_ratio(s.trace_id) for s in spans)
    assert all(s.span_id in children for s in traced_tickets)
    traced_bad = {s.attributes["url.path"]: s.trace_id for s in spans if s.attributes["turnomatic.outcome"] == "bad_id"}
    assert 0 < len(traced_bad) < bad
    log = service.log()
    for n in range(bad):
        path = f"/turno/-bad{n}"
        [(trace_id, not_sampled)] = re.findall(rf"GET '{path}' -> 400 .*\[trace ([0-9a-f]{{32}})(, not sampled)?\]", log)
        if path in traced_bad:
            assert (trace_id, not_sampled) == (traced_bad[path], "")
        else:
            assert not_sampled and not kept_by_the_ratio(trace_id), (path, trace_id)


def test_tracing_is_off_without_an_endpoint(start_service, redis_server, redis_client, receiver):
    """The other OTEL_* variables alone send nothing (and cost nothing: no SDK is loaded)."""
    env = tracing_env("", OTEL_TRACES_SAMPLER="always_on")
    service = start_service("--store", redis_server.url, env=env)
    assert request(service.base, "/turno/-bad")[0] == 400
    time.sleep(0.5)
    assert receiver.received() == []
    assert "[trace" not in service.log()


@pytest.mark.parametrize("sampler", [{}, {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}, {"OTEL_TRACES_SAMPLER": ""}],
                         ids=["unset", "named", "empty"])
def test_without_a_ratio_the_ratio_sampler_traces_one_request_in_a_hundred(start_service, redis_server, receiver, sampler):
    """The app's 1 %, where the SDK's parentbased_traceidratio would trace everything
    without an OTEL_TRACES_SAMPLER_ARG; an empty variable is an unset one."""
    env = tracing_env(receiver.endpoint, **sampler)
    env.pop("OTEL_TRACES_SAMPLER_ARG", None)
    service = start_service("--store", redis_server.url, env=env)
    assert "sampler ParentBased{root:TraceIdRatioBased{0.01}" in service.log()


def latencies(base, count):
    # 1 s: a request that waited for the exporter would wait its 2 s timeout or retries.
    connection = http.client.HTTPConnection(base, timeout=1)
    times = []
    for n in range(count):
        started = time.perf_counter()
        status, body = request(base, f"/turno/dead{n % 5}", connection=connection)
        times.append(time.perf_counter() - started)
        assert status == 200, body
    connection.close()
    return times


@pytest.fixture
def black_hole():
    """A port that accepts connections (the kernel's backlog) but never answers: a hung collector."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield "http://127.0.0.1:%d" % listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("collector", ["refused", "hung"])
def test_a_dead_collector_neither_fails_nor_slows_requests(start_service, redis_server, redis_client, black_hole, collector):
    """Every request traced (100 %) into a queue far smaller than the run: the exporter
    retries and times out in its own thread, spans beyond the queue are dropped, and the
    requests answer as fast as with tracing off. The failed exports and the drops are
    logged a few times, not once per batch or per span."""
    endpoint = black_hole if collector == "hung" else f"http://127.0.0.1:{free_port()}"
    traced = start_service("--store", redis_server.url, env=tracing_env(
        endpoint, OTEL_TRACES_SAMPLER="always_on", OTEL_BSP_MAX_QUEUE_SIZE="64", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16",
        OTEL_EXPORTER_OTLP_TIMEOUT="2"))
    untraced = start_service("--store", redis_server.url)
    count = 400
    rounds = {"traced": [], "untraced": []}
    for _ in range(2):  # alternating, so that other work on the machine hits both alike
        rounds["untraced"] += latencies(untraced.base, count)
        rounds["traced"] += latencies(traced.base, count)
    traced_median, untraced_median = (statistics.median(rounds[name]) for name in ("traced", "untraced"))
    traced_worst = sorted(rounds["traced"])[int(len(rounds["traced"]) * 0.99)]
    untraced_worst = sorted(rounds["untraced"])[int(len(rounds["untraced"]) * 0.99)]
    # Generous bounds (a shared machine): a request that waited for the exporter would
    # take its connect or its 2 s timeout, far beyond these.
    assert traced_median < 2 * untraced_median + 0.002, (traced_median, untraced_median)
    assert traced_worst < 3 * untraced_worst + 0.05, (traced_worst, untraced_worst)
    assert get(traced.base, "/readyz")[0] == 200
    # A hung collector's first export fails only at its 2 s timeout, which a fast run of
    # the requests can beat.
    wait_for(lambda: "Failed to export" in traced.log(), 10, "a failed export logged")
    log = traced.log()
    assert 1 <= log.count("Failed to export") <= 2, log[-3000:]
    assert log.count("Queue full") <= 2, log[-3000:]


def test_the_last_spans_leave_at_exit(start_service, redis_server, redis_client, receiver):
    """The batch would wait 5 s (OTEL_BSP_SCHEDULE_DELAY's default): SIGTERM flushes it."""
    env = {**tracing_env(receiver.endpoint, OTEL_TRACES_SAMPLER="always_on"), "OTEL_BSP_SCHEDULE_DELAY": "5000"}
    service = start_service("--store", redis_server.url, env=env)
    for _ in range(3):
        assert request(service.base, "/turno/last")[0] == 200
    service.stop()
    assert len([s for s in receiver.received() if s.attributes.get("turnomatic.id") == "last"]) == 3


def test_a_hung_collector_does_not_hold_up_a_stop(start_service, redis_server, redis_client, black_hole):
    """SIGTERM while an export hangs: the process still stops within seconds (the SDK's
    own exit hook would wait up to 30 s for it), so a rolling restart is not held up."""
    service = start_service("--store", redis_server.url, env=tracing_env(
        black_hole, OTEL_TRACES_SAMPLER="always_on", OTEL_BSP_SCHEDULE_DELAY="200"))
    for _ in range(20):
        assert request(service.base, "/turno/stop")[0] == 200
    time.sleep(1)  # an export is under way, hung on the black hole for its 10 s timeout
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 4


def test_trace_context_crosses_the_balancer(start_service, redis_server, redis_client, receiver, tmp_path):
    """Through the balancer role's nginx.conf: a client's traceparent reaches the app and
    its span joins that trace; every span carries the balancer's $request_id (a client's
    own X-Request-ID is replaced), and the access log line carries both."""
    service = start_service("--store", redis_server.url,
                            env=tracing_env(receiver.endpoint, OTEL_TRACES_SAMPLER="parentbased_always_on"))
    with Processes(tmp_path) as processes:
        balancer = processes.balancer(service.port, {}).removeprefix("http://")
        trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        traceparent = f"00-{trace_id}-{parent_id}-01"
        assert request(balancer, "/turno/via-lb", {"traceparent": traceparent})[0] == 200
        assert request(balancer, "/turno/via-lb", {"X-Request-ID": "forged-by-the-client"})[0] == 200
        access_log = tmp_path / f"balancer-{service.port}" / "turnomatic.access.log"
        # nginx writes a request's log line after its answer has left: wait for both lines.
        wait_for(lambda: len(access_log.read_text().splitlines()) >= 2, 10, "both requests in the access log")
        log = [json.loads(line) for line in access_log.read_text().splitlines()]
    joined, own = sorted(server_spans(receiver, 2), key=lambda span: span.attributes["turnomatic.turno"])
    assert (joined.trace_id, joined.parent_span_id) == (trace_id, parent_id)
    assert own.trace_id != trace_id and own.parent_span_id == ""
    entries = [entry for entry in log if entry["request"].startswith("GET /turno/via-lb ")]
    assert [entry["traceparent"] for entry in entries] == [traceparent, ""]
    for span, entry in zip((joined, own), entries):
        assert re.fullmatch("[0-9a-f]{32}", entry["request_id"])
        assert span.attributes["http.request.header.x-request-id"] == (entry["request_id"],)


@pytest.mark.parametrize("env,message", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "needs the package opentelemetry-exporter-otlp-proto-grpc"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "'http/json' is not supported"),
    ({"OTEL_TRACES_SAMPLER_ARG": "10"}, "must be a ratio from 0 to 1"),
    # Named, in any case: the SDK would trace everything.
    ({"OTEL_TRACES_SAMPLER": "PARENTBASED_TRACEIDRATIO", "OTEL_TRACES_SAMPLER_ARG": "x"}, "must be a ratio from 0 to 1"),
])
def test_a_setting_it_cannot_honour_stops_the_start(env, message):
    """Rather than a service that silently traces nothing (or everything)."""
    result = subprocess.run(
        [sys.executable, "-m", "turnomatic", "serve", "--port", str(free_port())],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", **env},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
