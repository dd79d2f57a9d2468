"""StatsD metrics as they leave the service: real UDP packets in the StatsD line format."""

import socket
import time

import pytest

from tests.support.ports import free_port
from tests.support.service import get
from tests.support.statsd import counters_from, received_lines, udp_listener


@pytest.fixture
def statsd_listener():
    listener = udp_listener(0.5)
    yield listener
    listener.close()


def test_requests_latency_tickets_store_errors(start_service, statsd_listener):
    statsd = "127.0.0.1:%d" % statsd_listener.getsockname()[1]
    service = start_service("--statsd", statsd, "--statsd-prefix", "turnomatic.app1")
    for path in ["/turno/m", "/turno/m", "/turno/bad%2F", "/nope"]:
        get(service.base, path)
    down = start_service("--statsd", statsd, "--store", f"redis://127.0.0.1:{free_port()}/0",
                         env={"TURNOMATIC_STATSD_PREFIX": "turnomatic.app2"})
    assert get(down.base, "/turno/m")[0] == 503
    lines = received_lines(statsd_listener, at_least=12)
    counters = counters_from(lines)
    assert counters.get("turnomatic.app1.requests.200", 0) >= 3, lines  # 2 tickets and a /healthz probe
    assert counters["turnomatic.app1.tickets"] == 2
    assert counters["turnomatic.app1.requests.400"] == 1
    assert counters["turnomatic.app1.requests.404"] == 1
    assert counters["turnomatic.app2.requests.503"] == 1
    assert counters["turnomatic.app2.store.errors"] == 1
    assert "turnomatic.app2.tickets" not in counters
    timers = [line for line in lines if line.startswith("turnomatic.app1.latency:")]
    assert len(timers) >= 5  # one per request, the /healthz probes at start included
    assert all(line.endswith("|ms") and float(line.split(":")[1].split("|")[0]) >= 0 for line in timers)


def test_metrics_to_nowhere_never_fail_a_request(start_service):
    """Nothing listens on the StatsD port: UDP sends are fire and forget."""
    service = start_service("--statsd", f"127.0.0.1:{free_port()}")
    for n in range(1, 51):
        assert get(service.base, "/turno/quiet")[2]["turno"] == n
        if n == 25:
            time.sleep(1.2)  # a flush in between


def test_the_flusher_survives_an_error_and_goes_on(statsd_listener, caplog):
    """A flush that raises (here a metric name StatsD's ASCII wire format cannot carry)
    is logged, and the next interval's figures are sent: the thread did not die."""
    from turnomatic import metrics

    buffer = metrics.MetricsBuffer("127.0.0.1", statsd_listener.getsockname()[1], "guard")
    buffer.count("tick\u00e9t")
    time.sleep(metrics.FLUSH_SECONDS * 1.5)
    buffer.count("tickets")
    counters = counters_from(received_lines(statsd_listener, at_least=1))
    assert counters.get("guard.tickets") == 1, counters
    assert "metrics not sent to 127.0.0.1" in caplog.text


def test_the_buffer_is_bounded_and_counts_what_it_drops(statsd_listener):
    """Latency samples beyond MAX_LATENCY_SAMPLES in one interval are dropped and counted
    (metrics.dropped), so that a stuck or slow flusher cannot grow the process's memory."""
    from turnomatic import metrics

    buffer = metrics.MetricsBuffer("127.0.0.1", statsd_listener.getsockname()[1], "bound")
    # A burst of about 1,500 packets: a receive buffer big enough that none is lost (root may force it).
    SO_RCVBUFFORCE = 33  # Linux's value; Python's socket module does not name it
    statsd_listener.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * 1024 * 1024)
    total = 2 * metrics.MAX_LATENCY_SAMPLES
    for _ in range(total):
        buffer.add_request("200", 1.0)
    lines = received_lines(statsd_listener, at_least=total)
    counters = counters_from(lines)
    assert counters["bound.requests.200"] == total
    dropped = counters.get("bound.metrics.dropped", 0)
    assert dropped >= metrics.MAX_LATENCY_SAMPLES // 2, counters  # at most one flush fell in between
    timers = sum(1 for line in lines if line.startswith("bound.latency:"))
    assert timers + dropped == total
