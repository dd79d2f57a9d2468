"""Run game days on the lab fleet: each scenario's Chaos Toolkit experiment
(tools/gameday/experiments/<scenario>.yaml) under load from the client host,
then its timeline draft (tools/gameday/timeline.py).

    .venv/bin/python -m tools.gameday                          # every scenario in turn
    .venv/bin/python -m tools.gameday --scenario app-power-cut --hold 20

Each run writes tests/output/gameday/<UTC time>-<scenario>/: Chaos Toolkit's
journal.json and log, load.json (every request), draft.md, timeline.png,
timeline.json. Rollbacks always run (`--rollback-strategy always`), so the
fleet is left as found even when the method stops half-way. Exit status 0
when every experiment held its steady state before and after its fault and
every rollback succeeded, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.lab import lab_facts
from tests.support.paths import BIN, OUTPUT, REPO
from tests.support.redis_fleet import RedisFleet
from tools.gameday import timeline

EXPERIMENTS = Path(__file__).resolve().parent / "experiments"
# StatsD and collectd send a point every 10 s and carbon writes it a little later:
# the draft waits this long past the window's end for its last points.
GRAPHITE_LAG_S = 20
# An experiment takes its hold time plus samples, boots, pauses and (bad-deploy) two
# rolling updates of up to about 3 min each; past this it is stopped.
EXPERIMENT_OVERHEAD_S = 900


def scenarios() -> list[str]:
    return sorted(path.stem for path in EXPERIMENTS.glob("*.yaml"))


def write_p99_limit(path: Path, p99_limit_ms: float) -> Path:
    """A Chaos Toolkit variables file that sets the hypothesis's p99 range: a range is
    not a scalar, so `--var` cannot carry it."""
    path.write_text(json.dumps({"configuration": {"p99_range_ms": {"type": "range", "range": [0, p99_limit_ms]}}}))
    return path


def run(scenario: str, hold: int | None, root: Path, margin: float = timeline.MARGIN_S,
        p99_limit_ms: float | None = None) -> dict:
    """One experiment and its draft (its window widened by `margin` seconds on each
    side); the figures of the detection table. p99_limit_ms replaces the SLO in the
    steady-state hypothesis."""
    out = root / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{scenario}"
    out.mkdir(parents=True)
    experiment = EXPERIMENTS / f"{scenario}.yaml"
    variables = ["--var", f"out={out}"]
    if hold is not None:
        variables += ["--var", f"hold_seconds:int={hold}"]
    if p99_limit_ms is not None:
        variables += ["--var-file", str(write_p99_limit(out / "variables.json", p99_limit_ms))]
    if "${redis_primary}" in experiment.read_text():
        # The Redis host the sentinels name now: a failover moves the primary between runs.
        primary = RedisFleet(lab_facts()).primary()
        if not primary:
            raise SystemExit(f"gameday {scenario}: no sentinel names a Redis primary")
        variables += ["--var", f"redis_primary={primary}"]
    command = [str(BIN / "chaos"), "--log-file", str(out / "chaostoolkit.log"), "run",
               "--rollback-strategy", "always", "--journal-path", str(out / "journal.json"),
               *variables, str(experiment)]
    print(f"gameday {scenario}: {' '.join(command[3:])}", flush=True)
    # The experiments name their python activities by module (tools.gameday.activities).
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(command, cwd=REPO, env=env, timeout=(hold or 120) + EXPERIMENT_OVERHEAD_S, check=False)
    journal = json.loads((out / "journal.json").read_text())
    wait = timeline.parse_time(journal["end"]) + margin + GRAPHITE_LAG_S - time.time()
    time.sleep(max(0.0, wait))
    timeline.main(["--run", str(out), "--margin", str(margin)])
    milestones = json.loads((out / "timeline.json").read_text())["milestones"]
    rollbacks_ok = all(rollback["status"] == "succeeded" for rollback in journal.get("rollbacks", []))
    # Before and after the method; a hypothesis not met before it ends the run there.
    held = [bool(state and state["steady_state_met"]) for state in
            (journal["steady_states"]["before"], journal["steady_states"]["after"])]
    return {"scenario": scenario, "run": str(out.relative_to(REPO)), "status": journal["status"],
            "deviated": journal["deviated"], "steady_state_held": held, "rollbacks_ok": rollbacks_ok,
            "passed": journal["status"] == "completed" and not journal["deviated"] and all(held) and rollbacks_ok,
            "time_to_detect_s": milestones["time_to_detect_s"], "detected_by": milestones["detected_by"],
            "time_to_recover_s": milestones["time_to_recover_s"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=scenarios(),
                        help="a scenario (may repeat); every scenario without it")
    parser.add_argument("--hold", type=int, help="seconds the fault is held (default: the experiment's)")
    parser.add_argument("--p99-limit-ms", type=float, help="the hypothesis's p99 limit (default: the SLO, 50 ms)")
    parser.add_argument("--out", type=Path, default=OUTPUT / "gameday")
    args = parser.parse_args(argv)
    results = [run(scenario, args.hold, args.out, p99_limit_ms=args.p99_limit_ms)
               for scenario in args.scenario or scenarios()]
    lines = ["| scenario | experiment | time to detect | detected by | time to recover | run |",
             "|---|---|---:|---|---:|---|"]
    for r in results:
        verdict = "passed" if r["passed"] else (f"FAILED ({r['status']}, steady state before/after "
                                                 f"{r['steady_state_held']}, rollbacks ok {r['rollbacks_ok']})")
        lines.append(f"| {r['scenario']} | {verdict} | {timeline.duration(r['time_to_detect_s'])} "
                     f"| {r['detected_by'] or 'no rule fired'} | {timeline.duration(r['time_to_recover_s'])} | {r['run']} |")
    summary = "\n".join(lines) + "\n"
    (args.out / f"summary-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.md").write_text(summary)
    print(summary)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
