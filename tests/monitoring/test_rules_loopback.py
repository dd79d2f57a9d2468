"""The alert rules' queries, thresholds and durations on a real Graphite fed known points.

Debian's carbon-cache and graphite-web run on loopback (no lab needed) with the
graphite role's storage schemas; the test writes metrics under the names
StatsD and collectd use, with timestamps over the last minutes, then evaluates
the rules exactly as the rendered rule file states them. The lab tests
(test_lab_monitoring.py) do the same on metrics the fleet really sends.
"""
import re

import pytest
import yaml

from tests.support import alerting
from tests.support.alerting import STEP, aligned_now
from tests.support.paths import ROLES
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
    alerting.send_points(line_port, [(metric, value, end - (len(values) - 1 - index) * STEP)
                                     for metric, values in series.items()
                                     for index, value in enumerate(values) if value is not None])


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
                     "collectd.app94.processes-turnomatic.ps_count.processes": [2] * (steps - 1) + [None],
                     # Not in the inventory: a scale-out VM the autoscaler stopped, its series left behind.
                     "collectd.app98.processes-turnomatic.ps_count.processes": [2] * (steps - gone) + [None] * gone},
         end)
    wait_for_points(api, ["collectd.app93.processes-turnomatic.ps_count.processes",
                          "collectd.app98.processes-turnomatic.ps_count.processes"], end)
    fired = alerting.firing(rule, api, end)
    assert "app93.processes-turnomatic" in fired
    assert "redis93.processes-redis-server" not in fired
    assert "app94.processes-turnomatic" not in fired
    assert "app98.processes-turnomatic" not in fired


def past(hours):
    """A 10 s boundary `hours` ago: each of the rules below reads its own stretch of
    time, so the fleet-wide sums see only the series written for it."""
    return aligned_now() - int(hours * 3600)


