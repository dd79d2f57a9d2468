"""The balancers can never lock an app process out: real waitress, the roles' own limits.

Only the balancers reach an app host (its firewall), and the kernel may hand every
one of their connections to the same process of the port. The balancer role bounds
them (docs/architecture.md, "Connection limits"): per balancer and app host, the
requests in progress (max_conns) and each worker's idle keep-alive cache, twice over
while a reload's old workers finish. This test holds that many connections, from the
two balancers of the lab and the production example, against one turnomatic process
run with the turnomatic role's connection limit and threads, half of them idle after
a request (a keep-alive cache) and half with a request head not yet finished (slow
writers), and checks that normal requests are still answered at once.

Before the limits were sized together the role's 100 connections per process were
fewer than the 2 x 2 x 32 idle keep-alive connections the balancers could cache:
a process stopped accepting, and new requests waited until waitress closed idle
connections after 120 s.
"""

import http.client
import socket
import time

from tests.support.ansible import role_defaults
from tests.support.service import get

BALANCERS = 2  # inventory/lab and inventory/production both have two
HELD_SECONDS = 2



def balancer_connections_to_one_app():
    """The most connections the balancers' defaults allow to one app host."""
    lb = role_defaults("balancer")
    per_balancer = lb["balancer_app_max_conns"] + lb["balancer_worker_processes"] * lb["balancer_keepalive_connections"]
    return 2 * BALANCERS * per_balancer


def test_the_balancers_most_connections_leave_an_app_process_answering(start_service):
    app = role_defaults("turnomatic")
    service = start_service("--connection-limit", str(app["turnomatic_connection_limit"]),
                            "--threads", str(app["turnomatic_threads"]))
    held = balancer_connections_to_one_app()
    connections = []
    try:
        for n in range(held):
            conn = socket.create_connection(("127.0.0.1", service.port), timeout=5)
            connections.append(conn)
            if n % 2:
                # A slow writer: a request head that never ends.
                conn.sendall(b"GET /turno/held HTTP/1.1\r\nHost: app\r\n")
            else:
                # An idle keep-alive connection, as a balancer worker caches it.
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: app\r\n\r\n")
        for conn in connections[::2]:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200"), "an idle-to-be connection was not served"

        time.sleep(HELD_SECONDS)
        for n in range(20):
            started = time.monotonic()
            try:
                status, _, body = get(service.base, f"/turno/normal-{n % 3}", timeout=5)
            except TimeoutError:
                raise AssertionError(f"request {n}: no answer within 5 s with {held} connections held") from None
            elapsed = time.monotonic() - started
            assert status == 200 and body["turno"] >= 1, (status, body)
            # Generous: a served request takes milliseconds; a locked-out one waits
            # for the 5 s timeout here (or waitress's 120 s channel timeout).
            assert elapsed < 1.0, f"request {n} took {elapsed:.2f} s with {held} connections held"
    finally:
        for conn in connections:
            conn.close()


def test_a_process_over_its_limit_stops_accepting(start_service):
    """The other side of the limit, so the test above cannot pass by accident: a process
    given fewer connections than the balancers may hold does lock new requests out."""
    held = balancer_connections_to_one_app()
    service = start_service("--connection-limit", str(held // 2), "--threads", "8")
    connections = [socket.create_connection(("127.0.0.1", service.port), timeout=5) for _ in range(held)]
    try:
        time.sleep(0.5)
        conn = http.client.HTTPConnection(service.base, timeout=1)
        started = time.monotonic()
        try:
            conn.request("GET", "/turno/locked-out")
            conn.getresponse().read()
            answered = True
        except (TimeoutError, socket.timeout):
            answered = False
        finally:
            conn.close()
        assert not answered, f"answered in {time.monotonic() - started:.2f} s beyond the connection limit"
    finally:
        for conn in connections:
            conn.close()
