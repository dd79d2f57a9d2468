"""The capacity runs on the lab fleet, one after the other, each bounded:

  scale-out  the maximum load with 1, 2 and 4 app VMs, the others drained from both
             balancers; the run with every app VM is the baseline, with unexpected
             values and counters seeded near the limits during a step
  redis-rtt  every app VM, the Redis VM's round trip 5 ms longer (the lab's delay fault)
  overload   the balancers' total limit set to the baseline's maximum, then 2x that
             maximum offered for 20 s: served near the maximum, the rest 429 at once

With --app-vms 4 (the default) app3 and app4 of inventory/lab/scaleout.yml are booted
and deployed with site.yml first; afterwards site.yml puts the fleet back to the
lab's own inventory and they are stopped. The app VMs are capped at
--app-cpu-percent of a core each (25 by default) while the runs last. Every run
checks every ticket and records the CPU and throttling of every VM per step; each
changed setting (VMs, CPU cap, drain, delay, limit) is put back afterwards, also when
a run fails. Reports in tests/output/lab/<run>/, a summary on stdout.

    .venv/bin/python -m tools.load.lab_capacity [--runs scale-out,redis-rtt,overload]
        [--app-vms 2|4] [--ladder "--start 50 --step 50 --max-rate 1500 --step-seconds 8"]
        [--app-cpu-percent 25]

Needs the converged lab fleet (make up).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

from tests.support.ansible import ENV
from tests.support.lab import LAB_INVENTORY as LAB, SCALE_OUT_INVENTORY as SCALE_OUT, credential_file, lab_facts
from tests.support.paths import BIN, OUTPUT, REPO
from tests.support.redis_fleet import RedisFleet
from tools.load import turnoload

OUT = OUTPUT / "lab"
VM_CGROUPS = "/sys/fs/cgroup/cpu/turnomatic-lab"
OVERLOAD_SECONDS = 20


LAB_INVENTORY = ["-i", str(LAB)]
SCALE_OUT_INVENTORY = [*LAB_INVENTORY, "-i", str(SCALE_OUT)]
SITE_TIMEOUT = 30 * 60


def ansible_playbook(inventory: list[str], *args: str, timeout: int = 600) -> None:
    subprocess.run([str(BIN / "ansible-playbook"), *inventory, *args], cwd=REPO, check=True,
                   timeout=timeout, env=ENV)


def app_vms(inventory: list[str]) -> list[str]:
    return lab_facts(*(Path(source) for source in inventory[1::2])).group("app")


def balancers() -> list[str]:
    lab = lab_facts()
    return [lab.address(host) for host in lab.group("lb")]


@contextmanager
def fleet_with_app_vms(count: int):
    """(inventory, app VMs) of the fleet with `count` app VMs: 2 is the lab's own; 4
    adds the app VMs of inventory/lab/scaleout.yml, taken out and stopped afterwards."""
    lab_apps = app_vms(LAB_INVENTORY)
    if count == 2:
        yield LAB_INVENTORY, lab_apps
        return
    scale_out_apps = app_vms(SCALE_OUT_INVENTORY)
    added = [vm for vm in scale_out_apps if vm not in lab_apps]
    try:
        ansible_playbook(SCALE_OUT_INVENTORY, "playbooks/lab.yml", "-e", "lab_action=up")
        ansible_playbook(SCALE_OUT_INVENTORY, "site.yml", timeout=SITE_TIMEOUT)
        yield SCALE_OUT_INVENTORY, scale_out_apps
    finally:
        ansible_playbook(LAB_INVENTORY, "site.yml", timeout=SITE_TIMEOUT)
        for vm in added:
            ansible_playbook(LAB_INVENTORY, "playbooks/fault.yml", "-e", f"lab_vm={vm}", "-e", "lab_fault=stop")


def render_balancers(inventory: list[str], **settings) -> None:
    """The balancer role's upstream tasks (nginx.conf, tested, reloaded) on every balancer,
    with the lab's settings and these on top."""
    playbook = [{"name": "Balancer settings for a load run", "hosts": "lb", "gather_facts": False,
                 "tasks": [{"ansible.builtin.include_role": {"name": "balancer", "tasks_from": "upstream"}}]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        json.dump(playbook, file)
        file.flush()
        ansible_playbook(inventory, file.name, "-e", json.dumps(settings))


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
def balancers_with(inventory: list[str], **settings):
    """Every balancer rendered with these settings for a run, with the lab's own after."""
    render_balancers(inventory, **settings)
    try:
        yield
    finally:
        render_balancers(inventory)


@contextmanager
def redis_delayed(round_trip_ms: float):
    # The lab's delay applies to each direction: half the round trip each way.
    ansible_playbook(LAB_INVENTORY, "playbooks/fault.yml", "-e", "lab_vm=redis1", "-e", "lab_fault=delay",
                     "-e", f"lab_delay_ms={round_trip_ms / 2}")
    try:
        yield
    finally:
        ansible_playbook(LAB_INVENTORY, "playbooks/fault.yml", "-e", "lab_vm=redis1", "-e", "lab_fault=undelay")


def ladder(name: str, ladder_args: list[str], extra: list[str] = ()) -> dict:
    out = OUT / name
    status = turnoload.main(["--target", ",".join(f"http://{b}:7017" for b in balancers()),
                             "--vm-cgroups", VM_CGROUPS, "--label", f"lab: {name}", "--out", str(out),
                             *ladder_args, *extra])
    result = json.loads((out / "steps.json").read_text())
    result["status"] = status
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="scale-out,redis-rtt,overload")
    parser.add_argument("--app-vms", type=int, choices=(2, 4), default=4,
                        help="app VMs of the fleet during the runs (default 4: app3 and app4 added)")
    parser.add_argument("--ladder", default="--start 50 --step 50 --max-rate 1500 --step-seconds 8")
    parser.add_argument("--app-cpu-percent", type=int, default=25,
                        help="each app VM's CPU share during the runs, so that the app tier, not the "
                             "machine's 2 cores, is what saturates (0: leave the lab's own)")
    args = parser.parse_args()
    runs = args.runs.split(",")
    unknown = set(runs) - {"scale-out", "redis-rtt", "overload"}
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    with fleet_with_app_vms(args.app_vms) as (inventory, apps), app_cpu_capped(args.app_cpu_percent):
        results = run_all(runs, args.ladder.split(), inventory, apps)
    print("\n| run | max load req/s | last step | tickets | violations | report |\n|---|---:|---|---:|---:|---|")
    for name, result in results.items():
        last = result["steps"][-1]
        print(f"| {name} | {result['max_load']} | {last['offered']} offered: {last['achieved']:.0f} served, "
              f"{last['refused_per_s']:.0f} refused per s, p99 {turnoload.fmt(last['p99'])} ms "
              f"| {result['tickets']['tickets']} | {len(result['tickets']['violations'])} | {OUT / name / 'report.md'} |")
    scale_out = {name: result["max_load"] for name, result in results.items() if name.startswith("apps-")}
    if scale_out.get("apps-1"):
        print("\nscale-out, max load over 1 app VM's: " + ", ".join(
            f"{name} {load / scale_out['apps-1']:.2f}" for name, load in scale_out.items()))
    return max(r["status"] for r in results.values())


def run_all(runs: list[str], steps: list[str], inventory: list[str], apps: list[str]) -> dict:
    results = {}
    lab = lab_facts()
    # Seeded on the primary the sentinels name: a replica refuses writes.
    redis_host = RedisFleet(lab).primary()
    seed = ["--odd", "--seed-ssh", redis_host, "--seed-redis", f"redis://admin@{lab.address(redis_host)}:6379/0",
            "--seed-password-file", str(credential_file("redis_admin"))]
    baseline = f"apps-{len(apps)}"
    if "scale-out" in runs:
        for count in [n for n in (1, 2, 4) if n < len(apps)] + [len(apps)]:
            drained = apps[count:]
            with balancers_with(inventory, balancer_drained_hosts=drained) if drained else nullcontext():
                results[f"apps-{count}"] = ladder(f"apps-{count}", steps, seed if count == len(apps) else [])
    if "redis-rtt" in runs:
        with redis_delayed(5):
            results["redis-rtt"] = ladder("redis-rtt", steps)
    if "overload" in runs:
        maximum = (results.get(baseline) or {}).get("max_load")
        if not maximum:
            raise SystemExit("overload needs the baseline's maximum load: run scale-out first")
        per_balancer = maximum // len(balancers())
        with balancers_with(inventory, balancer_total_rate_limit=per_balancer,
                            balancer_total_rate_limit_burst=max(1, per_balancer // 10)):
            # Many connections, as many clients: the generator's own queue must not hide the refusals.
            results["overload"] = ladder("overload", ["--rates", str(2 * maximum), "--connections", "512",
                                                      "--step-seconds", str(OVERLOAD_SECONDS),
                                                      "--stop-after-failures", "1"])
    return results


if __name__ == "__main__":
    sys.exit(main())
