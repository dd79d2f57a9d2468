"""Benchmark: CPU per request of this tree's turnomatic against another commit's, in one run.

Three servers on one redis-server, metrics on (to a UDP socket never read), each
`turnomatic serve` with the waitress threads the turnomatic role deploys (one
process each, or --processes alike ones): the app of
BASE (`git archive BASE app/turnomatic`, imported from a temporary directory), the
same again (what two identical servers differ by in the same rounds: the noise), and
this working tree's app. Everything else (waitress, Flask, redis-py, this tree's
`turnomatic serve` options) is the same for all three. wrk runs against each in turn,
in alternating rounds. The change is called outside the noise only when every round
of this tree's ratio to BASE lies beyond the identical pair's range of rounds.

The figure is CPU time per request (the process's user + system time from /proc over
wrk's requests): a process is held by one core (the GIL), so its capacity per core is
1 / CPU per request, and the figure stays steady when other work shares the machine,
where req/s does not.

    make bench-change [BASE=main]   # or: .venv/bin/python -m tools.bench.bench_change --base main [--rounds N]
"""

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.support.paths import REPO, ROLES
from tools.bench.rounds import parse_args, redis_and_servers, run_rounds, start_alike, statsd_sink, turnomatic_server

ROLE_DEFAULTS = ROLES / "turnomatic" / "defaults" / "main.yml"


def main():
    threads = yaml.safe_load(ROLE_DEFAULTS.read_text())["turnomatic_threads"]
    args = parse_args(__doc__, "waitress threads of each server (the role's)", threads, lambda parser: parser.add_argument(
        "--base", default="main", help="the commit whose app this tree's is compared with (default main)"))
    _statsd_socket, statsd = statsd_sink()
    with tempfile.TemporaryDirectory(prefix="turnomatic-bench-change-") as base_dir:
        archive = subprocess.run(["git", "archive", args.base, "app/turnomatic"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", base_dir], input=archive, check=True)
        base_env = {**os.environ, "PYTHONPATH": str(Path(base_dir) / "app")}
        imported = subprocess.run([sys.executable, "-c", "import turnomatic; print(turnomatic.__file__)"],
                                  env=base_env, capture_output=True, text=True, check=True).stdout
        if not imported.startswith(base_dir):
            sys.exit(f"the base's app is not the one imported: {imported}")
        base, again, this = f"{args.base}", f"{args.base}, again", "this tree"
        with redis_and_servers("turnomatic-bench-change-") as (redis_url, processes):
            targets = {
                name: start_alike(args.processes, lambda: turnomatic_server(redis_url, args.app_threads, statsd, env),
                                  processes, "/turno/bench-change")
                for name, env in ((base, base_env), (again, base_env), (this, None))
            }
            rates, costs = run_rounds(targets, args, f"turnomatic with {args.app_threads} waitress threads in each process, "
                                      "redis-server on loopback, metrics on")
    cost_ratios = {name: [c / b for c, b in zip(costs[name], costs[base])] for name in (again, this)}
    rate_ratios = {name: [r / b for r, b in zip(rates[name], rates[base])] for name in (again, this)}
    for name in (again, this):
        print(f"{name} / {base}:\n"
              f"  CPU/req ratio    median {statistics.median(cost_ratios[name]):.3f} "
              f"(rounds {', '.join(f'{r:.3f}' for r in cost_ratios[name])})\n"
              f"  req/s ratio      median {statistics.median(rate_ratios[name]):.3f} "
              f"(rounds {', '.join(f'{r:.3f}' for r in rate_ratios[name])})")
    # Outside the noise only when every round of this tree falls beyond every round of
    # the identical pair, on the same side: one slow round cannot make or hide a change.
    low, high = min(cost_ratios[again]), max(cost_ratios[again])
    outside = all(r < low for r in cost_ratios[this]) or all(r > high for r in cost_ratios[this])
    change = statistics.median(cost_ratios[this]) - 1
    print(f"this tree spends {change:+.1%} CPU per request against {args.base} (median); two identical servers "
          f"were {low:.3f}-{high:.3f} of each other in the same rounds, so the change is "
          f"{'outside' if outside else 'inside'} the noise"
          f"{' (every round beyond that range)' if outside else ''}")


if __name__ == "__main__":
    main()
