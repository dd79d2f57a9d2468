"""The lab, end to end, on this machine: up, every inventory host reachable by
Ansible and running systemd, each fault primitive, down, nothing left.

Destructive for the lab: it starts by deleting the VMs' disks (bare VMs) and
takes the whole lab down at the end (and in the middle, to check that `up`
copes with what an interrupted run leaves).
Runs as root, as `make test` does.
"""

import json
import os
import re
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ansible import ENV as ANSIBLE_ENV
from tests.support.lab import lab_facts
from tests.support.paths import BIN, REPO

pytestmark = [pytest.mark.lab, pytest.mark.destructive]
LAB = lab_facts()
STATE_DIR = LAB.state_dir
FAULT_VM = LAB.group("client")[0]
FAULT_ADDRESS = LAB.address(FAULT_VM)
# What playbooks/lab/files/lab-vm reads, from the same inventory.
ENV = dict(ANSIBLE_ENV, LAB_STATE_DIR=str(STATE_DIR))


def run(*args, timeout=600, check=True):
    result = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return result


def lab(action, *extra):
    started = time.monotonic()
    result = run(str(BIN / "ansible-playbook"), "playbooks/lab.yml", "-e", f"lab_action={action}", *extra)
    return result, time.monotonic() - started


def fault(name, vm=FAULT_VM, *extra):
    return run(str(BIN / "ansible-playbook"), "playbooks/fault.yml", "-e", f"lab_vm={vm}",
               "-e", f"lab_fault={name}", *extra)