def test_balancer_5xx_rule_counts_5xx_and_not_429(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-balancer-5xx-ratio"]
    rate_limited = rules["turnomatic-balancer-429-ratio"]
    end = past(2)
    steps = (rule.window + rule.duration) // STEP + 2
    half = steps - steps // 2
    codes = "collectd.lb91.tail-balancer.http_response_codes"
    # 100 answers/s, 60 of them 429 the whole time; 1 % 5xx, then 20 %.
    send(line_port, {f"{codes}-all": [100] * steps, f"{codes}-4xx": [60] * steps, f"{codes}-429": [60] * steps,
                     f"{codes}-5xx": [1] * (steps - half) + [20] * half,
                     f"{codes}-502": [1] * (steps - half) + [20] * half}, end)
    wait_for_points(api, [f"{codes}-5xx"], end)
    assert alerting.firing(rule, api, end)
    # 60 % of clients refused for their rate is not an error of the service.
    assert not alerting.firing(rule, api, end - half * STEP)
    assert alerting.firing(rate_limited, api, end)


def test_balancer_429_rule_ignores_a_few_refusals(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-balancer-429-ratio"]
    end = past(2.5)
    steps = (rule.window + rule.duration) // STEP + 2
    codes = "collectd.lb92.tail-balancer.http_response_codes"
    send(line_port, {f"{codes}-all": [100] * steps, f"{codes}-429": [rule.threshold / 2] * steps}, end)
    wait_for_points(api, [f"{codes}-429"], end)
    assert not alerting.firing(rule, api, end)


def test_balancer_slow_rule_fires_on_a_slow_minute_and_not_on_one_slow_point(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-balancer-slow"]
    end = past(3)
    steps = (rule.window + rule.duration) // STEP + 2
    p99 = "tail-balancer.response_time-request-99"
    # In seconds, as collectd stores nginx's request_time: lb93 80 ms throughout
    # (a slow Redis), lb94 10 ms, lb95 10 ms but for one point of 300 ms at the
    # end (above the threshold for less than the rule's duration).
    send(line_port, {f"collectd.lb93.{p99}": [0.08] * steps,
                     f"collectd.lb94.{p99}": [0.01] * steps,
                     f"collectd.lb95.{p99}": [0.01] * (steps - 1) + [0.3]}, end)
    wait_for_points(api, [f"collectd.lb93.{p99}", f"collectd.lb95.{p99}"], end)
    fired = alerting.firing(rule, api, end)
    assert "lb93" in fired
    assert "lb94" not in fired
    # Slow for less than the rule's duration: not firing.
    assert "lb95" not in fired


def test_host_silent_rule_fires_for_a_host_that_stopped_reporting(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-host-silent"]
    end = past(3)
    steps = (rule.window + rule.duration) // STEP + 6
    gone = (rule.window + rule.duration) // STEP + 1
    load = "load.load.shortterm"
    send(line_port, {f"collectd.lb95.{load}": [0.5] * (steps - gone) + [None] * gone,
                     # The last point missing is the usual state (the current 10 s not yet written).
                     f"collectd.ns95.{load}": [0.5] * (steps - 1) + [None],
                     # Silent for less than the window and the duration: a restart, not an alert.
                     f"collectd.app95.{load}": [0.5] * (steps - gone + 2) + [None] * (gone - 3) + [0.5],
                     # Stopped too, but no longer in the inventory the rule is rendered for.
                     f"collectd.gone95.{load}": [0.5] * (steps - gone) + [None] * gone}, end)
    wait_for_points(api, [f"collectd.lb95.{load}", f"collectd.app95.{load}"], end)
    fired = alerting.firing(rule, api, end)
    assert "lb95" in fired
    assert "ns95" not in fired
    assert "app95" not in fired
    assert "gone95" not in fired


def test_app_out_of_service_rule_fires_for_a_host_held_out_and_not_for_a_drain(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-app-out-of-service"]
    end = past(5)
    steps = (rule.window + rule.duration) // STEP + 6
    out = (rule.window + rule.duration) // STEP + 1
    rate = "requests.200.rate"
    # StatsD sends 0 for a counter it has seen: a host held out answers 0 a second.
    send(line_port, {f"stats.counters.turnomatic.app95.{rate}": [20] * (steps - out) + [0] * out,
                     f"stats.counters.turnomatic.app96.{rate}": [20] * steps,
                     # A rolling update's drain: 40 s without a request, then back.
                     f"stats.counters.turnomatic.app97.{rate}": [20] * (steps - 5) + [0] * 4 + [20],
                     # Gone from the inventory (scaled in), its counter still sent as 0.
                     f"stats.counters.turnomatic.gone95.{rate}": [0] * steps}, end)
    wait_for_points(api, [f"stats.counters.turnomatic.app95.{rate}", f"stats.counters.turnomatic.app97.{rate}"], end)
    fired = alerting.firing(rule, api, end)
    assert "app95" in fired
    assert "app96" not in fired
    assert "app97" not in fired
    assert "gone95" not in fired


def redis_bytes(size):
    """Redis's notation for sizes (redis.conf): k, m, g are powers of 1000, kb, mb, gb powers of 1024."""
    number, unit = re.fullmatch(r"(\d+)([kmg]b?)?", str(size).lower()).groups()
    return int(number) * {None: 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}[unit]


def test_redis_memory_rule_fires_before_the_redis_roles_maxmemory(graphite, rules):
    line_port, api = graphite
    rule = rules["turnomatic-redis-memory"]
    # The limit Redis itself enforces, from the redis role's own default.
    maxmemory = redis_bytes(yaml.safe_load((ROLES / "redis/defaults/main.yml").read_text())["redis_maxmemory"])
    assert rule.threshold < 90, "the rule must fire well before maxmemory"
    end = past(4)
    steps = (rule.window + rule.duration) // STEP + 2
    rss = "processes-redis-server.ps_rss"
    above, below = maxmemory * (rule.threshold + 2) / 100, maxmemory * (rule.threshold - 2) / 100
    send(line_port, {f"collectd.redis96.{rss}": [above] * steps, f"collectd.redis97.{rss}": [below] * steps,
                     f"collectd.redis98.{rss}": [below] * (steps - 3) + [above] * 3}, end)
    wait_for_points(api, [f"collectd.redis96.{rss}", f"collectd.redis98.{rss}"], end)
    fired = alerting.firing(rule, api, end)
    assert "redis96" in fired
    assert "redis97" not in fired
    # Above the threshold for less than the rule's duration: pending, not firing.
    assert "redis98" not in fired
