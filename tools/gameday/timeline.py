"""Draft an incident report for a time window from the fleet's own data.

For the window it collects: the fault's start and end and the mitigation (from
a Chaos Toolkit journal, when there is one), the load generator's per-second
outcome (tools/load/client_load.py records: served, failed by outcome, p99
latency), the Graphite series the dashboards and alert rules read, when each
alert rule's condition held and when the rule fired (evaluated on that data as
Grafana does: tests/support/alerting.py), and the warning-or-worse journald
lines and nginx error log lines of the hosts involved. It writes draft.md (the
UTC timeline, the impact in exact numbers, empty sections for a person),
timeline.png (requests and errors over the window, the events marked) and
timeline.json (everything collected) into the output directory.

After a game day (the run directory holds journal.json and load.json; the
window is the experiment's, widened a little):
    .venv/bin/python -m tools.gameday.timeline --run tests/output/gameday/<run>
For any window, with no fault and no load of ours (a real incident): the same
draft from Graphite and the logs:
    .venv/bin/python -m tools.gameday.timeline --start 2026-12-01T10:00:00Z --end 2026-12-01T10:20:00Z
Graphite, the alert rules and the logs are the lab's (its inventory) unless
--graphite and --rules say otherwise.

The rules are evaluated on the data as Graphite holds it when the draft is
made: points a host sent late (collectd buffers them while its host is cut
off) count as if they had come on time, so a rule that saw a gap live may not
see it here. Live Grafana's own alert history is the record of what paged.
"""

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tests.support import alerting
from tests.support.paths import OUTPUT
from tools.gameday.activities import SLO_SHARE, ledger

MONITORING_HOST = "mon1"
RULES_PATH = "/etc/grafana/provisioning/alerting/turnomatic-rules.yaml"
# The dashboards' request series: the apps' answers by status (StatsD: a count per
# 10 s point), the balancers' by class (collectd: a rate per second, 10 s points).
DASHBOARD_SERIES = {
    "app answers by status (count per 10 s)": "groupByNode(stats.counters.turnomatic.*.requests.*.count, 5, 'sumSeries')",
    "balancer answers by class (per second)": "groupByNode(collectd.*.tail-balancer.http_response_codes-*, 3, 'sumSeries')",
}
SLO_MS = 50
# The rate is back when a second serves this share of the rate before the fault.
RATE_BACK_SHARE = 0.8
# A second whose p99 is above this is impaired (a connect timeout, a queue). The SLO
# itself is not the line: on a machine shared with other work single seconds pass
# 50 ms with no fault at all; the seconds over the SLO are counted apart.
SLOW_MS = 500
# A journal's window is widened by this much on each side (the alert rules' data lags).
MARGIN_S = 30
LOG_LINES_SHOWN = 15
NOT_A_FAILURE = ("ok", "closed")  # closed: a reused keep-alive connection closed, sent again


def utc(epoch: float | None) -> str:
    if epoch is None:
        return "–"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S.%f")[:-4]


def parse_time(text: str) -> float:
    """An ISO 8601 time (UTC when no zone is given) or seconds since the epoch."""
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class Event:
    time: float
    kind: str  # fault, mitigation, load, rollback, probe …: the activity name's prefix
    text: str
    end: float | None = None


def journal_events(journal: dict) -> list[Event]:
    """The experiment's activities: names are "<kind>: <what>" (fault, mitigation,
    load, rollback); probes and unprefixed actions keep their type as kind."""
    events = []
    for run in journal.get("run", []) + journal.get("rollbacks", []):
        name = run["activity"]["name"]
        kind, _, what = name.partition(": ")
        if not what:
            kind, what = run["activity"]["type"], name
        events.append(Event(parse_time(run["start"]), kind, f"{what} ({run['status']})", parse_time(run["end"])))
    return sorted(events, key=lambda event: event.time)


