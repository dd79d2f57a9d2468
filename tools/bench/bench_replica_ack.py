"""Benchmark: what the replica acknowledgement (WAIT after each increment) costs
turnomatic, in one run, side by side.

One replicated Redis on loopback (a primary, two replicas with AOF appendfsync always,
three sentinels; tests.support.service.ReplicatedRedis) and two servers of `turnomatic
serve` (one process each, or --processes N), the same but for `replica_acks` in their
redis+sentinel:// URL: 1 (a number is handed out once a replica has it, the default
behind Sentinel) and 0 (the primary's answer alone). wrk runs against each in turn, in
alternating rounds. Reported: the requests/s lost and the CPU per request added; no
target (the figure is what it is).

    make bench-replica-ack    # or: .venv/bin/python -m tools.bench.bench_replica_ack [--rounds N --seconds S]
"""

import tempfile
from pathlib import Path

from tests.support.service import ReplicatedRedis
from tools.bench.rounds import parse_args, print_cost, run_rounds, start_alike, turnomatic_server


def main():
    args = parse_args(__doc__, "waitress threads of each server")
    processes = []
    with tempfile.TemporaryDirectory(prefix="turnomatic-bench-replica-ack-") as workdir:
        cluster = ReplicatedRedis(Path(workdir)).start()
        try:
            targets = {
                f"replica_acks={acks}": start_alike(
                    args.processes, lambda: turnomatic_server(cluster.url(replica_acks=acks), args.app_threads),
                    processes, f"/turno/bench-ack-{acks}")
                for acks in (1, 0)
            }
            rates, costs = run_rounds(targets, args, f"turnomatic with {args.app_threads} waitress threads in each process, "
                                      "a primary and 2 replicas (AOF always) and 3 sentinels on loopback")
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
            cluster.stop()
    print_cost(*targets, rates, costs)

if __name__ == "__main__":
    main()
