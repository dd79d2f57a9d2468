"""Monitoring on the lab fleet converged by site.yml (the `fleet` fixture).

The alert rules are read from the rule file on the monitoring host (the file
Grafana reads) and evaluated on the real Graphite data through its render API
(tests/support/alerting.py); the load, the CPU burn and the Redis cut are bounded in time
and stop by themselves.
"""
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests.support import alerting, grafana_provisioning as provisioning
from tests.support.alerting import STEP, aligned_now as now
from tests.support.paths import OUTPUT as TEST_OUTPUT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.lab
OUTPUT = TEST_OUTPUT / "monitoring"
MONITORING_HOST = "mon1"
SERVICE_PORT = 7017
REQUESTS_METRIC = "stats.counters.turnomatic.*.requests.*.count"
QUIET_TIMEOUT = 240


def all_firing(rules, graphite):
    return {uid: fired for uid, rule in rules.items() if (fired := alerting.firing(rule, graphite, now()))}


class PacedLoad:
    """GET /turno/<id> on the balancers from the control machine, `rate` per second,
    for at most `seconds` (a thread; stops by itself). Counts statuses."""

    def __init__(self, fleet, rate, seconds):
        self.urls = [f"http://{fleet.address(lb)}:{SERVICE_PORT}/turno/monitoring-{uuid.uuid4().hex[:8]}"
                     for lb in ("lb1", "lb2")]
        self.rate, self.seconds = rate, seconds
        self.statuses = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        started = time.monotonic()
        sent = 0
        while not self.stopped.is_set() and time.monotonic() - started < self.seconds:
            try:
                with urllib.request.urlopen(self.urls[sent % 2], timeout=5) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = "no answer"
            self.statuses[status] = self.statuses.get(status, 0) + 1
            sent += 1
            self.stopped.wait(max(0.0, started + sent / self.rate - time.monotonic()))

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=30)
        return self.statuses


def test_the_monitoring_host_runs_its_services(fleet):
    states = fleet.ssh(MONITORING_HOST, "systemctl is-active carbon-cache graphite-web statsd collectd",
                       check=False).stdout.split()
    assert states == ["active"] * 4


def test_provisioning_files_on_the_monitoring_host_have_the_documented_structure(fleet):
    with tempfile.TemporaryDirectory() as local:
        archive = subprocess.run(
            fleet.ssh_command(MONITORING_HOST, "tar -C / -cf - etc/grafana/provisioning var/lib/grafana/dashboards"),
            capture_output=True, timeout=60, check=True).stdout
        subprocess.run(["tar", "-C", local, "-xf", "-"], input=archive, check=True)
        dashboards_dir = "/var/lib/grafana/dashboards/turnomatic"
        problems = provisioning.check_directories(Path(local, "etc/grafana/provisioning"),
                                                  Path(local) / dashboards_dir.lstrip("/"), dashboards_dir)
    assert problems == []


def test_no_rule_fires_on_an_idle_fleet(fleet, rules, graphite):
    # Earlier suites load and break the fleet: give their traces the time to
    # leave the rules' windows, then nothing may fire.
    firing = wait_until(lambda: not all_firing(rules, graphite), QUIET_TIMEOUT, STEP)
    assert firing, f"firing on the idle fleet after {QUIET_TIMEOUT} s: {all_firing(rules, graphite)}"


def test_a_request_shows_up_in_graphite_as_the_dashboards_read_it(fleet, graphite):
    start = now() - STEP
    load = PacedLoad(fleet, rate=5, seconds=10)
    load.thread.join(timeout=30)
    sent = load.statuses.get(200, 0)
    assert sent >= 40, load.statuses

    def counted():
        series = graphite.render(f"sumSeries({REQUESTS_METRIC.replace('*.count', '200.count')})", start, now() + STEP)
        return sum(v for values in series.values() for v in values if v is not None) >= sent
    assert wait_until(counted, 60, interval=2), "the requests did not reach Graphite within 60 s"
    # The latency timer the dashboard draws, per app node.
    latency = graphite.render("stats.timers.turnomatic.*.latency.upper_99", start, now() + STEP)
    assert any(v is not None for values in latency.values() for v in values), latency


