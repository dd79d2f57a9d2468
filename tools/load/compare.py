"""Side-by-side capacity of turnomatic set-ups on loopback, in one run.

Each set-up (waitress threads, processes, nginx upstream keep-alive) is started
on this machine with a fresh redis-server, measured, and stopped; the set-ups
alternate for --rounds rounds, and the table gives each one's figure per round,
the median and its ratio to the first set-up of its group. Absolute figures move
with whatever else runs on the machine; the ratios are what to compare.

Two measures: `--measure wrk` (default) is the saturated throughput from wrk
(closed loop, 32 connections): robust on a busy machine, where the p99 of an
open-loop step mostly measures the neighbours. `--measure ladder` is turnoload's
maximum load under the SLO (open loop, every ticket checked): the real figure,
for a quiet machine.

    .venv/bin/python -m tools.load.compare --setups threads --rounds 2
    .venv/bin/python -m tools.load.compare --setups processes,keepalive
    .venv/bin/python -m tools.load.compare --setups scaleout
    .venv/bin/python -m tools.load.compare --setups overload --measure overload --overload-rate 1200
"""

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import CPU_CGROUPS, Processes
from tools.load import turnoload

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
    # The balancer role's nginx.conf in front of 1, 2, 4 app nodes, each capped at a
    # quarter of a core (2 processes), as lab VMs of the same CPU share.
    "1 app node at 25 %": ("scaleout", lambda lo, r: app_nodes(lo, r, 1)),
    "2 app nodes at 25 % each": ("scaleout", lambda lo, r: app_nodes(lo, r, 2)),
    "4 app nodes at 25 % each": ("scaleout", lambda lo, r: app_nodes(lo, r, 4)),
    # The balancer role's nginx.conf in front of one app node (2 processes at 50 % of a
    # core), offered --overload-rate, with and without the limit on all clients together.
    "balancer, no total limit": ("overload", lambda lo, r: overload_node(lo, r, 0)),
    "balancer, total limit 500 req/s": ("overload", lambda lo, r: overload_node(lo, r, 500)),
}


# The load generator is one client address: the role's per-client limits would refuse it.
ONE_GENERATOR_UNLIMITED = {"balancer_rate_limit": 100000, "balancer_rate_limit_burst": 10000,
                           "balancer_client_connection_limit": 100000}


def overload_node(lo: Processes, redis_url: str, total_limit: int) -> str:
    port = free_port()
    lo.turnomatic(redis_url, processes=2, port=port, host="127.0.0.2", cpu_percent=50)
    return lo.balancer(port, {**ONE_GENERATOR_UNLIMITED, "balancer_total_rate_limit": total_limit,
                              "balancer_total_rate_limit_burst": total_limit // 10}, ("127.0.0.2",))


def app_nodes(lo: Processes, redis_url: str, count: int) -> str:
    port = free_port()
    hosts = tuple(f"127.0.0.{n}" for n in range(2, 2 + count))
    for host in hosts:
        lo.turnomatic(redis_url, processes=2, port=port, host=host, cpu_percent=25)
    # The nodes' capacity, not the total limit the role derives from a measured one.
    return lo.balancer(port, {**ONE_GENERATOR_UNLIMITED, "balancer_total_rate_limit": 0}, hosts)


def wrk_throughput(target: str, seconds: int) -> float:
    """Requests per second wrk got from the target (200s only: any other status fails)."""
    output = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", f"{target}/turno/compare"],
                            capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors against {target}:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def ladder_max_load(target: str, ladder: str, name: str, out: Path) -> float:
    # The CPU and throttling of capped app nodes, per step, in the report.
    cgroups = ["--vm-cgroups", str(CPU_CGROUPS)] if CPU_CGROUPS.is_dir() else []
    status = turnoload.main(["--target", target, "--out", str(out), "--label", name, *cgroups, *ladder.split()])
    if status != 0:
        raise SystemExit(f"{name}: ticket violations, see {out / 'report.md'}")
    return json.loads((out / "steps.json").read_text())["max_load"] or 0


def overload_step(target: str, rate: int, seconds: int, name: str, out: Path) -> str:
    """One open-loop step at rate: served per s, refused per s, p99 of the served."""
    # Many connections, as many clients: the generator's own queue must not hide the refusals.
    status = turnoload.main(["--target", target, "--rates", str(rate), "--step-seconds", str(seconds),
                             "--connections", "512", "--out", str(out), "--label", name])
    if status != 0:
        raise SystemExit(f"{name}: ticket violations, see {out / 'report.md'}")
    step = json.loads((out / "steps.json").read_text())["steps"][0]
    return (f"{step['achieved']:.0f} served/s, {step['refused_per_s']:.0f} refused/s, "
            f"p99 served {turnoload.fmt(step['p99'])} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default="threads,processes,keepalive",
                        help="groups to compare: threads, processes, keepalive, scaleout, overload")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", choices=["wrk", "ladder", "overload"], default="wrk")
    parser.add_argument("--overload-rate", type=int, default=1200, help="offered req/s for --measure overload")
    parser.add_argument("--seconds", type=int, default=8, help="wrk seconds per set-up and round")
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
            out = args.out / f"round{round_number}" / re.sub(r"[^A-Za-z0-9]+", "_", name)
            with tempfile.TemporaryDirectory(prefix="turnomatic-compare-") as workdir, \
                    Processes(Path(workdir)) as lo:
                target = SETUPS[name][1](lo, lo.redis())
                if args.measure == "wrk":
                    found[name].append(round(wrk_throughput(target, args.seconds)))
                elif args.measure == "ladder":
                    found[name].append(ladder_max_load(target, args.ladder, name, out))
                else:
                    found[name].append(overload_step(target, args.overload_rate, args.seconds, name, out))
            print(f"   {found[name][-1]}", flush=True)

    if args.measure == "overload":
        table = "\n".join([f"| set-up | {args.overload_rate} req/s offered, per round |", "|---|---|"]
                          + [f"| {name} | {'; '.join(found[name])} |" for name in names])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(table + "\n")
        print(table)
        return
    baseline = {}
    measure = "wrk req/s" if args.measure == "wrk" else "max load under the SLO, req/s"
    lines = [f"| set-up | {measure}, per round | median | ratio to the first of its group |",
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
