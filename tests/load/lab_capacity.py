"""The capacity runs on the lab fleet, one after the other, each bounded:

  baseline   both balancers, every app VM: the maximum load
  one-app    app2 drained from both balancers: the maximum load of one app VM
  redis-rtt  the Redis VM's round trip 5 ms longer (the lab's delay fault)
  overload   the balancers' total limit set to the maximum found, then 2x that
             maximum offered for 20 s: served near the maximum, the rest 429 at once

The app VMs are capped at --app-cpu-percent of a core each (25 by default) while
the runs last. Every run checks every ticket and records the CPU and throttling
of every VM per step; each changed setting (CPU cap, drain, delay, limit) is put
back afterwards, also when a run fails. Reports in tests/output/lab/<run>/, a summary on stdout.

    .venv/bin/python tests/load/lab_capacity.py [--runs baseline,one-app,redis-rtt,overload]
        [--ladder "--start 50 --step 50 --max-rate 1500 --step-seconds 8"] [--app-cpu-percent 25]

Needs the converged lab fleet (make lab-up, ansible-playbook site.yml).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import turnoload

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OUT = REPO / "tests" / "output" / "lab"
BALANCERS = ["10.70.17.11", "10.70.17.12"]
REDIS = "10.70.17.31"
VM_CGROUPS = "/sys/fs/cgroup/cpu/turnomatic-lab"
OVERLOAD_SECONDS = 20


def ansible_playbook(*args: str) -> None:
    subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventory/lab", *args], cwd=REPO, check=True,
                   timeout=600, env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))


def render_balancers(**settings) -> None:
    """The balancer role's upstream tasks (nginx.conf, tested, reloaded) on every balancer,
    with the lab's settings and these on top."""
    playbook = [{"name": "Balancer settings for a load run", "hosts": "lb", "gather_facts": False,
                 "tasks": [{"ansible.builtin.include_role": {"name": "balancer", "tasks_from": "upstream"}}]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        json.dump(playbook, file)
        file.flush()
        ansible_playbook(file.name, "-e", json.dumps(settings))


@contextmanager
def app_cpu_capped(percent: int):
    """Every app VM's CPU quota set to percent of a core for the runs (the lab's cgroup v1
    quota, which it sets at boot from lab_vm_cpu_percent), the old quotas put back after."""
    if not percent:
        yield
        return
    quotas = {path: path.read_text() for path in Path(VM_CGROUPS).glob("app*/cpu.cfs_quota_us")}
    try:
        for path in quotas:
            period = int((path.parent / "cpu.cfs_period_us").read_text())
            path.write_text(str(period * percent // 100))
        yield
    finally:
        for path, quota in quotas.items():
            path.write_text(quota)


@contextmanager
def drained(*hosts):
    render_balancers(balancer_drained_hosts=list(hosts))
    try:
        yield
    finally:
        render_balancers()


@contextmanager
def redis_delayed(round_trip_ms: float):
    # The lab's delay applies to each direction: half the round trip each way.
    ansible_playbook("playbooks/fault.yml", "-e", "lab_vm=redis1", "-e", "lab_fault=delay",
                     "-e", f"lab_delay_ms={round_trip_ms / 2}")
    try:
        yield
    finally:
        ansible_playbook("playbooks/fault.yml", "-e", "lab_vm=redis1", "-e", "lab_fault=undelay")


@contextmanager
def total_limit(per_balancer: int):
    render_balancers(balancer_total_rate_limit=per_balancer,
                     balancer_total_rate_limit_burst=max(1, per_balancer // 10))
    try:
        yield
    finally:
        render_balancers()


def ladder(name: str, ladder_args: list[str], extra: list[str] = ()) -> dict:
    out = OUT / name
    status = turnoload.main(["--target", ",".join(f"http://{b}:7017" for b in BALANCERS),
                             "--vm-cgroups", VM_CGROUPS, "--label", f"lab: {name}", "--out", str(out),
                             *ladder_args, *extra])
    result = json.loads((out / "steps.json").read_text())
    result["status"] = status
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="baseline,one-app,redis-rtt,overload")
    parser.add_argument("--ladder", default="--start 50 --step 50 --max-rate 1500 --step-seconds 8")
    parser.add_argument("--app-cpu-percent", type=int, default=25,
                        help="each app VM's CPU share during the runs, so that the app tier, not the "
                             "machine's 2 cores, is what saturates (0: leave the lab's own)")
    args = parser.parse_args()
    runs = args.runs.split(",")
    steps = args.ladder.split()
    seed = ["--odd", "--seed-ssh", f"root@{REDIS}", "--seed-redis", f"redis://admin@{REDIS}:6379/0",
            "--seed-password-file", str(REPO / "inventory" / "lab" / "credentials" / "redis_admin")]
    results = {}
    with app_cpu_capped(args.app_cpu_percent):
        run_all(runs, steps, seed, results)
    print("\n| run | max load req/s | last step | tickets | violations | report |\n|---|---:|---|---:|---:|---|")
    for name, result in results.items():
        last = result["steps"][-1]
        print(f"| {name} | {result['max_load']} | {last['offered']} offered: {last['achieved']:.0f} served, "
              f"{last['refused_per_s']:.0f} refused per s, p99 {turnoload.fmt(last['p99'])} ms "
              f"| {result['tickets']['tickets']} | {len(result['tickets']['violations'])} | {OUT / name / 'report.md'} |")
    return max(r["status"] for r in results.values())


def run_all(runs: list[str], steps: list[str], seed: list[str], results: dict) -> None:
    if "baseline" in runs:
        results["baseline"] = ladder("baseline", steps, seed)
    if "one-app" in runs:
        with drained("app2"):
            results["one-app"] = ladder("one-app", steps)
    if "redis-rtt" in runs:
        with redis_delayed(5):
            results["redis-rtt"] = ladder("redis-rtt", steps)
    if "overload" in runs:
        maximum = (results.get("baseline") or {}).get("max_load")
        if not maximum:
            raise SystemExit("overload needs the baseline's maximum load: run baseline first")
        with total_limit(maximum // len(BALANCERS)):
            # Many connections, as many clients: the generator's own queue must not hide the refusals.
            results["overload"] = ladder("overload", ["--rates", str(2 * maximum), "--connections", "512",
                                                      "--step-seconds", str(OVERLOAD_SECONDS),
                                                      "--stop-after-failures", "1"])


if __name__ == "__main__":
    sys.exit(main())