@dataclass
class Load:
    """The client's records as absolute times: (start, end, outcome, id, number), and how
    far the failover fence had moved every counter when the load ended."""
    records: list
    fence_offset: int = 0

    @classmethod
    def from_client_load(cls, result: dict):
        t0 = result["t0"]
        return cls([(t0 + start, t0 + end, outcome, ident, number)
                    for _, start, end, outcome, _, ident, number in result["records"]],
                   result.get("fence_offset", 0))

    def per_second(self) -> list[dict]:
        """One row per second (by the time each request ended): served, failures by
        outcome, p99 latency (ms) of what was sent."""
        if not self.records:
            return []
        first, last = int(min(r[1] for r in self.records)), int(max(r[1] for r in self.records))
        rows = {second: {"t": second, "served": 0, "failed": Counter(), "latencies": []}
                for second in range(first, last + 1)}
        for start, end, outcome, _, _ in self.records:
            row = rows[int(end)]
            if outcome == "ok":
                row["served"] += 1
            elif outcome != "closed":
                row["failed"][outcome] += 1
            if outcome not in ("resolve", "connect"):
                row["latencies"].append((end - start) * 1000)
        for row in rows.values():
            latencies = sorted(row.pop("latencies"))
            row["p99_ms"] = round(latencies[int(SLO_SHARE * (len(latencies) - 1))], 1) if latencies else None
            row["failed"] = dict(row["failed"])
        return [rows[second] for second in sorted(rows)]

    def impact(self) -> dict:
        outcomes = Counter(outcome for _, _, outcome, _, _ in self.records)
        failures = sorted(end for _, end, outcome, _, _ in self.records if outcome not in NOT_A_FAILURE)
        tickets_ledger = ledger([(None, start, end, outcome, None, ident, number)
                                 for start, end, outcome, ident, number in self.records], self.fence_offset)
        verdicts = tickets_ledger.verdicts()
        tickets = tickets_ledger.summary()
        return {
            "requests": len(self.records) - outcomes["closed"],
            "served": outcomes["ok"],
            "failed": sum(n for outcome, n in outcomes.items() if outcome not in NOT_A_FAILURE),
            "failed_by_outcome": {o: n for o, n in sorted(outcomes.items()) if o not in NOT_A_FAILURE},
            "resent_after_close": outcomes["closed"],
            "may_have_run": tickets["unknown_outcomes"],
            "tickets": tickets["tickets"],
            "duplicates": tickets["duplicates"],
            # Gaps beyond what the failover fence moved every id past (its offset, per id).
            "missing": sum(max(0, verdict.missing - self.fence_offset) for verdict in verdicts),
            "fence_offset": self.fence_offset,
            "violations": tickets["violations"],
            "first_error": failures[0] if failures else None,
            "last_error": failures[-1] if failures else None,
        }


class WindowGraphite:
    """Graphite's render API read once per target for the whole window, then
    answered from memory: the rules are evaluated every 10 s over the window
    without a request per evaluation."""

    def __init__(self, graphite, start: float, end: float):
        self.graphite, self.start, self.end = graphite, start, end
        self.cache = {}

    def series(self, target):
        if target not in self.cache:
            self.cache[target] = self.graphite.series(target, self.start, self.end)
        return self.cache[target]

    def render(self, target, start, end):
        return {name: [value for stamp, value in points if start < stamp <= end]
                for name, points in self.series(target).items()}


def rule_timeline(rules: dict, graphite, start: float, end: float) -> dict:
    """Per rule: the evaluations over [start, end] (which series' condition held)
    and the spans in which it fired (held at every evaluation over `for`)."""
    lookback = max((rule.window + rule.duration for rule in rules.values()), default=0)
    window = WindowGraphite(graphite, start - lookback - alerting.STEP, end)
    timeline = {}
    for uid, rule in sorted(rules.items()):
        steps = rule.duration // rule.interval
        first = int(start) // rule.interval * rule.interval
        times = list(range(first, int(end) + 1, rule.interval))
        # Firing at the window's first evaluations needs the evaluations of `for` before it.
        held = {t: {name for name, value in alerting.condition(rule, window, t).items() if value}
                for t in range(first - steps * rule.interval, int(end) + 1, rule.interval)}
        firing = {t: set.intersection(*(held[t - k * rule.interval] for k in range(steps + 1))) for t in times}
        timeline[uid] = {"title": rule.title, "condition": transitions(times, held),
                         "firing": transitions(times, firing)}
    return timeline


