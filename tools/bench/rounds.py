"""What the side-by-side benchmarks share: wrk's options, one redis-server with the
servers under test stopped on the way out, a statsd sink, and the alternating rounds.

Servers are measured in alternating rounds, not one after the other, so that a change in
the machine's other load falls on every server alike.
"""

import argparse
import contextlib
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.processes import cpu_seconds
from tests.support.service import RedisServer
from tests.support.waiting import wait_until_answers


def parse_args(description, app_threads_help, app_threads_default=4, add_arguments=None):
    """wrk's and the servers' options; add_arguments(parser) adds a benchmark's own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each run (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--app-threads", type=int, default=app_threads_default,
                        help=f"{app_threads_help} (default {app_threads_default})")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    if not shutil.which("wrk") or not shutil.which("redis-server"):
        sys.exit("needs wrk and redis-server (make setup installs them)")
    return args


@contextlib.contextmanager
def redis_and_servers(prefix):
    """(redis URL, list of processes): a redis-server without fsync in a temporary directory,
    and a list to append the servers under test to; all of them are stopped on the way out."""
    processes = []
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        try:
            redis = RedisServer(Path(workdir) / "redis", appendfsync=None).start()
            processes.append(redis.process)
            yield redis.url, processes
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=10)


def statsd_sink():
    """(socket, "host:port"): a UDP socket for the metrics, never read: sending costs what it
    costs on a fleet. Keep the socket referenced for as long as the servers run."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    return sink, "127.0.0.1:%d" % sink.getsockname()[1]


def wrk(url, seconds, threads, connections, pid):
    """req/s, and the server's CPU microseconds per request (steadier than req/s on a busy machine)."""
    cpu_before = cpu_seconds(pid)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors or "Socket errors" in output:
        sys.exit(f"wrk saw errors against {url}:\n{output}")
    cpu = cpu_seconds(pid) - cpu_before
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), cpu / requests * 1e6


def run_rounds(targets, args, setup):
    """targets: {name: (url, process)}. Once each answers, a line saying what runs (wrk's
    options, then `setup`), a short warm-up of each, then args.rounds alternating rounds,
    each printed; returns ({name: [req/s per round]}, {name: [CPU us/req per round]})
    after printing the medians. Each round runs the targets in an order of its own (a
    shuffle seeded by the round's number, the same in every run), so that no target
    always runs after the same neighbour, whose background work (a traced server's
    exports) may still be running."""
    for url, process in targets.values():
        wait_until_answers(url, process)
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.rounds} alternating rounds, {setup}",
          flush=True)
    for url, process in targets.values():
        wrk(url, 2, args.threads, args.connections, process.pid)
    rates = {name: [] for name in targets}
    costs = {name: [] for name in targets}
    for round in range(1, args.rounds + 1):
        order = list(targets)
        random.Random(round).shuffle(order)
        for name in order:
            url, process = targets[name]
            rate, cost = wrk(url, args.seconds, args.threads, args.connections, process.pid)
            rates[name].append(rate)
            costs[name].append(cost)
        print(f"round {round}: " + ", ".join(
            f"{name} {rates[name][-1]:.0f} req/s ({costs[name][-1]:.0f} us CPU/req)" for name in targets
        ), flush=True)
    print("median: " + ", ".join(
        f"{name} {statistics.median(rates[name]):.0f} req/s ({statistics.median(costs[name]):.0f} us CPU/req)"
        for name in targets
    ))
    return rates, costs


def print_cost(name, baseline, rates, costs):
    """What `name` costs against `baseline`: req/s lost and CPU per request added, the
    median and each round. Returns the median req/s lost."""
    rate_costs = [1 - measured / base for measured, base in zip(rates[name], rates[baseline])]
    cpu_costs = [measured / base - 1 for measured, base in zip(costs[name], costs[baseline])]
    print(f"{name} vs {baseline}:\n"
          f"  req/s lost       median {statistics.median(rate_costs):+.1%} "
          f"(rounds {', '.join(f'{c:+.1%}' for c in rate_costs)})\n"
          f"  CPU/req added    median {statistics.median(cpu_costs):+.1%} "
          f"(rounds {', '.join(f'{c:+.1%}' for c in cpu_costs)})")
    return statistics.median(rate_costs)
