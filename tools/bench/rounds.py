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

from tests.support.ports import free_port
from tests.support.processes import cpu_seconds
from tests.support.service import RedisServer
from tests.support.waiting import wait_until_answers


def parse_args(description, app_threads_help, app_threads_default=4, add_arguments=None, processes_default=1):
    """wrk's and the servers' options; add_arguments(parser) adds a benchmark's own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each run (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--app-threads", type=int, default=app_threads_default,
                        help=f"{app_threads_help} (default {app_threads_default})")
    parser.add_argument("--processes", type=int, default=processes_default,
                        help="alike processes behind each server's figure, each measured in every round "
                             f"(default {processes_default}): two processes of the same code can differ by a "
                             "few percent for as long as they live")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1 or args.processes < 1:
        parser.error("--rounds, --seconds and --processes must be at least 1")
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


def turnomatic_server(store_url, threads, statsd=None, env=None):
    """(port, process): `turnomatic serve` on a free port of loopback, its errors discarded
    (wrk counts the failed answers); env replaces the environment when given."""
    port = free_port()
    options = ["--statsd", statsd] if statsd else []
    process = subprocess.Popen(
        [sys.executable, "-m", "turnomatic", "serve", "--port", str(port), "--store", store_url, *options,
         "--threads", str(threads)],
        env=env, stderr=subprocess.DEVNULL,
    )
    return port, process


def start_alike(count, start, processes, path):
    """[(url, process)]: `count` processes started by start() -> (port, process), each
    appended to `processes` (to be stopped on the way out) as soon as it runs; each URL
    is `path` on its process with a suffix of its own (an id of its own)."""
    servers = []
    for _ in range(count):
        port, process = start()
        processes.append(process)
        servers.append((f"http://127.0.0.1:{port}{path}-{len(processes)}", process))
    return servers


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
    """targets: {name: [(url, process), ...]}, one or more alike processes per name. Once
    each answers, a line saying what runs (wrk's options, then `setup`), a short warm-up
    of each, then args.rounds alternating rounds, each printed; returns ({name: [req/s
    per round]}, {name: [CPU us/req per round]}) after printing the medians. A name's
    figure in a round is the mean of its processes' runs: two processes of the same code
    differ by a few percent for as long as they live (where their memory landed, their
    hash seed), and a name served by several is less at the mercy of one. Each round
    runs every process in an order of its own (a shuffle seeded by the round's number,
    the same in every run), so that none always runs after the same neighbour, whose
    background work (a traced server's exports) may still be running."""
    runs = [(name, url, process) for name, servers in targets.items() for url, process in servers]
    for _name, url, process in runs:
        wait_until_answers(url, process)
    process_counts = sorted({len(servers) for servers in targets.values()})
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.rounds} alternating rounds, "
          f"{'/'.join(map(str, process_counts))} process(es) per server, {setup}", flush=True)
    for _name, url, process in runs:
        wrk(url, 2, args.threads, args.connections, process.pid)
    rates = {name: [] for name in targets}
    costs = {name: [] for name in targets}
    for round in range(1, args.rounds + 1):
        order = list(runs)
        random.Random(round).shuffle(order)
        measured = {name: [] for name in targets}
        for name, url, process in order:
            measured[name].append(wrk(url, args.seconds, args.threads, args.connections, process.pid))
        for name, figures in measured.items():
            rates[name].append(statistics.mean(rate for rate, _cost in figures))
            costs[name].append(statistics.mean(cost for _rate, cost in figures))
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