def transitions(times: list, states: dict) -> list:
    """[(time, sorted series names)] each time the set changes (the first time included)."""
    changes, previous = [], None
    for t in times:
        if states[t] != previous:
            changes.append((t, sorted(states[t])))
            previous = states[t]
    return changes


def series_names(names) -> str:
    """A rule's series as the draft names them: a fleet-wide query's long name is "the fleet"."""
    return ", ".join(name if len(name) <= 40 else "the fleet" for name in names)


def first_firing(timeline: dict, since: float) -> tuple | None:
    """(time, rule title, series) of the first rule to start firing at or after since."""
    starts = [(t, rule["title"], names) for rule in timeline.values()
              for t, names in rule["firing"] if names and t >= since]
    return min(starts, default=None)


def recovery(per_second: list[dict], since: float) -> tuple[float | None, float | None, bool]:
    """(baseline served/s before since, the start of the second after the last
    impaired one, whether the load ended impaired): a second is impaired when it
    had a failure, served under RATE_BACK_SHARE of the baseline, or its p99 was
    over SLOW_MS. None when no second after since was impaired. The load's first
    and last seconds (ramp up and down) are left out."""
    rows = per_second[1:-1]
    before = [row["served"] for row in rows if row["t"] + 1 <= since]
    if not before:
        return None, None, False
    baseline = statistics.median(before)
    impaired = [row["t"] for row in rows if row["t"] >= int(since) and (
        row["failed"] or row["served"] < RATE_BACK_SHARE * baseline or (row["p99_ms"] or 0) > SLOW_MS)]
    if not impaired:
        return baseline, None, False
    return baseline, impaired[-1] + 1, impaired[-1] == rows[-1]["t"]


def collect_logs(lab, hosts: list[str], start: float, end: float) -> dict:
    """host → lines: journald at warning or worse, and nginx's error log where there is
    one, within the window. A host that does not answer says so."""
    command = (f"journalctl --no-pager -q -o short-iso-precise -p warning --since @{int(start)} "
               f"--until @{math.ceil(end)}; "
               # nginx writes local time (UTC on the fleet) as 2026/12/01 10:50:00.
               f"awk -v a=\"$(date -u -d @{int(start)} +'%Y/%m/%d %T')\" "
               f"-v b=\"$(date -u -d @{math.ceil(end)} +'%Y/%m/%d %T')\" "
               f"'($1\" \"$2) >= a && ($1\" \"$2) <= b {{print \"nginx: \" $0}}' "
               f"/var/log/nginx/error.log 2>/dev/null; true")
    logs = {}
    for host in hosts:
        try:
            answer = lab.ssh(host, command, timeout=30, check=False)
            logs[host] = answer.stdout.splitlines() if answer.returncode == 0 else [
                f"(no answer over SSH: {answer.stderr.strip()[-200:]})"]
        except subprocess.TimeoutExpired:
            logs[host] = ["(no answer over SSH within 30 s)"]
    return logs


