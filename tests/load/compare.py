"""Side-by-side maximum load of turnomatic set-ups on loopback, in one run.

Each set-up (waitress threads, processes, nginx upstream keep-alive) is started
on this machine with a fresh redis-server, measured with the same turnoload step
ladder, and stopped; the set-ups alternate for --rounds rounds, and the table
gives each one's maximum load per round and its ratio to the first set-up.
Absolute figures move with whatever else runs on the machine; the ratios are
what to compare.

    .venv/bin/python tests/load/compare.py --setups threads --rounds 2
    .venv/bin/python tests/load/compare.py --setups processes,keepalive
"""

import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import turnoload
from loopback import Processes

# name -> (group, how to build the target from a Processes and a Redis URL)
SETUPS = {
    "1 process, 4 threads": ("threads", lambda lo, r: lo.turnomatic(r, "--threads", "4")),
    "1 process, 8 threads": ("threads", lambda lo, r: lo.turnomatic(r, "--threads", "8")),
    "1 process, 16 threads": ("threads", lambda lo, r: lo.turnomatic(r, "--threads", "16")),
    "1 process": ("processes", lambda lo, r: lo.turnomatic(r)),
    "2 processes (reuse-port)": ("processes", lambda lo, r: lo.turnomatic(r, processes=2)),
    "nginx, upstream keep-alive": (
        "keepalive", lambda lo, r: lo.nginx([lo.turnomatic(r, processes=2)], keepalive=32)),
    "nginx, no upstream keep-alive": (
        "keepalive", lambda lo, r: lo.nginx([lo.turnomatic(r, processes=2)], keepalive=0)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default="threads,processes,keepalive",
                        help="groups to compare: threads, processes, keepalive")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ladder", default="--start 300 --step 300 --max-rate 4500 --step-seconds 5",
                        help="turnoload step options, the same for every set-up")
    parser.add_argument("--out", type=Path, default=Path("tests/output/compare"))
    args = parser.parse_args()
    # Stopped with SIGTERM, still stop the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("compare: terminated"))
    groups = args.setups.split(",")
    names = [name for name, (group, _) in SETUPS.items() if group in groups]
    found: dict[str, list] = {name: [] for name in names}
    for round_number in range(1, args.rounds + 1):
        for name in names:
            print(f"== round {round_number}: {name}", flush=True)
            out = args.out / f"round{round_number}" / name.replace(" ", "_").replace(",", "")
            with tempfile.TemporaryDirectory(prefix="turnomatic-compare-") as workdir, \
                    Processes(Path(workdir)) as lo:
                target = SETUPS[name][1](lo, lo.redis())
                status = turnoload.main(["--target", target, "--out", str(out), "--label", name,
                                         *args.ladder.split()])
            if status != 0:
                raise SystemExit(f"{name}: ticket violations, see {out / 'report.md'}")
            result = json.loads((out / "steps.json").read_text())
            found[name].append(result["max_load"] or 0)

    baseline = {}
    lines = ["| set-up | max load per round, req/s | median | ratio to the first of its group |",
             "|---|---|---:|---:|"]
    for name in names:
        group = SETUPS[name][0]
        median = statistics.median(found[name])
        baseline.setdefault(group, median)
        ratio = median / baseline[group] if baseline[group] else float("nan")
        lines.append(f"| {name} | {', '.join(map(str, found[name]))} | {median:g} | {ratio:.2f} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
