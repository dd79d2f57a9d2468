"""Evaluate Grafana's provisioned alert rules on real Graphite data.

The rules are read from the provisioning file the grafana role renders (the
same file Grafana reads), and evaluated the way Grafana does: every group
interval, query A (the Graphite target) over the rule's relative time range,
B = A reduced per series with nulls dropped, C = B against the threshold. A
series fires when C held at every evaluation over the rule's `for` duration.
Nothing here knows a rule's query or threshold but the file.
"""
import functools
import json
import math
import re
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.ansible import render_role_template
from tests.support.paths import ROLES

REDUCERS = {
    "mean": lambda values: sum(values) / len(values),
    "max": max,
    "min": min,
    "sum": sum,
    "last": lambda values: values[-1],
}
OPERATORS = {"gt": lambda value, limit: value > limit, "lt": lambda value, limit: value < limit}
NO_DATA = "no data"
# StatsD and collectd store a point every 10 s.
STEP = 10


def aligned_now(step=STEP):
    """Now, on the 10 s boundary StatsD's and collectd's points are stored at."""
    return int(time.time()) // step * step


# The inventory the loopback tests render the rules for (the host-silent, out-of-service and
# service-down rules watch these hosts only): host names tests/monitoring/test_rules_loopback.py
# writes; app98 stands for a host outside it (a scale-out VM, stopped).
REPORTING_HOSTS = ["lb95", "ns95", "app95", "app96", "app97", "app93", "app94", "redis93"]


@functools.cache
def alert_rules_source():
    """The rules' source of truth, read as the grafana role reads it: a template, with
    the role's defaults and vars."""
    with tempfile.TemporaryDirectory() as out:
        rendered = render_role_template("grafana", ROLES / "grafana/files/alert-rules.yml", Path(out) / "alert-rules.yml",
                                        {"grafana_reporting_hosts": REPORTING_HOSTS})
        return yaml.safe_load(rendered.read_text())["rules"]


def seconds(duration):
    """Grafana's duration strings as used in the rule files: 10s, 1m, 2h."""
    match = re.fullmatch(r"(\d+)([smh])", str(duration))
    if not match:
        raise ValueError(f"unsupported duration {duration!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


@dataclass(frozen=True)
class Rule:
    uid: str
    title: str
    target: str
    window: int
    reducer: str
    operator: str
    threshold: float
    duration: int
    interval: int
    no_data_state: str

    @classmethod
    def from_provisioning(cls, rule, interval):
        steps = {step["refId"]: step for step in rule["data"]}
        query = steps["A"]
        reduce = steps[steps[rule["condition"]]["model"]["expression"]]["model"]
        threshold = steps[rule["condition"]]["model"]
        evaluator = threshold["conditions"][0]["evaluator"]
        if reduce.get("settings", {}).get("mode") != "dropNN":
            raise ValueError(f"{rule['uid']}: the evaluator here drops nulls like Grafana's dropNN mode")
        return cls(
            uid=rule["uid"], title=rule["title"], target=query["model"]["target"],
            window=query["relativeTimeRange"]["from"] - query["relativeTimeRange"]["to"],
            reducer=reduce["reducer"], operator=evaluator["type"], threshold=float(evaluator["params"][0]),
            duration=seconds(rule["for"]), interval=interval, no_data_state=rule["noDataState"])


def load_rules(text):
    """The rules of a Grafana alerting provisioning file, by uid."""
    rules = {}
    for group in yaml.safe_load(text)["groups"]:
        for rule in group["rules"]:
            rules[rule["uid"]] = Rule.from_provisioning(rule, seconds(group["interval"]))
    return rules


def send_points(line_port, points):
    """Write (metric, value, timestamp) points to a carbon line receiver on loopback."""
    with socket.create_connection(("127.0.0.1", line_port), timeout=10) as sock:
        sock.sendall("".join(f"{metric} {value} {t}\n" for metric, value, t in points).encode())


class Graphite:
    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")

    def series(self, target, start, end):
        """{series name: [(timestamp, value)]} for the points in (start, end]."""
        query = urllib.parse.urlencode({"target": target, "from": int(start), "until": int(end), "format": "json"})
        with urllib.request.urlopen(f"{self.base_url}/render?{query}", timeout=30) as answer:
            return {series["target"]: [(point[1], point[0]) for point in series["datapoints"]]
                    for series in json.load(answer)}

    def render(self, target, start, end):
        """{series name: [values]} for the points in (start, end]."""
        return {name: [value for _, value in points] for name, points in self.series(target, start, end).items()}


def condition(rule, graphite, at):
    """C at time `at`, per series: True, False, or None where the series has no point."""
    series = graphite.render(rule.target, at - rule.window, at)
    result = {}
    for name, values in series.items():
        points = [value for value in values if value is not None and not math.isnan(value)]
        result[name] = OPERATORS[rule.operator](REDUCERS[rule.reducer](points), rule.threshold) if points else None
    if all(value is None for value in result.values()):
        # Grafana's NoData: the whole query returned no point.
        return {NO_DATA: rule.no_data_state == "Alerting"}
    return {name: value for name, value in result.items() if value is not None}


def firing(rule, graphite, now):
    """The series for which the rule fires at `now`: C true at each evaluation over `for`."""
    evaluations = [condition(rule, graphite, now - step * rule.interval)
                   for step in range(rule.duration // rule.interval + 1)]
    names = set().union(*evaluations)
    return {name for name in names if all(evaluation.get(name) for evaluation in evaluations)}


def values(rule, graphite, now):
    """B at `now`, per series: what the rule compares with its threshold (for messages)."""
    series = graphite.render(rule.target, now - rule.window, now)
    return {name: REDUCERS[rule.reducer]([v for v in vals if v is not None]) if any(v is not None for v in vals)
            else None for name, vals in series.items()}
