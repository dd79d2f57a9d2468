"""CPU of the lab's VMs during a load step, from their cgroups, to tell what saturates.

The lab puts each VM in a cgroup v1 of the cpu controller
(/sys/fs/cgroup/cpu/turnomatic-lab/<vm>) whose quota is the VM's CPU share. Per
step and VM this gives the CPU used (its processes' user+system time from /proc, in
% of one core) and the share of scheduler periods in which the quota throttled the
VM: a VM throttled in most periods is at its CPU limit.
"""

from pathlib import Path

from tests.support.processes import cpu_seconds


def _cpu_seconds(cgroup: Path) -> float:
    """User+system time of the cgroup's processes."""
    total = 0.0
    for pid in (cgroup / "cgroup.procs").read_text().split():
        try:
            total += cpu_seconds(int(pid))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended since the list was read
    return total


def _throttle(cgroup: Path) -> tuple[int, int]:
    stat = dict(line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())
    return int(stat["nr_periods"]), int(stat["nr_throttled"])


def sample(root: Path) -> dict:
    """Counters of every VM cgroup under root, to be compared with a later sample."""
    found = {}
    for cgroup in sorted(p for p in root.iterdir() if (p / "cpu.stat").is_file()):
        try:
            found[cgroup.name] = (_cpu_seconds(cgroup), *_throttle(cgroup))
        except FileNotFoundError:
            continue  # a VM that stopped meanwhile
    return found


def usage(before: dict, after: dict, seconds: float) -> dict:
    """Per VM: {"cpu_percent": of one core, "throttled_percent": of scheduler periods}."""
    result = {}
    for name, (cpu, periods, throttled) in after.items():
        if name not in before:
            continue
        cpu0, periods0, throttled0 = before[name]
        result[name] = {
            # Processes that ended between the samples take their time with them: never below 0.
            "cpu_percent": max(0, round(100 * (cpu - cpu0) / seconds)),
            "throttled_percent": round(100 * (throttled - throttled0) / max(1, periods - periods0)),
        }
    return result
