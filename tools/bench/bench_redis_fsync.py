"""What appendfsync always costs against everysec: redis-benchmark INCR, side by side.

Two redis-servers from Debian on loopback, AOF on, identical but for appendfsync,
their data in directories on the same disk (the lab VMs' disks are directories
of this machine too). Rounds alternate between them so that both see the same
background noise; the script prints each round, the medians and the ratio.

    .venv/bin/python -m tools.bench.bench_redis_fsync [--requests N] [--clients C] [--rounds R]
"""

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from tests.support.service import RedisServer


def incr_rate(port, requests, clients):
    output = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", "incr", "-n", str(requests), "-c", str(clients), "-q", "--csv"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    # --csv: a header line, then "INCR","<rps>",...
    row = [line for line in output.splitlines() if line.startswith('"INCR"')][0]
    return float(row.split(",")[1].strip('"'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    policies = ["always", "everysec"]
    rates = {policy: [] for policy in policies}
    with tempfile.TemporaryDirectory(prefix="bench-redis-fsync-") as workdir:
        servers = {policy: RedisServer(Path(workdir) / policy, appendfsync=policy).start() for policy in policies}
        try:
            for round_number in range(1, args.rounds + 1):
                for policy in policies:
                    rate = incr_rate(servers[policy].port, args.requests, args.clients)
                    rates[policy].append(rate)
                    print(f"round {round_number}  appendfsync {policy:8}  {rate:10.0f} INCR/s", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    medians = {policy: statistics.median(values) for policy, values in rates.items()}
    print(f"\nINCR/s, median of {args.rounds} rounds, {args.requests} requests, {args.clients} clients:")
    for policy in policies:
        print(f"  appendfsync {policy:8}  {medians[policy]:10.0f}")
    print(f"  always / everysec = {medians['always'] / medians['everysec']:.2f}")


if __name__ == "__main__":
    main()
