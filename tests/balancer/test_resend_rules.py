"""The balancer's nginx.conf, rendered from the role's template, on real nginx.

nginx runs on loopback in front of real HTTP upstreams (the Molecule scenario's
fake_app.py) that each behave like one kind of broken app: one drops the
connection after reading the request, one never answers, one address refuses
connections, one answers. The property under test is the counter's: a request
that may have reached an app is never sent to a second one (that would skip a
number), while a request that never left nginx goes to another app.

The Molecule scenario (roles/balancer/molecule) runs the same checks on a VM
installed by the role; this suite gives the same answer in seconds on loopback.
"""

import http.client
import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.ansible import render_balancer_config
from tests.support.nginx import running_nginx
from tests.support.paths import ROLES
from tests.support.ports import free_port
from tests.support.waiting import wait_for_port

FAKE_APP = ROLES / "balancer" / "molecule" / "default" / "files" / "fake_app.py"

APPS = {"fake-drop": "127.0.0.2", "fake-answer": "127.0.0.3", "fake-refuse": "127.0.0.4", "fake-hang": "127.0.0.5"}
MODES = {"fake-drop": "drop", "fake-answer": "answer", "fake-hang": "hang"}
RATE_LIMIT = 20
RATE_LIMIT_BURST = 20


@pytest.fixture(scope="module")
def balancer(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("balancer")
    app_port = free_port(*APPS.values())
    # nginx listens on every address: the port must be free on all of them.
    port, status_port = free_port("0.0.0.0"), free_port("127.0.0.1")
    render_balancer_config(
        workdir,
        {
            "balancer_port": port,
            "balancer_status_port": status_port,
            "balancer_app_port": app_port,
            "balancer_read_timeout": "1s",
            "balancer_fail_timeout": "1s",
            "balancer_rate_limit": RATE_LIMIT,
            "balancer_rate_limit_burst": RATE_LIMIT_BURST,
        },
        app_hosts=APPS,
    )
    listeners = [f"{APPS[name]}:{app_port}={mode}" for name, mode in MODES.items()]
    apps = subprocess.Popen([sys.executable, FAKE_APP, *listeners, "--hang-seconds", "5", "--lifetime", "300"])
    try:
        for name in MODES:
            wait_for_port(APPS[name], app_port)
        with running_nginx(workdir, port):
            yield {"port": port, "status_port": status_port, "app_port": app_port, "workdir": workdir}
    finally:
        apps.terminate()
        apps.wait(timeout=10)


def get(port, path, method="GET", source="127.0.0.1", timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def reads_per_app(balancer):
    """Requests each fake app read, from the answering one's control endpoint."""
    conn = http.client.HTTPConnection(APPS["fake-answer"], balancer["app_port"], timeout=5)
    conn.request("GET", "/__count")
    counts = json.loads(conn.getresponse().read())
    conn.close()
    return {name: counts[f"{APPS[name]}:{balancer['app_port']}"] for name in MODES}


def access_log(balancer):
    lines = (balancer["workdir"] / "turnomatic.access.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_no_request_reaches_two_apps_and_unsent_ones_are_resent(balancer):
    before = reads_per_app(balancer)
    statuses = []
    for _ in range(16):
        status, content_type, body = get(balancer["port"], "/turno/resend-rules")
        assert content_type == "application/json"
        assert json.loads(body)
        statuses.append(status)
    reads = {name: count - before[name] for name, count in reads_per_app(balancer).items()}

    # Every request was read by exactly one app: none twice (no skipped number),
    # and the ones sent to the refusing address went on to another app.
    assert sum(reads.values()) == len(statuses), (reads, statuses)
    assert statuses.count(200) == reads["fake-answer"]
    assert statuses.count(502) == reads["fake-drop"] >= 1
    assert statuses.count(504) == reads["fake-hang"] >= 1

    entries = [entry for entry in access_log(balancer) if entry["request"].startswith("GET /turno/resend-rules ")]
    assert len(entries) == len(statuses)
    refused = f"{APPS['fake-refuse']}:{balancer['app_port']}"
    resent = [entry for entry in entries if entry["upstream"].startswith(refused + " : ")]
    assert resent, "no request met the refusing address first; the scenario did not exercise a resend"
    for entry in entries:
        sent = [int(value) for value in entry["upstream_bytes_sent"].replace(":", ",").split(",")]
        assert sum(1 for value in sent if value > 0) <= 1, entry


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /turno/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"TRACE /turno/x HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
)
def test_errors_of_nginx_itself_have_json_bodies(balancer, raw, status):
    with socket.create_connection(("127.0.0.1", balancer["port"]), timeout=5) as conn:
        conn.sendall(raw)
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode()
    assert b"Content-Type: application/json" in head
    assert b"Cache-Control: no-store" in head
    assert json.loads(body) == {"error": json.loads(body)["error"], "status": status}


def test_a_client_over_its_rate_gets_json_429(balancer):
    # From an address of its own: the limit is per client address.
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: get(balancer["port"], "/turno/rate", source="127.0.0.9"), range(80)))
    limited = [result for result in results if result[0] == 429]
    assert limited, [status for status, _, _ in results]
    assert all(content_type == "application/json" and json.loads(body)["status"] == 429 for _, content_type, body in limited)
    # Another client is not affected.
    assert get(balancer["port"], "/nginx-side-check-not-limited", source="127.0.0.10")[0] != 429


def test_status_server_shows_the_upstream(balancer):
    status, _, body = get(balancer["status_port"], "/upstream")
    assert status == 200
    assert json.loads(body) == {"servers": list(APPS), "drained": []}