@dataclass
class Timeline:
    start: float
    end: float
    title: str
    events: list = field(default_factory=list)
    per_second: list = field(default_factory=list)
    impact: dict | None = None
    graphite: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)

    def fault(self) -> Event | None:
        return next((event for event in self.events if event.kind == "fault"), None)

    def milestones(self) -> dict:
        """The report's key times and the two durations the detection table keeps."""
        fault = self.fault()
        mitigation = next((event for event in self.events if event.kind == "mitigation"), None)
        first_error = self.impact["first_error"] if self.impact else self.graphite_errors()[0]
        last_error = self.impact["last_error"] if self.impact else self.graphite_errors()[1]
        reference = fault.time if fault else first_error
        detection = first_firing(self.rules, reference - alerting.STEP) if reference else None
        baseline, recovered, still_impaired = (recovery(self.per_second, reference) if reference
                                               else (None, None, False))
        return {
            "fault": fault.time if fault else None,
            "fault_end": fault.end if fault else None,
            "first_error": first_error,
            "detection": detection[0] if detection else None,
            "detected_by": f"{detection[1]} ({series_names(detection[2])})" if detection else None,
            "mitigation": mitigation.time if mitigation else None,
            "mitigation_end": mitigation.end if mitigation else None,
            "recovery": recovered,
            "last_error": last_error,
            "baseline_per_s": baseline,
            "impaired_at_the_end": still_impaired,
            "time_to_detect_s": round(detection[0] - reference, 1) if detection and reference else None,
            "time_to_recover_s": (round(recovered - reference, 1) if recovered and reference
                                  else 0 if reference and baseline is not None else None),
        }

    def graphite_errors(self) -> tuple:
        """First and last 10 s point with a 5xx answer at the apps or the balancers."""
        stamps = [stamp for series in self.graphite.values() for name, points in series.items()
                  if name.startswith("5") or name.endswith("5xx") for stamp, value in points if value]
        return (min(stamps), max(stamps)) if stamps else (None, None)


def duration(seconds) -> str:
    return "–" if seconds is None else f"{seconds:.1f} s"


def draft_markdown(timeline: Timeline) -> str:
    m = timeline.milestones()
    impact = timeline.impact
    lines = [
        f"# {datetime.fromtimestamp(timeline.start, timezone.utc):%Y-%m-%d}: {timeline.title} (DRAFT)",
        "",
        "Drafted by `python -m tools.gameday.timeline` from the fleet's own data; a person "
        "completes the sections marked TO FILL and checks every line (TEMPLATE.md).",
        "",
        "| | |",
        "|---|---|",
        f"| Window | {utc(timeline.start)} – {utc(timeline.end)} UTC |",
        f"| Time to detect | {duration(m['time_to_detect_s'])}"
        + (f" ({m['detected_by']})" if m["detected_by"] else " (no alert rule fired)") + " |",
        f"| Time to recover | {duration(m['time_to_recover_s'])}"
        + (" (still impaired when the load ended)" if m["impaired_at_the_end"] else "") + " |",
        "",
        "## Impact",
        "",
    ]
    if impact:
        failed = ", ".join(f"{outcome}: {n}" for outcome, n in impact["failed_by_outcome"].items()) or "none"
        lines += [
            "From the load generator's own records (tools/load/client_load.py on the client host).",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| requests sent | {impact['requests']} |",
            f"| served (200) | {impact['served']} |",
            f"| failed | {impact['failed']} |",
            f"| requests that may have taken a number (tickets possibly lost) | {impact['may_have_run']} |",
            f"| numbers missing (gaps) | {impact['missing']} |",
            f"| moved past by the failover fence, per id | {impact['fence_offset']} |",
            f"| duplicates | {impact['duplicates']} |",
            f"| sent again after a closed keep-alive connection | {impact['resent_after_close']} |",
            f"| seconds whose p99 was over the SLO ({SLO_MS} ms) | "
            f"{sum((row['p99_ms'] or 0) > SLO_MS for row in timeline.per_second)} |",
            f"| first error to last error | "
            f"{duration(impact['last_error'] - impact['first_error']) if impact['first_error'] else '–'} |",
            "",
            f"Failed by outcome: {failed}. Ticket violations: "
            + ("; ".join(impact["violations"]) if impact["violations"] else "none (per id exactly 1..n, "
               "every gap explained by a request that may have run)") + ".",
        ]
    else:
        lines.append("No load generator's records for this window: the figures below are Graphite's.")
    lines += ["", "Graphite over the window (answers counted in its 10 s points):", ""]
    for title, series in timeline.graphite.items():
        per_point = alerting.STEP if "per second" in title else 1
        totals = {name: round(per_point * sum(value or 0 for _, value in points)) for name, points in series.items()}
        lines.append(f"- {title}: " + (", ".join(f"{name} {n}" for name, n in sorted(totals.items())) or "no data"))
    lines += [
        "",
        "## Timeline (UTC)",
        "",
        "| time | event | source |",
        "|---|---|---|",
    ]
    rows = []
    for event in timeline.events:
        rows.append((event.time, f"{event.kind}: {event.text}", "Chaos Toolkit journal"))
    for key, label, source in (("first_error", "first error seen by a client", "load generator"),
                               ("detection", f"detection: {m['detected_by']} fires", "alert rule on Graphite"),
                               ("recovery", f"recovery: from here every second served at the usual rate, "
                                            f"no error, p99 under {SLOW_MS} ms", "load generator"),
                               ("last_error", "last error seen by a client", "load generator")):
        if m[key] is not None:
            rows.append((m[key], label, source if impact or key == "detection" else "Graphite"))
    for rule in timeline.rules.values():
        for t, names in rule["condition"][1:]:
            rows.append((t, f"condition of \"{rule['title']}\" "
                            + (f"holds for {series_names(names)}" if names else "no longer holds"),
                         "alert rule on Graphite"))
        for t, names in rule["firing"][1:]:
            rows.append((t, f"\"{rule['title']}\" " + (f"fires for {series_names(names)}" if names else "resolves"),
                         "alert rule on Graphite"))
    lines += [f"| {utc(t)} | {text} | {source} |" for t, text, source in sorted(rows, key=lambda row: row[0])]
    lines += ["", "Alert rules already holding when the window opened: "
              + (", ".join(f"{rule['title']} ({series_names(rule['condition'][0][1])})" for rule in timeline.rules.values()
                           if rule["condition"] and rule["condition"][0][1]) or "none") + "."]
    lines += ["", "![requests and errors over the window](timeline.png)", "", "## Logs", ""]
    for host, host_lines in timeline.logs.items():
        shown = host_lines[:LOG_LINES_SHOWN]
        lines.append(f"- {host}: {len(host_lines)} line(s)" + (", the first ones:" if shown else ""))
        lines += [f"  - `{line.strip()[:200]}`" for line in shown]
    lines += ["", "All of them are in timeline.json."]
    for section in ("Summary", "Detection", "Contributing factors", "What went well", "What went wrong",
                    "Where we got lucky"):
        lines += ["", f"## {section}", "", "TO FILL"]
    lines += ["", "## Action items", "",
              "| action | kind (prevent / detect / mitigate / process) | owner (a role) | status | commit |",
              "|---|---|---|---|---|", "| TO FILL | | | | |", ""]
    return "\n".join(lines)


