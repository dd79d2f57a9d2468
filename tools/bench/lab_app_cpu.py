"""CPU per request of the lab's app VMs at saturation, for several process x thread
settings side by side (rounds alternate): Redis on its own VM, both balancers in front,
wrk from this machine against each balancer, every app VM capped at --app-cpu-percent
of a core so that the app tier saturates, not the machine.

A setting is PROCESSESxTHREADS: that many `turnomatic@` instances on each app VM (the
role's template unit, all on the one port with SO_REUSEPORT), each with that many
waitress threads. Per setting and round: req/s through the balancers (200s only;
anything else fails the run) and the app VMs' CPU time per request (their cgroups:
every process of the VM). CPU per request is the figure to compare: the capacity of
an app core is 1 / it, and it stays steadier than req/s on a shared machine.

The app VMs are put back as the turnomatic role left them afterwards (its environment
file and instances), also when a run fails.

    make bench-lab-app [LAB_BENCH_ARGS="--settings 2x8,1x8,2x2 --rounds 3"]

Needs the converged lab fleet (make up).
"""

import argparse
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.lab import lab_facts
from tools.load import vmcpu
from tools.load.lab_capacity import VM_CGROUPS, app_cpu_capped

ENV_FILE = "/etc/turnomatic/turnomatic.env"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="2x8,1x8,1x4,1x2,2x2,4x2",
                        help="PROCESSESxTHREADS per app VM, comma-separated (the first is the baseline)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10, help="wrk seconds per setting and round")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections per balancer")
    parser.add_argument("--app-cpu-percent", type=int, default=25, help="each app VM's CPU share (0: leave it)")
    args = parser.parse_args()
    args.settings = [tuple(int(n) for n in s.split("x")) for s in args.settings.split(",")]
    return args


def apply(lab, app: str, processes: int, threads: int) -> None:
    """That many instances with that many threads each on the app VM, then wait until each listens."""
    lab.ssh(app, f"sed -i 's/^TURNOMATIC_THREADS=.*/TURNOMATIC_THREADS={threads}/' {ENV_FILE} && "
                 "systemctl stop 'turnomatic@*' && "
                 f"systemctl start $(seq -f 'turnomatic@%g' 1 {processes})", timeout=120)
    # Each instance listening on the port (SO_REUSEPORT: one listening socket per process).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listening = lab.ssh(app, "ss -Hltn 'sport = :7017' | wc -l", check=False).stdout.strip()
        if listening == str(processes):
            return
        time.sleep(1)
    raise SystemExit(f"{app}: {processes} instances not ready within 60 s")


@contextmanager
def restored(lab, apps: list[str]):
    """The app VMs' environment file and instances as they are now, put back afterwards."""
    saved = {app: (lab.ssh(app, f"cat {ENV_FILE}").stdout,
                   lab.ssh(app, "systemctl list-units --no-legend --plain 'turnomatic@*' | awk '{print $1}'").stdout.split())
             for app in apps}
    try:
        yield
    finally:
        for app, (env, units) in saved.items():
            lab.ssh(app, f"cat > {ENV_FILE} && systemctl stop 'turnomatic@*' && systemctl start {' '.join(units)}",
                    input=env, timeout=120)


def wrk_all(urls: list[str], seconds: int, connections: int) -> int:
    """wrk against every URL at once; the number of requests (all must be 200)."""
    runs = [subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url], stdout=subprocess.PIPE,
                             text=True) for url in urls]
    total = 0
    for run, url in zip(runs, urls):
        output = run.communicate(timeout=seconds + 60)[0]
        if "Non-2xx" in output or "Socket errors" in output:
            raise SystemExit(f"wrk saw errors against {url}:\n{output}")
        total += int(re.search(r"(\d+) requests in", output).group(1))
    return total


def main() -> int:
    args = parse_args()
    lab = lab_facts()
    apps = lab.group("app")
    urls = [f"http://{lab.address(lb)}:7017/turno/lab-bench-{lb}" for lb in lab.group("lb")]
    rates = {s: [] for s in args.settings}
    costs = {s: [] for s in args.settings}
    cgroups = Path(VM_CGROUPS)
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s against each of {len(urls)} balancers, "
          f"{len(apps)} app VMs at {args.app_cpu_percent or 'their own'} % of a core, {args.rounds} rounds", flush=True)
    with restored(lab, apps), app_cpu_capped(args.app_cpu_percent):
        for round_number in range(1, args.rounds + 1):
            for processes, threads in args.settings:
                for app in apps:
                    apply(lab, app, processes, threads)
                wrk_all(urls, 2, args.connections)  # warm-up: connections, first requests
                before = vmcpu.sample(cgroups)
                started = time.monotonic()
                requests = wrk_all(urls, args.seconds, args.connections)
                elapsed = time.monotonic() - started
                after = vmcpu.sample(cgroups)
                cpu = sum(after[app][0] - before[app][0] for app in apps)
                rates[(processes, threads)].append(requests / elapsed)
                costs[(processes, threads)].append(cpu / requests * 1e6)
                print(f"round {round_number} {processes}x{threads}: {requests / elapsed:.0f} req/s, "
                      f"{cpu / requests * 1e6:.0f} us app-VM CPU per request", flush=True)
    baseline = args.settings[0]
    print(f"\n| processes x threads per app VM | req/s per round | CPU us/request per round | median CPU us/request "
          f"| CPU/request ratio to {baseline[0]}x{baseline[1]} (spread) |\n|---|---|---|---:|---|")
    for setting in args.settings:
        ratios = [c / b for c, b in zip(costs[setting], costs[baseline])]
        print(f"| {setting[0]}x{setting[1]} | {', '.join(f'{r:.0f}' for r in rates[setting])} | "
              f"{', '.join(f'{c:.0f}' for c in costs[setting])} | {statistics.median(costs[setting]):.0f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
