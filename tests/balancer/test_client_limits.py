"""The balancer against slow, idle, greedy and malformed clients: the role's nginx.conf on real nginx.

In front of a real turnomatic process (waitress, memory store) with the role's
defaults: half-sent, silent, slow-body and idle keep-alive connections are closed
within seconds while normal requests are answered at once; one address cannot have
more than its share of requests in progress (JSON 429); when every app is at its
max_conns nginx answers JSON 503 without sending anything; the limit on all clients
together is on by default (JSON 429 with Retry-After); and every answer nginx or
waitress can give through the balancer is JSON.
"""

import json
import selectors
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.ansible import render_balancer_config, role_defaults
from tests.support.nginx import raw_exchange, running_nginx
from tests.support.paths import ROLES
from tests.support.ports import free_port
from tests.support.waiting import wait_for_port

APP = "127.0.0.3"
FAKE_APP = ROLES / "balancer" / "molecule" / "default" / "files" / "fake_app.py"
# The bounds this suite holds the role to (its defaults are 5 s and 15 s).
HEAD_CLOSED_WITHIN = 10.0
IDLE_CLOSED_WITHIN = 20.0



def start_app(host, port):
    app = role_defaults("turnomatic")
    process = subprocess.Popen(
        [sys.executable, "-m", "turnomatic", "serve", "--host", host, "--port", str(port),
         "--connection-limit", str(app["turnomatic_connection_limit"]), "--threads", str(app["turnomatic_threads"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_port(host, port)
    return process


@pytest.fixture(scope="module")
def balancer(tmp_path_factory):
    """The role's defaults in front of one real turnomatic process."""
    workdir = tmp_path_factory.mktemp("client-limits")
    app_port, port, status_port = free_port(APP), free_port("0.0.0.0"), free_port("127.0.0.1")
    conf = render_balancer_config(workdir, {"balancer_port": port, "balancer_status_port": status_port,
                                            "balancer_app_port": app_port}, {"app1": APP}).read_text()
    app = start_app(APP, app_port)
    try:
        with running_nginx(workdir, port):
            yield {"port": port, "conf": conf, "workdir": workdir}
    finally:
        app.terminate()
        app.wait(timeout=10)


def request(port, path, source="127.0.0.1", timeout=5):
    raw = f"GET {path} HTTP/1.1\r\nHost: turnomatic\r\nConnection: close\r\n\r\n".encode()
    return raw_exchange(port, raw, timeout=timeout, source=source)


def assert_json(status, headers, body):
    assert headers.get("content-type") == "application/json", (status, headers, body)
    assert isinstance(json.loads(body), dict), body


def open_connections(port, count, source, first_bytes):
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        if first_bytes:
            conn.sendall(first_bytes)
        conns.append(conn)
    return conns


def closed_by_server_within(conns, seconds):
    """The connections the server closed within `seconds`, and what each received before."""
    received = {conn: b"" for conn in conns}
    selector = selectors.DefaultSelector()
    for conn in conns:
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
    closed = set()
    deadline = time.monotonic() + seconds
    while len(closed) < len(conns) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if chunk:
                received[key.fileobj] += chunk
            else:
                closed.add(key.fileobj)
                selector.unregister(key.fileobj)
    selector.close()
    return closed, received


def test_slow_and_idle_clients_are_cut_off_and_the_others_answered_at_once(balancer):
    port = balancer["port"]
    half_sent = open_connections(port, 150, "127.0.0.20", b"GET /turno/slow HTTP/1.1\r\nHost: turnomatic\r\n")
    silent = open_connections(port, 150, "127.0.0.21", b"")
    slow_body = open_connections(port, 20, "127.0.0.22",
                                 b"POST /turno/slow HTTP/1.1\r\nHost: turnomatic\r\nContent-Length: 100\r\n\r\nabc")
    keepalive = open_connections(port, 30, "127.0.0.23", b"GET /healthz HTTP/1.1\r\nHost: turnomatic\r\n\r\n")
    opened = time.monotonic()
    try:
        for n in range(20):
            started = time.monotonic()
            status, headers, body = request(port, f"/turno/normal-{n % 4}")
            elapsed = time.monotonic() - started
            assert status == 200 and json.loads(body)["turno"] >= 1, (status, body)
            assert elapsed < 1.0, f"request {n} took {elapsed:.2f} s"

        cut, received = closed_by_server_within(half_sent + silent + slow_body, HEAD_CLOSED_WITHIN)
        assert len(cut) == len(half_sent + silent + slow_body), (
            f"{len(half_sent + silent + slow_body) - len(cut)} half-sent, silent or slow-body connections "
            f"still open after {time.monotonic() - opened:.1f} s")
        # nginx closes them without an answer (its 408 is never sent); anything sent must be JSON.
        for data in received.values():
            if data:
                head, _, body = data.partition(b"\r\n\r\n")
                assert b"application/json" in head, data

        cut, _ = closed_by_server_within(keepalive, IDLE_CLOSED_WITHIN - (time.monotonic() - opened))
        assert len(cut) == len(keepalive), f"idle keep-alive connections open after {time.monotonic() - opened:.1f} s"
    finally:
        for conn in half_sent + silent + slow_body + keepalive:
            conn.close()


@pytest.mark.parametrize(("name", "raw", "status"), [
    ("raw non-ASCII byte in the path (waitress: plain-text 400)", b"GET /turno/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("raw non-ASCII byte in the query", b"GET /turno/a?q=\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("control byte in the path", b"GET /turno/a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("control byte in a header (waitress: plain-text 400)", b"GET /turno/ctl-header HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 200),
    ("DEL in a header (waitress: plain-text 400)", b"GET /turno/del-header HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 200),
    ("header line over one buffer (nginx: HTML 494)", b"GET /turno/a HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", 400),
    ("cookie over one buffer (nginx: HTML 494)", b"GET /turno/a HTTP/1.1\r\nHost: x\r\nCookie: " + b"a" * 20000 + b"\r\n\r\n", 400),
    ("request line too long", b"GET /turno/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("body too large", b"POST /turno/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
    ("unknown HTTP version (nginx: HTML 505)", b"GET /turno/a HTTP/2.7\r\nHost: x\r\n\r\n", 505),
    ("TRACE", b"TRACE /turno/a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("not HTTP", b"GARBAGE\r\n\r\n", 400),
])
def test_every_answer_through_the_balancer_is_json(balancer, name, raw, status):
    got, headers, body = raw_exchange(balancer["port"], raw)
    assert got == status, (name, got, body)
    assert_json(got, headers, body)


@pytest.fixture(scope="module")
def hanging(tmp_path_factory):
    """The role's defaults (but the total limit) in front of one app that reads each request and never answers."""
    workdir = tmp_path_factory.mktemp("hanging")
    app_port, port, status_port = free_port("127.0.0.5"), free_port("0.0.0.0"), free_port("127.0.0.1")
    render_balancer_config(workdir, {"balancer_port": port, "balancer_status_port": status_port,
                                     "balancer_app_port": app_port, "balancer_read_timeout": "2s",
                                     # 90 requests at once are above its burst: not what these tests are about.
                                     "balancer_total_rate_limit": 0}, {"hang": "127.0.0.5"})
    app = subprocess.Popen([sys.executable, FAKE_APP, f"127.0.0.5:{app_port}=hang", "--hang-seconds", "4",
                            "--lifetime", "120"])
    try:
        wait_for_port("127.0.0.5", app_port)
        with running_nginx(workdir, port):
            yield {"port": port, "app": f"127.0.0.5:{app_port}"}
    finally:
        app.terminate()
        app.wait(timeout=10)


def reads(hanging):
    host, port = hanging["app"].split(":")
    status, _, body = raw_exchange(int(port), b"GET /__count HTTP/1.1\r\nHost: x\r\n\r\n", host=host)
    return json.loads(body)[hanging["app"]]


def concurrent_requests(port, sources, each):
    """`each` requests at once from every source address; (status, elapsed, headers, body) per request."""
    def one(source):
        started = time.monotonic()
        status, headers, body = request(port, "/turno/hung", source=source, timeout=10)
        return status, time.monotonic() - started, headers, body

    with ThreadPoolExecutor(max_workers=len(sources) * each) as pool:
        return list(pool.map(one, [source for source in sources for _ in range(each)]))


def test_one_address_has_a_bounded_number_of_requests_in_progress(hanging):
    limit = role_defaults("balancer")["balancer_client_connection_limit"]
    before = reads(hanging)
    results = concurrent_requests(hanging["port"], ["127.0.0.30"], limit + 8)
    limited = [r for r in results if r[0] == 429]
    assert len(limited) == 8, sorted(r[0] for r in results)
    for status, elapsed, headers, body in limited:
        assert elapsed < 1.0 and headers.get("retry-after") == "1"
        assert_json(status, headers, body)
    assert reads(hanging) - before == limit
    assert all(r[0] == 504 for r in results if r[0] != 429)


def test_every_app_at_max_conns_is_a_503_that_sent_nothing(hanging):
    max_conns = role_defaults("balancer")["balancer_app_max_conns"]
    sources = [f"127.0.0.{n}" for n in range(40, 43)]
    each = (max_conns + 24) // len(sources) + 1
    before = reads(hanging)
    results = concurrent_requests(hanging["port"], sources, each)
    busy = [r for r in results if r[0] == 503]
    assert reads(hanging) - before == max_conns
    assert len(busy) == len(results) - max_conns, sorted((r[0], round(r[1], 1)) for r in results)
    for status, elapsed, headers, body in busy:
        assert elapsed < 1.0
        assert_json(status, headers, body)
        assert "nothing was counted" in json.loads(body)["error"]


def test_the_total_limit_is_on_by_default_and_answers_json_429(tmp_path):
    # Its default: the measured rate of one app host x app hosts / (balancers - 1): the
    # balancer that takes over a dead one's virtual address must carry its load too.
    conf = render_balancer_config(tmp_path, {}, {"app1": "127.0.0.3", "app2": "127.0.0.4"}, balancers=2).read_text()
    rate = role_defaults("balancer")["balancer_app_host_rate"]
    assert f"rate={2 * rate}r/s;" in conf and f"burst={2 * rate // 10} nodelay;" in conf

    # At the limit: 10 requests per second for all clients together, from 30 addresses at once.
    app_port, port, status_port = free_port(APP), free_port("0.0.0.0"), free_port("127.0.0.1")
    render_balancer_config(tmp_path, {"balancer_port": port, "balancer_status_port": status_port,
                                      "balancer_app_port": app_port, "balancer_app_host_rate": 10}, {"app1": APP})
    app = start_app(APP, app_port)
    try:
        with running_nginx(tmp_path, port):
            started = time.monotonic()
            results = concurrent_requests(port, [f"127.0.1.{n}" for n in range(1, 31)], 1)
            elapsed = time.monotonic() - started
    finally:
        app.terminate()
        app.wait(timeout=10)
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(served) + len(refused) == len(results), sorted(r[0] for r in results)
    assert 1 <= len(served) <= 10 * elapsed + 1 + 1, (len(served), elapsed)
    for status, took, headers, body in refused:
        assert took < 1.0 and headers.get("retry-after") == "1"
        assert_json(status, headers, body)
    # Every served one got a number; a refusal took none.
    assert sorted(json.loads(r[3])["turno"] for r in served) == list(range(1, len(served) + 1))