def read_impact(draft: str) -> dict:
    """The impact table of a draft read back: {figure: number}."""
    section = draft.split("## Impact", 1)[1].split("\n## ", 1)[0]
    return {name: int(value) for name, value in re.findall(r"^\| ([^|]+?) \| (\d+) \|$", section, re.M)}


def plot(timeline: Timeline, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(3, 1, figsize=(10, 9), sharex=True)
    rows = timeline.per_second
    x = [row["t"] - timeline.start for row in rows]
    axes[0].plot(x, [row["served"] for row in rows], color="tab:green", label="served (200) /s")
    axes[0].bar(x, [sum(row["failed"].values()) for row in rows], width=1, color="tab:red", label="failed /s")
    axes[0].set_ylabel("client requests /s")
    axes[1].plot(x, [row["p99_ms"] for row in rows], color="tab:blue", label="p99 latency")
    axes[1].axhline(SLO_MS, color="red", linestyle="--", label=f"SLO {SLO_MS} ms")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms")
    for title, series in timeline.graphite.items():
        for name, points in sorted(series.items()):
            axes[2].step([stamp - timeline.start for stamp, _ in points], [value for _, value in points],
                         where="post", label=f"{name} ({title.split(' ')[0]})")
    axes[2].set_ylabel("Graphite: apps per 10 s, balancers per s")
    axes[2].set_xlabel(f"seconds after {utc(timeline.start)} UTC")
    m = timeline.milestones()
    marks = [("fault", "black"), ("mitigation", "tab:purple"), ("detection", "tab:orange"), ("recovery", "tab:green")]
    for axis in axes:
        for key, colour in marks:
            if m[key] is not None:
                axis.axvline(m[key] - timeline.start, color=colour, linestyle=":", label=key)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper left", fontsize="x-small", ncol=3)
    axes[0].set_title(timeline.title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def build(start, end, title, graphite, rules, journal=None, load=None, logs=None) -> Timeline:
    """The timeline of a window from what was collected (no SSH, no experiment)."""
    timeline = Timeline(start=start, end=end, title=title, logs=logs or {})
    if journal:
        timeline.events = journal_events(journal)
    if load:
        records = Load.from_client_load(load)
        timeline.per_second = records.per_second()
        timeline.impact = records.impact()
    timeline.graphite = {title: graphite.series(target, start, end) for title, target in DASHBOARD_SERIES.items()}
    timeline.rules = rule_timeline(rules, graphite, start, end)
    return timeline


def write(timeline: Timeline, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    draft = out / "draft.md"
    draft.write_text(draft_markdown(timeline))
    plot(timeline, out / "timeline.png")
    (out / "timeline.json").write_text(json.dumps(
        {"start": timeline.start, "end": timeline.end, "title": timeline.title,
         "events": [vars(event) for event in timeline.events], "milestones": timeline.milestones(),
         "impact": timeline.impact, "per_second": timeline.per_second, "graphite": timeline.graphite,
         "rules": timeline.rules, "logs": timeline.logs}, indent=1))
    return draft


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a game day's run directory (journal.json, load.json)")
    parser.add_argument("--start", help="window start: ISO 8601 (UTC) or epoch seconds")
    parser.add_argument("--end", help="window end")
    parser.add_argument("--title", help="the report's title (default: the experiment's)")
    parser.add_argument("--graphite", help="Graphite's base URL (default: the lab's monitoring host)")
    parser.add_argument("--rules", type=Path, help="Grafana's alert rule file (default: the lab monitoring host's)")
    parser.add_argument("--hosts", help="comma-separated hosts whose logs to read (default: every lab host but the client)")
    parser.add_argument("--out", type=Path, help="where to write (default: the run directory)")
    parser.add_argument("--margin", type=float, default=MARGIN_S,
                        help="seconds a journal's window is widened by on each side")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    journal = load = None
    if args.run:
        journal = json.loads((args.run / "journal.json").read_text())
        if (args.run / "load.json").exists():
            load = json.loads((args.run / "load.json").read_text())
    if args.start:
        start = parse_time(args.start)
    elif journal:
        start = parse_time(journal["start"]) - args.margin
    else:
        print("--start (or --run) is required", file=sys.stderr)
        return 2
    end = parse_time(args.end) if args.end else parse_time(journal["end"]) + args.margin if journal else None
    if end is None or end <= start:
        print("--end after --start is required", file=sys.stderr)
        return 2
    from tests.support.lab import lab_facts
    lab = lab_facts()
    graphite = alerting.Graphite(args.graphite or f"http://{lab.address(MONITORING_HOST)}")
    rules_text = args.rules.read_text() if args.rules else lab.ssh(MONITORING_HOST, f"cat {RULES_PATH}").stdout
    hosts = args.hosts.split(",") if args.hosts else [host for host in sorted(lab.hosts)
                                                     if host not in lab.group("client")]
    title = args.title or (journal["experiment"]["title"] if journal else "incident")
    timeline = build(start, end, title, graphite, alerting.load_rules(rules_text), journal, load,
                     collect_logs(lab, hosts, start, end))
    draft = write(timeline, args.out or args.run or OUTPUT / "gameday" / f"window-{int(start)}")
    m = timeline.milestones()
    print(f"{draft}: time to detect {duration(m['time_to_detect_s'])}, time to recover {duration(m['time_to_recover_s'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
