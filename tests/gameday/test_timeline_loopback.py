"""The timeline draft (tools/gameday/timeline.py) from recorded inputs and a real
Graphite on loopback: a Chaos Toolkit journal and a client_load.py result made
here, with the points the apps would have sent to Graphite in the same window.
The draft's numbers must be the load's own counts, its detection the first
evaluation at which the alert rule fires as tests/support/alerting.py evaluates
it, and without a journal and a load it drafts from Graphite alone."""
import json
from collections import Counter
from datetime import datetime, timezone

import pytest
from PIL import Image

from tests.support import alerting
from tests.support.waiting import wait_until
from tools.gameday import timeline

STEP = alerting.STEP
RATE = 10  # requests a second
ERROR_SECONDS = 20  # the fault's errors last this long


def iso(epoch):
    """A time as Chaos Toolkit's journal writes it (UTC, no zone)."""
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None).isoformat()


@pytest.fixture(scope="module")
def window():
    end = alerting.aligned_now() - STEP
    start = end - 240
    return start, end, start + 60  # the fault at a minute in


@pytest.fixture(scope="module")
def recorded(window):
    """A client_load.py result and a journal: RATE requests a second; for
    ERROR_SECONDS after the fault, 3 of every 10 fail (a 503, a reset after
    sending that took a number, a connection refused), and once, after the
    errors, a reused connection is closed before any byte of the answer after the
    app counted (as a balancer powered off mid-request does) and the request is
    sent again and served."""
    start, end, fault = window
    t0 = start + 5
    records, numbers = [], Counter()
    for second in range(start + 5, end - 5):
        for k in range(RATE):
            begin = second + k / RATE + 0.01
            ident = k % 4
            failing = fault + 2 <= second < fault + 2 + ERROR_SECONDS
            outcome = ("status-503", "sent", "connect")[k % 3] if failing and k < 3 else "ok"
            if outcome == "sent":
                numbers[ident] += 1  # the reset request took a number nobody saw
            number = None
            if second == fault + 2 + ERROR_SECONDS + 5 and k == 0:
                numbers[ident] += 1  # the closed request ran: its number is lost
                records.append([k, round(begin - t0, 4), round(begin + 0.002 - t0, 4), "closed", "10.0.0.1", ident,
                                None])
            if outcome == "ok":
                numbers[ident] += 1
                number = numbers[ident]
            records.append([k, round(begin - t0, 4), round(begin + 0.005 - t0, 4), outcome, "10.0.0.1", ident, number])
    load = {"t0": t0, "threads": 8, "keepalive": 1, "records": records}
    journal = {
        "experiment": {"title": "An app VM loses power under load"}, "status": "completed", "deviated": False,
        "start": iso(start + 2), "end": iso(end - 2),
        "run": [
            {"activity": {"name": "load: start", "type": "action"}, "status": "succeeded",
             "start": iso(start + 4), "end": iso(start + 5)},
            {"activity": {"name": "fault: power cut app1", "type": "action"}, "status": "succeeded",
             "start": iso(fault), "end": iso(fault + 1.5)},
            {"activity": {"name": "mitigation: boot app1", "type": "action"}, "status": "succeeded",
             "start": iso(fault + 100), "end": iso(fault + 110)},
        ],
        "rollbacks": [{"activity": {"name": "rollback: boot app1", "type": "action"}, "status": "succeeded",
                       "start": iso(end - 4), "end": iso(end - 3)}],
    }
    return load, journal


