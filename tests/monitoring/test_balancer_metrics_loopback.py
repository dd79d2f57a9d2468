"""What the balancers answer their clients, from nginx's access log to Graphite, on loopback.

The balancer role's nginx.conf runs on loopback in front of two real HTTP
upstreams (the balancer scenario's fake_app.py: one answers, one drops the
connection after reading the request, which nginx answers 502); collectd runs
with the collectd role's configuration for an lb host and writes to carbon on
loopback. Clients send a steady mix, one of them over its rate limit (429).
The balancer rules' queries, read from the rendered rule file, must give the
shares the access log itself shows.
"""
import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import alerting
from tests.support.ansible import render_balancer_config, render_role_template
from tests.support.paths import ROLES
from tests.support.ports import free_port
from tests.support.waiting import wait_for_port, wait_until

HOST = "lbloop"
# The balancer role's fake apps (its Molecule scenario's), one per loopback address.
FAKE_APP = ROLES / "balancer" / "molecule" / "default" / "files" / "fake_app.py"
APPS = {"fake-answer": "127.0.0.3", "fake-drop": "127.0.0.2"}
MODES = {"fake-answer": "answer", "fake-drop": "drop"}
RATE_LIMIT = 2
TRAFFIC_SECONDS = 50
OVER_LIMIT_SOURCE = "127.0.0.9"


@pytest.fixture(scope="module")
def balancer(tmp_path_factory):
    if not shutil.which("nginx"):
        pytest.fail("nginx is not installed (make setup installs it)")
    workdir = tmp_path_factory.mktemp("balancer-metrics")
    app_port = free_port(*APPS.values())
    # nginx listens on every address: the port must be free on all of them.
    port, status_port = free_port("0.0.0.0"), free_port("127.0.0.1")
    render_balancer_config(workdir, {
        "balancer_port": port, "balancer_status_port": status_port, "balancer_app_port": app_port,
        "balancer_rate_limit": RATE_LIMIT, "balancer_rate_limit_burst": 1,
        # The dropping app stays in the rotation: half the answers are 502.
        "balancer_max_fails": 0}, app_hosts=APPS)
    listeners = [f"{APPS[name]}:{app_port}={mode}" for name, mode in MODES.items()]
    apps = subprocess.Popen([sys.executable, FAKE_APP, *listeners, "--lifetime", "300"])
    nginx = subprocess.Popen(["nginx", "-c", workdir / "nginx.conf", "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    try:
        for address in APPS.values():
            wait_for_port(address, app_port)
        wait_for_port("127.0.0.1", port)
        yield {"port": port, "status_port": status_port, "log": workdir / "turnomatic.access.log"}
    finally:
        nginx.send_signal(signal.SIGQUIT)
        apps.terminate()
        nginx.wait(timeout=10)
        apps.wait(timeout=10)


@pytest.fixture(scope="module")
def collectd(loopback_graphite, balancer, tmp_path_factory):
    """collectd with the collectd role's configuration for an lb host, reading the balancer's log."""
    if not Path("/usr/sbin/collectd").exists():
        pytest.fail("collectd is not installed: run make setup")
    line_port, _ = loopback_graphite
    base = tmp_path_factory.mktemp("collectd")
    conf = render_role_template("collectd", "collectd.conf.j2", base / "collectd.conf", {
        "group_names": ["lb"], "collectd_hostname": HOST,
        "collectd_graphite_host": "127.0.0.1", "collectd_graphite_port": line_port})
    text = conf.read_text()
    assert "/var/log/nginx/turnomatic.access.log" in text, "collectd does not read the balancer's access log"
    conf.write_text(text.replace("/var/log/nginx/turnomatic.access.log", str(balancer["log"])))
    subprocess.run(["/usr/sbin/collectd", "-t", "-C", conf], check=True, capture_output=True, timeout=30)
    process = subprocess.Popen(["/usr/sbin/collectd", "-f", "-C", conf, "-P", base / "collectd.pid"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=20)


def request(port, source):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/turno/metrics-test")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def traffic(balancer, collectd, loopback_graphite):
    """TRAFFIC_SECONDS of steady traffic; returns (start, end, the access log's entries)."""
    start = time.time()
    sources = [f"127.0.1.{n}" for n in range(1, 21)]
    sent = 0
    while time.time() - start < TRAFFIC_SECONDS:
        # 8 requests/s from clients well under their rate, 4/s from one over it.
        request(balancer["port"], sources[sent % len(sources)])
        request(balancer["port"], sources[(sent + 1) % len(sources)])
        request(balancer["port"], OVER_LIMIT_SOURCE)
        sent += 2
        time.sleep(0.25)
    end = time.time()
    # collectd writes every 10 s; wait for the points of the last full interval.
    graphite = alerting.Graphite(loopback_graphite[1])
    metric = f"collectd.{HOST}.tail-balancer.http_response_codes-all"
    stored = wait_until(lambda: sum(v is not None for vals in graphite.render(metric, start, end).values()
                                    for v in vals) >= TRAFFIC_SECONDS // 10 - 1, 40, 1)
    assert stored, f"collectd did not send {metric} to carbon"
    entries = [json.loads(line) for line in balancer["log"].read_text().splitlines()]
    return start, end, entries


@pytest.fixture(scope="module")
def rules(rules_file):
    return alerting.load_rules(rules_file.read_text())


def mean_of_query(rule, graphite_url, start, end):
    """The rule's query A over the traffic (its first and last partial intervals left out)."""
    series = alerting.Graphite(graphite_url).render(rule.target, int(start) + 10, int(end) - 10)
    points = [v for vals in series.values() for v in vals if v is not None]
    assert points, f"{rule.uid}: its query finds none of what collectd sent"
    return sum(points) / len(points)


@pytest.mark.parametrize("uid, statuses", [("turnomatic-balancer-5xx-ratio", range(500, 600)),
                                           ("turnomatic-balancer-429-ratio", [429])])
def test_the_balancer_rules_read_the_shares_the_access_log_shows(traffic, rules, loopback_graphite, uid, statuses):
    start, end, entries = traffic
    share = 100 * sum(entry["status"] in statuses for entry in entries) / len(entries)
    measured = mean_of_query(rules[uid], loopback_graphite[1], start, end)
    print(f"{uid}: {measured:.1f} % in Graphite, {share:.1f} % in the access log ({len(entries)} answers)")
    assert 5 < share < 95, "the traffic did not give the mix this test needs"
    assert abs(measured - share) < 8


def test_the_balancers_request_time_reaches_graphite(traffic, loopback_graphite):
    start, end, entries = traffic
    graphite = alerting.Graphite(loopback_graphite[1])
    slowest = max(entry["request_time"] for entry in entries)
    for name in ("response_time-request-50", "response_time-request-99", "response_time-request-mean"):
        points = [v for vals in graphite.render(f"collectd.{HOST}.tail-balancer.{name}", start, end).values()
                  for v in vals if v is not None]
        assert points, f"no {name} in Graphite"
        assert all(0 <= v <= slowest + 0.001 for v in points), f"{name}: {points} (slowest answer {slowest} s)"
