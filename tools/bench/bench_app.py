"""Benchmark: turnomatic (Flask on waitress, Redis store, metrics on) against a bare
WSGI callable doing the same Redis increment on waitress, in the same run.

Runs wrk (Debian) against each server in turn, alternating, and prints requests/s
and the ratios. Every server is one process (or --processes alike ones) against one
local redis-server, with --app-threads waitress threads (4 by default) but for the two
turnomatic rows below that compare the role's settings. Target: turnomatic >= 0.90 of
the bare callable's req/s.

Six servers:
- turnomatic, as `turnomatic serve` runs it (its GIL switch interval), with the
  baselines' thread count;
- turnomatic as deployed: the thread count the turnomatic role sets per process
  (roles/turnomatic/defaults/main.yml; the role runs one process per core);
- turnomatic, previous settings: the role's thread count per process before
  docs/capacity.md "Per core" (PREVIOUS_THREADS); deployed / previous is what the
  change of settings gained per core;
- bare: the bare callable on waitress as it comes (Python's 5 ms interval): the target's baseline;
- bare, same interval: the bare callable with turnomatic's interval (since it is
  Python's 5 ms, the same as "bare": the pair shows the noise), so that
  turnomatic / it is what Flask and turnomatic's own code cost, nothing else;
- minimal Flask: one route doing the same increment (minimal_flask_app.py), same interval:
  minimal Flask / bare same interval is the most any Flask app reaches;
  turnomatic / minimal Flask is what turnomatic's own code costs.

It also prints each server's CPU time per request (from /proc): one process is bound
by one core (the GIL), so its capacity is 1 / CPU per request, and that ratio stays
steadier than req/s when other work shares the machine.

It ends with the target and whether it is met, and exits 1 when it is not.

    make bench-app [ROUNDS=N] [SECONDS=S]   # or: .venv/bin/python -m tools.bench.bench_app [--rounds N --seconds S]
"""

import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.ports import free_port
from tools.bench.rounds import parse_args, redis_and_servers, run_rounds, start_alike, statsd_sink, turnomatic_server
from turnomatic.cli import GIL_SWITCH_INTERVAL

HERE = Path(__file__).resolve().parent
ROLE_DEFAULTS = HERE.parent.parent / "roles" / "turnomatic" / "defaults" / "main.yml"
# The turnomatic role's waitress threads per process before docs/capacity.md "Per core".
PREVIOUS_THREADS = 8
# turnomatic's req/s over the bare callable's on waitress as it comes (median of the rounds).
TARGET = 0.90


def main():
    args = parse_args(__doc__, "waitress threads of every server")
    _statsd_socket, statsd = statsd_sink()
    with redis_and_servers("turnomatic-bench-") as (redis_url, processes):
        deployed_threads = yaml.safe_load(ROLE_DEFAULTS.read_text())["turnomatic_threads"]
        bench_env = {**os.environ, "BENCH_REDIS_URL": redis_url}
        tuned_env = {**bench_env, "BENCH_GIL_SWITCH_INTERVAL": str(GIL_SWITCH_INTERVAL)}

        def turnomatic(threads):
            return turnomatic_server(redis_url, threads, statsd)

        def waitress_process(app_name, env):
            port = free_port()
            return port, subprocess.Popen(
                [sys.executable, "-m", "waitress", "--listen", f"127.0.0.1:{port}", "--threads",
                 str(args.app_threads), app_name],
                cwd=HERE, env=env, stderr=subprocess.DEVNULL,
            )

        servers = {
            "turnomatic": lambda: turnomatic(args.app_threads),
            f"as deployed ({deployed_threads} threads)": lambda: turnomatic(deployed_threads),
            f"previous settings ({PREVIOUS_THREADS} threads)": lambda: turnomatic(PREVIOUS_THREADS),
            "bare": lambda: waitress_process("bare_app:application", bench_env),
            "bare same interval": lambda: waitress_process("bare_app:application", tuned_env),
            "minimal Flask": lambda: waitress_process("minimal_flask_app:app", tuned_env),
        }
        targets = {name: start_alike(args.processes, start, processes, "/turno/bench-app")
                   for name, start in servers.items()}
        rates, costs = run_rounds(targets, args, f"{args.app_threads} waitress threads in each process but where named, "
                                  f"redis-server on loopback; turnomatic's GIL switch interval "
                                  f"{GIL_SWITCH_INTERVAL * 1000:g} ms")

        def ratios(name, baseline):
            """req/s ratio per round, and CPU per request ratio per round (baseline's / name's)."""
            return ([a / b for a, b in zip(rates[name], rates[baseline])],
                    [b / a for a, b in zip(costs[name], costs[baseline])])

        def show(label, name, baseline):
            rate_ratios, cost_ratios = ratios(name, baseline)
            print(f"{label}\n"
                  f"  req/s ratio      median {statistics.median(rate_ratios):.3f} "
                  f"(rounds {', '.join(f'{r:.3f}' for r in rate_ratios)})\n"
                  f"  CPU/req ratio    median {statistics.median(cost_ratios):.3f} "
                  f"(rounds {', '.join(f'{r:.3f}' for r in cost_ratios)})")

        print("req/s ratio: the first server's requests per second over the second's (above 1: the first serves more)\n"
              "CPU/req ratio: the second server's CPU time per request over the first's (above 1: the first spends "
              "less CPU per request; steadier than req/s when other work shares the machine)")
        show("turnomatic as deployed / previous settings (what the role's settings gained per process):",
             f"as deployed ({deployed_threads} threads)", f"previous settings ({PREVIOUS_THREADS} threads)")
        show("turnomatic / bare callable on waitress as it comes (the target):", "turnomatic", "bare")
        show("turnomatic / bare with the same GIL interval (what Flask and turnomatic's code cost):",
             "turnomatic", "bare same interval")
        show("minimal Flask / bare with the same GIL interval (the most a Flask app reaches):",
             "minimal Flask", "bare same interval")
        show("turnomatic / minimal Flask (turnomatic's own code):", "turnomatic", "minimal Flask")
        achieved = statistics.median(ratios("turnomatic", "bare")[0])
        met = achieved >= TARGET
        print(f"target: turnomatic serves >= {TARGET:.2f}x the req/s of the bare callable on waitress as it comes "
              f"(median of {args.rounds} rounds): {achieved:.2f}, {'met' if met else 'NOT met'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