@pytest.fixture(scope="module")
def graphite(loopback_graphite, window):
    """The apps' counters for the window, as StatsD flushes them every 10 s: 200s
    throughout, 503s (3 a second) while the fault's errors last."""
    line_port, url = loopback_graphite
    start, end, fault = window
    points = []
    for t in range(start, end + 1, STEP):
        errors = 3 if fault <= t - STEP < fault + 2 + ERROR_SECONDS else 0
        for status, per_second in (("200", RATE - errors), ("503", errors)):
            points += [(f"stats.counters.turnomatic.gdapp1.requests.{status}.count", per_second * STEP, t),
                       (f"stats.counters.turnomatic.gdapp1.requests.{status}.rate", per_second, t)]
    alerting.send_points(line_port, points)
    reader = alerting.Graphite(url)
    stored = wait_until(lambda: len([v for v in reader.render("stats.counters.turnomatic.gdapp1.requests.*.rate",
                                                                  start, end).get(
        "stats.counters.turnomatic.gdapp1.requests.503.rate", []) if v is not None]) == (end - start) // STEP, 30, 0.5)
    assert stored, "carbon did not store the points within 30 s"
    return reader


@pytest.fixture(scope="module")
def rules(rules_file):
    return alerting.load_rules(rules_file.read_text())


@pytest.fixture(scope="module")
def drafted(window, recorded, graphite, rules, tmp_path_factory):
    start, end, _ = window
    load, journal = recorded
    built = timeline.build(start, end, journal["experiment"]["title"], graphite, rules, journal, load,
                           {"lb1": ["2026-12-01T10:00:00 lb1 nginx: upstream timed out"]})
    out = tmp_path_factory.mktemp("draft")
    draft = timeline.write(built, out)
    return built, draft.read_text(), out


def test_the_drafts_numbers_are_the_load_generators_own_counts(recorded, drafted):
    load, _ = recorded
    outcomes = Counter(record[3] for record in load["records"])
    failed = sum(n for outcome, n in outcomes.items() if outcome not in ("ok", "closed"))
    assert failed == 3 * ERROR_SECONDS and outcomes["closed"] == 1  # the recording is what this test says it is
    assert timeline.read_impact(drafted[1]) == {
        "requests sent": len(load["records"]) - outcomes["closed"],
        "served (200)": outcomes["ok"],
        "failed": failed,
        "requests that may have taken a number (tickets possibly lost)":
            outcomes["status-503"] + outcomes["sent"] + outcomes["closed"],
        "numbers missing (gaps)": outcomes["sent"] + outcomes["closed"],
        "moved past by the failover fence, per id": 0,
        "duplicates": 0,
        "sent again after a closed keep-alive connection": 1,
        "seconds whose p99 was over the SLO (50 ms)": 0,
    }
    # The closed request's lost number is explained by it, not a violation.
    assert "Ticket violations: none" in drafted[1]


def test_the_timeline_has_the_fault_first_and_last_error_and_recovery(window, recorded, drafted):
    _, _, fault = window
    load, _ = recorded
    built, draft, _ = drafted
    ends = sorted(load["t0"] + r[2] for r in load["records"] if r[3] not in ("ok", "closed"))
    m = built.milestones()
    assert m["fault"] == pytest.approx(fault, abs=1e-3)
    assert m["first_error"] == pytest.approx(ends[0], abs=1e-3)
    assert m["last_error"] == pytest.approx(ends[-1], abs=1e-3)
    # The second after the last one with an error: the rate never dropped below 80 %.
    assert m["recovery"] == int(ends[-1]) + 1
    assert m["time_to_recover_s"] == pytest.approx(int(ends[-1]) + 1 - fault, abs=0.1)
    assert m["mitigation"] == pytest.approx(fault + 100, abs=1e-3)
    for label in ("fault: power cut app1", "first error seen by a client", "last error seen by a client",
                  "recovery:", "mitigation: boot app1"):
        assert label in draft, label


def test_detection_is_the_first_evaluation_at_which_the_rule_fires(window, graphite, rules, drafted):
    start, end, fault = window
    rule = rules["turnomatic-5xx-ratio"]
    evaluations = range(start // rule.interval * rule.interval, end + 1, rule.interval)
    expected = next(t for t in evaluations if t >= fault and alerting.firing(rule, graphite, t))
    m = drafted[0].milestones()
    assert m["detection"] == expected
    assert m["detected_by"].startswith(rule.title)
    assert m["time_to_detect_s"] == pytest.approx(expected - fault, abs=1e-3)
    # It resolves once the window no longer holds errors, and the draft says so.
    firing = drafted[0].rules[rule.uid]["firing"]
    assert [bool(names) for _, names in firing] == [False, True, False], firing
    assert f"\"{rule.title}\" resolves" in drafted[1]


def test_the_plot_and_the_data_are_written(drafted):
    _, draft, out = drafted
    with Image.open(out / "timeline.png") as image:
        assert image.size[0] >= 800 and image.size[1] >= 600
    data = json.loads((out / "timeline.json").read_text())
    assert data["impact"]["failed"] == 3 * ERROR_SECONDS
    assert "upstream timed out" in draft
    for section in ("Contributing factors", "What went well", "What went wrong", "Where we got lucky",
                    "Action items"):
        assert f"## {section}" in draft


def test_without_a_fault_or_a_load_it_drafts_from_graphite(window, graphite, rules, tmp_path):
    start, end, fault = window
    built = timeline.build(start, end, "a window with no game day", graphite, rules)
    draft = timeline.write(built, tmp_path).read_text()
    m = built.milestones()
    # The first and last 10 s points holding a 503, as the apps counted them.
    first, last = timeline.Timeline.graphite_errors(built)
    assert (m["first_error"], m["last_error"]) == (first, last)
    assert fault < first <= fault + 2 * STEP and last <= fault + 2 + ERROR_SECONDS + 2 * STEP
    assert m["detection"] is not None and m["time_to_detect_s"] > 0
    assert "No load generator's records" in draft and "503 " in draft
    assert (tmp_path / "timeline.png").exists()
