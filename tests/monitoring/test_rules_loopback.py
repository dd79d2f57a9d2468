"""The alert rules' queries, thresholds and durations on a real Graphite fed known points.

Debian's carbon-cache and graphite-web run on loopback (no lab needed) with the
graphite role's storage schemas; the test writes metrics under the names
StatsD and collectd use, with timestamps over the last minutes, then evaluates
the rules exactly as the rendered rule file states them. The lab tests
(test_lab_monitoring.py) do the same on metrics the fleet really sends.
"""
import socket

import pytest

from tests.support import alerting
from tests.support.alerting import STEP, aligned_now
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def graphite(loopback_graphite):
    line_port, url = loopback_graphite
    return line_port, alerting.Graphite(url)


@pytest.fixture(scope="module")
def rules(rules_file):
    return alerting.load_rules(rules_file.read_text())


def send(line_port, series, end):
    """series: {metric: [value per 10 s step, oldest first, the last one at `end`]}; None skips a point."""
    lines = []
    for metric, values in series.items():
        for index, value in enumerate(values):
            if value is not None:
                lines.append(f"{metric} {value} {end - (len(values) - 1 - index) * STEP}\n")
    with socket.create_connection(("127.0.0.1", line_port), timeout=10) as sock:
        sock.sendall("".join(lines).encode())


def wait_for_points(graphite, metrics, end):
    stored = wait_until(lambda: all(any(v is not None for values in graphite.render(m, end - 600, end).values()
                                        for v in values) for m in metrics), 30, 0.5)
    assert stored, f"carbon did not store {metrics}"


def cpu(host, percent_of_core):
    """collectd's processes plugin: µs of CPU per second, user and system."""
    return {f"collectd.{host}.processes-all.ps_cputime.user": [p * 10_000 * 0.9 for p in percent_of_core],
            f"collectd.{host}.processes-all.ps_cputime.syst": [p * 10_000 * 0.1 for p in percent_of_core]}


def test_cpu_rule_fires_for_the_busy_host_only(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-cpu-high"]
    end = aligned_now()
    steps = (rule.window + rule.duration) // STEP + 2
    busy = rule.threshold * 1.5
    send(line_port, {**cpu("busy1", [busy] * steps), **cpu("calm1", [rule.threshold / 3] * steps),
                     **cpu("blip1", [5] * (steps - 4) + [busy] * 4)}, end)
    wait_for_points(api, ["collectd.busy1.processes-all.ps_cputime.user"], end)
    fired = alerting.firing(rule, api, end)
    assert "busy1" in fired
    assert "calm1" not in fired
    # Above the threshold for less than the rule's duration: pending, not firing.
    assert "blip1" not in fired


def test_5xx_rule_fires_on_a_high_share_and_not_on_a_few(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-5xx-ratio"]
    end = aligned_now()
    steps = (rule.window + rule.duration) // STEP + 2
    prefix = "stats.counters.turnomatic"
    # The rule's query covers every app node: the first half of the time 0.1 %
    # of answers fail (below the threshold), then half of them.
    send(line_port, {f"{prefix}.app91.requests.200.rate": [100] * steps,
                     f"{prefix}.app91.requests.503.rate": [0.1] * (steps // 2) + [100] * (steps - steps // 2)}, end)
    wait_for_points(api, [f"{prefix}.app91.requests.503.rate"], end)
    assert alerting.firing(rule, api, end)
    early = end - (steps - steps // 2) * STEP
    assert not alerting.firing(rule, api, early)


def test_service_down_rule_fires_when_the_process_count_stops(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-service-down"]
    end = aligned_now()
    steps = (rule.window + rule.duration) // STEP + 6
    gone = (rule.window + rule.duration) // STEP + 1
    send(line_port, {"collectd.app93.processes-turnomatic.ps_count.processes": [2] * (steps - gone) + [None] * gone,
                     "collectd.redis93.processes-redis-server.ps_count.processes": [1] * steps,
                     # The last point missing is the usual state (the current 10 s not yet written).
                     "collectd.app94.processes-turnomatic.ps_count.processes": [2] * (steps - 1) + [None]}, end)
    wait_for_points(api, ["collectd.app93.processes-turnomatic.ps_count.processes"], end)
    fired = alerting.firing(rule, api, end)
    assert "app93.processes-turnomatic" in fired
    assert "redis93.processes-redis-server" not in fired
    assert "app94.processes-turnomatic" not in fired
