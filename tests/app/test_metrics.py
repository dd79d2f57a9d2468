"""StatsD metrics as they leave the service: real UDP packets in the StatsD line format."""

import socket
import time

import pytest

from tests.support.ports import free_port
from tests.support.service import get


@pytest.fixture
def statsd_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    yield listener
    listener.close()


def received_lines(listener, at_least, within=5.0):
    """Lines until at least `at_least` came (the service sends once a second), then one
    more second for the last packets."""
    lines = []
    end = time.monotonic() + within
    while time.monotonic() < end and len(lines) < at_least:
        try:
            lines += listener.recv(65536).decode().splitlines()
        except socket.timeout:
            pass
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            lines += listener.recv(65536).decode().splitlines()
        except socket.timeout:
            pass
    return lines


def test_requests_latency_tickets_store_errors(start_service, statsd_listener):
    statsd = "127.0.0.1:%d" % statsd_listener.getsockname()[1]
    service = start_service("--statsd", statsd, "--statsd-prefix", "turnomatic.app1")
    for path in ["/turno/m", "/turno/m", "/turno/bad%2F", "/nope"]:
        get(service.base, path)
    down = start_service("--statsd", statsd, "--store", f"redis://127.0.0.1:{free_port()}/0",
                         env={"TURNOMATIC_STATSD_PREFIX": "turnomatic.app2"})
    assert get(down.base, "/turno/m")[0] == 503
    lines = received_lines(statsd_listener, at_least=12)
    counters = {}
    for line in lines:
        name, _, rest = line.partition(":")
        value, _, kind = rest.partition("|")
        if kind == "c":
            counters[name] = counters.get(name, 0) + int(value)
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