def screenshot(url, path):
    """Headless Chromium's screenshot of `url` into `path`; returns its count of strongly
    coloured pixels (text and axes are grey, the grid faintly tinted: the rest is plotted lines)."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run make setup"
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--window-size=1000,560", f"--screenshot={path}", url],
                       capture_output=True, timeout=120, check=True)
    with Image.open(path) as image:
        pixels = image.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(pixels), 3) if max(pixels[i:i + 3]) - min(pixels[i:i + 3]) > 96)


def test_graphite_web_draws_the_requests_in_chromium(fleet):
    OUTPUT.mkdir(parents=True, exist_ok=True)

    def graph(target, title):
        query = urllib.parse.urlencode([("target", target), ("from", "-10min"), ("width", "1000"),
                                        ("height", "560"), ("title", title)])
        return f"http://{fleet.address(MONITORING_HOST)}/render?{query}"
    # The same graph of a metric nobody sends: legend, grid and axes only.
    empty = screenshot(graph("stats.counters.nobody.sends.this", "nothing"), OUTPUT / "graphite-empty.png")
    drawn = screenshot(graph("aliasByNode(stats.counters.turnomatic.*.requests.*.rate, 3, 5)",
                             "turnomatic requests/s by node and status"), OUTPUT / "graphite-requests.png")
    print(f"screenshot: {OUTPUT / 'graphite-requests.png'} ({drawn} coloured pixels, {empty} without data)")
    assert drawn > empty + 300, "no line drawn in graphite-requests.png"


def burn_cpu(fleet, host, seconds, processes=2):
    """`processes` busy loops on `host`, each ended by `timeout` after `seconds`."""
    loops = " ".join(f"timeout {seconds} python3 -c 'while True: pass' >/dev/null 2>&1 &"
                     for _ in range(processes))
    fleet.ssh(host, f"nohup sh -c \"{loops}\" >/dev/null 2>&1 &")


def test_cpu_rule_fires_for_the_burning_app_vm_and_falls_back(fleet, rules, graphite):
    rule = rules["turnomatic-cpu-high"]
    # Long enough for the window and the duration twice over: on a busy machine
    # the VM may get less than its share for a while.
    burn = 2 * (rule.window + rule.duration) + 60
    burn_cpu(fleet, "app1", burn)
    try:
        fired = wait_until(lambda: alerting.firing(rule, graphite, now()) & {"app1"}, burn - 20, STEP)
        busy = alerting.values(rule, graphite, now())
        assert fired, f"{rule.uid} did not fire for app1 in {burn - 20} s of burn: {busy}"
        assert "app2" not in alerting.firing(rule, graphite, now()), f"app2 is idle: {busy}"
    finally:
        fleet.ssh("app1", "pkill -f \"python3 -c while True: pass\"", check=False)
    calm = wait_until(lambda: "app1" not in alerting.firing(rule, graphite, now()), rule.window + 60, STEP)
    assert calm, f"{rule.uid} still fires for app1 {rule.window + 60} s after the burn: {alerting.values(rule, graphite, now())}"


def fault(fleet, host, kind):
    run = fleet.playbook("playbooks/fault.yml", "-e", f"lab_vm={host}", "-e", f"lab_fault={kind}",
                         log_name=f"monitoring-fault-{host}-{kind}")
    assert run.returncode == 0, run.tail()


def test_error_and_down_rules_fire_with_redis_cut_off_and_fall_back(fleet, rules, graphite):
    errors, down = rules["turnomatic-5xx-ratio"], rules["turnomatic-service-down"]
    # Every Redis host: with one cut off, the sentinels fail over and the errors stop.
    redis_hosts = fleet.group("redis")
    load = PacedLoad(fleet, rate=10, seconds=420)
    try:
        for host in redis_hosts:
            fault(fleet, host, "cut")
        try:
            fired = wait_until(lambda: alerting.firing(errors, graphite, now()), errors.window + errors.duration + 90,
                               STEP)
            assert fired, f"{errors.uid} did not fire: {alerting.values(errors, graphite, now())}, load {load.statuses}"
            assert 503 in load.statuses, load.statuses
            # redis1 stops reporting: its redis-server counts as gone.
            gone = wait_until(lambda: "redis1.processes-redis-server" in alerting.firing(down, graphite, now()),
                              down.window + down.duration + 60, STEP)
            assert gone, f"{down.uid} did not fire for redis1: {alerting.values(down, graphite, now())}"
        finally:
            for host in redis_hosts:
                fault(fleet, host, "heal")
        recovered = wait_until(lambda: not alerting.firing(errors, graphite, now())
                               and not alerting.firing(down, graphite, now()), errors.window + 120, STEP)
        assert recovered, (f"still firing after the heal: {all_firing(rules, graphite)}, "
                           f"{alerting.values(errors, graphite, now())}")
    finally:
        statuses = load.stop()
    print(f"answers during the test: {json.dumps(statuses)}")