def recap_changed(output):
    return {host: int(changed) for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def ansible_ad_hoc(module, args=None, pattern="all"):
    """{host: result} of an ad-hoc module run over SSH; result["ok"] tells success."""
    command = [str(BIN / "ansible"), pattern, "-m", module, "-T", "5"]
    if args:
        command += ["-a", args]
    env = dict(ENV, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    output = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120).stdout
    results = json.loads(output)["plays"][0]["tasks"][0]["hosts"]
    for result in results.values():
        result["ok"] = not result.get("unreachable") and not result.get("failed")
    return results


def pings(pattern="all"):
    return {host: result["ok"] for host, result in ansible_ad_hoc("ansible.builtin.ping", pattern=pattern).items()}


def tcp_round_trip_ms(address, samples=9):
    """Median time of a TCP handshake with the VM's sshd: one round trip."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        with socket.create_connection((address, 22), timeout=3):
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def reachable(address):
    try:
        with socket.create_connection((address, 22), timeout=2):
            return True
    except OSError:
        return False


def lab_vm(*args):
    return run("sh", "playbooks/lab/files/lab-vm", *args, check=False).stdout.strip()


def lab_processes():
    """Processes of the lab still running: nspawn on a lab disk, the proxy, delay relays."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if f"{STATE_DIR}/" in text and cmdline.parent.name != str(os.getpid()):
            if "systemd-nspawn" in text or "nginx" in text or "lab-delay" in text:
                found.append(f"{cmdline.parent.name}: {text}")
    return found


def idle_memory_mib(names):
    """RAM the VMs' processes use (rss + shared memory, no page cache), from their cgroups."""
    total = 0
    for name in names:
        stats = dict(line.split() for line in
                     Path(f"/sys/fs/cgroup/memory/turnomatic-lab/{name}/memory.stat").read_text().splitlines())
        total += int(stats["total_rss"]) + int(stats["total_shmem"])
    return total / 2**20



def test_lab_up_faults_down():
    hosts = sorted(LAB.hosts)
    assert len(hosts) >= 8

    # Bare VMs from the cached image (what roles have installed on them is
    # not the lab's to test); up again: nothing to change.
    lab("down", "-e", "lab_wipe=true")
    _, up_seconds = lab("up")
    second, again_seconds = lab("up")
    assert set(recap_changed(second.stdout).values()) == {0}, second.stdout[-3000:]
    print(f"\nlab up (new disks): {up_seconds:.1f} s; again (all running): {again_seconds:.1f} s")

    assert pings() == {host: True for host in hosts}

    # systemd is PID 1 and has finished booting, with no failed unit but for
    # the cgroup race `up` documents: a unit that refuses a manual start and
    # failed with 219/CGROUP at boot (docs/lab.md).
    states = ansible_ad_hoc("ansible.builtin.shell",
                            "systemctl is-system-running; for unit in $(systemctl --failed --no-legend --plain"
                            " | cut -d' ' -f1); do echo $unit=$(systemctl show -P ExecMainStatus $unit); done")
    assert sorted(states) == hosts
    for host, result in states.items():
        lines = result["stdout_lines"]
        assert lines[0] in ("running", "degraded"), (host, result)
        assert all(line.endswith("=219") for line in lines[1:]), (host, result)
        if lines[0] == "degraded":
            print(f"{host}: degraded by the boot-time cgroup race: {lines[1:]}")
    init = ansible_ad_hoc("ansible.builtin.command", "cat /proc/1/comm")
    assert {host: result["stdout"] for host, result in init.items()} == {host: "systemd" for host in hosts}

    memory = idle_memory_mib(hosts)
    print(f"lab idle: {len(hosts)} VMs use {memory:.0f} MiB of RAM together")
    assert memory < 1536

    # kill: a power cut, the VM is gone; start: back on the same disk.
    fault("kill")
    assert lab_vm("pid", FAULT_VM) == ""
    assert not reachable(FAULT_ADDRESS)
    assert not pings(FAULT_VM)[FAULT_VM]
    fault("start")
    assert pings(FAULT_VM)[FAULT_VM]

    # stop: a clean poweroff; start again.
    fault("stop")
    assert lab_vm("pid", FAULT_VM) == ""
    assert not reachable(FAULT_ADDRESS)
    fault("start")
    assert pings(FAULT_VM)[FAULT_VM]

    # cut: the VM runs on but nobody reaches it; heal: reachable again.
    fault("cut")
    assert lab_vm("pid", FAULT_VM) != ""
    assert not reachable(FAULT_ADDRESS)
    assert not pings(FAULT_VM)[FAULT_VM]
    fault("heal")
    assert pings(FAULT_VM)[FAULT_VM]

    # delay: the round trip grows by the delay asked for; undelay: back.
    before = tcp_round_trip_ms(FAULT_ADDRESS)
    fault("delay", FAULT_VM, "-e", "lab_delay_ms=40")
    delayed = tcp_round_trip_ms(FAULT_ADDRESS)
    assert pings(FAULT_VM)[FAULT_VM]
    fault("undelay")
    after = tcp_round_trip_ms(FAULT_ADDRESS)
    print(f"round trip to {FAULT_VM}: {before:.2f} ms, with +40 ms delay {delayed:.2f} ms, after {after:.2f} ms")
    assert 38 <= delayed - before <= 80
    assert after < before + 5

    # Down with a delay in place: nothing of the lab may be left.
    fault("delay", FAULT_VM, "-e", "lab_delay_ms=10")
    _, down_seconds = lab("down")
    print(f"lab down: {down_seconds:.1f} s")
    assert_nothing_left()

    # What an interrupted run leaves: a stale proxy pid file, a disk that was
    # never finished. up copes, and makes that VM again.
    (STATE_DIR / "proxy" / "nginx.pid").write_text(f"{os.getpid()}\n")
    unfinished = STATE_DIR / "disks" / FAULT_VM / "ready"
    unfinished.unlink()
    _, up_seconds = lab("up")
    print(f"lab up after an interrupted run: {up_seconds:.1f} s")
    assert unfinished.exists()
    assert pings() == {host: True for host in hosts}

    lab("down")
    assert_nothing_left()


def assert_nothing_left():
    assert lab_processes() == []
    assert not Path(f"/sys/class/net/{LAB.bridge}").exists()
    leftovers = [path for path in Path("/sys/fs/cgroup/cpu/turnomatic-lab").glob("*/cgroup.procs")
                 if path.read_text().strip()]
    assert leftovers == []
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if f" {STATE_DIR}/" in line]
    assert mounts == []
    assert not any(name.startswith("tmdl") for name in os.listdir("/sys/class/net"))
