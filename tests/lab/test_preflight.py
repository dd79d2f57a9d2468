"""lab-preflight and lab-vm's cgroup detection, on this machine's real kernel: every
network case in a private network namespace (`unshare -n`: the host's bridge and
routes are never touched), every cgroup v2 case on a cgroup2 file system mounted in a
private mount namespace (`unshare -m`). No VM is booted, the lab is not touched."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

LAB_FILES = Path(__file__).resolve().parents[2] / "playbooks" / "lab" / "files"
PREFLIGHT = LAB_FILES / "lab-preflight"
LAB_VM = LAB_FILES / "lab-vm"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)")


def preflight(tmp_path, setup="", env=None, user=None, unshare=("-n",)):
    """Run lab-preflight after the shell commands `setup`, in new namespaces."""
    settings = {
        "LAB_BRIDGE": "tmlab0", "LAB_BRIDGE_ADDRESS": "10.70.17.1", "LAB_BRIDGE_PREFIX": "24",
        "LAB_STATE_DIR": str(tmp_path / "state"), "LAB_CACHE_DIR": str(tmp_path / "cache"),
        "LAB_MIN_FREE_BYTES": str(2**20), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {}),
    }
    run = shlex.quote(str(PREFLIGHT))
    if user:
        run = f"setpriv --reuid={user} --regid=nogroup --clear-groups {run}"
    return subprocess.run(["unshare", *unshare, "sh", "-ec", f"{setup}\n{run}"], capture_output=True, text=True,
                          env=settings, timeout=60)


def refused(result, message):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the lab cannot start on this machine, nothing was changed" in result.stderr
    assert message in result.stderr, result.stderr


def test_a_free_machine_passes(tmp_path):
    result = preflight(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bridge tmlab0 10.70.17.1/24; cgroup v" in result.stdout


def test_the_lab_bridge_with_its_address_is_the_lab_s_own(tmp_path):
    result = preflight(tmp_path, "ip link add tmlab0 type bridge; ip address add 10.70.17.1/24 dev tmlab0")
    assert result.returncode == 0, result.stderr


def test_the_bridge_name_taken_by_another_kind_of_interface(tmp_path):
    refused(preflight(tmp_path, "ip link add tmlab0 type veth peer name peer0"), "an interface named tmlab0 exists and is not a bridge")


def test_the_bridge_name_taken_by_another_bridge(tmp_path):
    result = preflight(tmp_path, "ip link add tmlab0 type bridge; ip address add 192.168.77.1/24 dev tmlab0")
    refused(result, "the bridge tmlab0 exists with address(es) 192.168.77.1/24, not the lab's 10.70.17.1/24")


def test_the_subnet_used_by_another_interface(tmp_path):
    result = preflight(tmp_path, "ip link add other0 type veth peer name peer0; ip address add 10.70.17.50/24 dev other0")
    refused(result, "the lab subnet 10.70.17.0/24 is in use: other0 has 10.70.17.50/24")


def test_the_subnet_inside_another_route(tmp_path):
    result = preflight(tmp_path, "ip link add other0 type veth peer name peer0; ip link set other0 up; ip route add 10.70.0.0/16 dev other0")
    refused(result, "the lab subnet 10.70.17.0/24 overlaps the route 10.70.0.0/16 via other0")


def test_not_root(tmp_path):
    refused(preflight(tmp_path, user="nobody"), "not root")


def test_an_apt_proxy(tmp_path):
    apt_config = tmp_path / "apt.conf"
    apt_config.write_text('Acquire::http::Proxy "http://127.0.0.1:3128";\n')
    refused(preflight(tmp_path, env={"APT_CONFIG": str(apt_config)}), "apt goes through a proxy (Acquire::http::Proxy")


def test_not_enough_disk(tmp_path):
    refused(preflight(tmp_path, env={"LAB_MIN_FREE_BYTES": str(2**60)}), f"not enough disk for {tmp_path}/")


def test_cgroup_v1_without_the_cpu_and_memory_hierarchies(tmp_path):
    (tmp_path / "cgroup").mkdir()
    result = preflight(tmp_path, env={"LAB_CGROUP_ROOT": str(tmp_path / "cgroup")})
    refused(result, f"cgroup v1 at {tmp_path}/cgroup: no cpu and no memory hierarchy mounted")


def test_cgroup_v2_without_the_cpu_and_memory_controllers(tmp_path):
    """On this kernel cpu and memory are bound to their v1 hierarchies, so a cgroup2 mount
    offers neither: what a v2 host that does not delegate them looks like."""
    root = tmp_path / "cgroup2"
    root.mkdir()
    mount = f"mount -t cgroup2 none {root}"
    controllers = subprocess.run(["unshare", "-m", "sh", "-c", f"{mount}; cat {root}/cgroup.controllers"],
                                 capture_output=True, text=True, check=True).stdout.split()
    if {"cpu", "memory"} <= set(controllers):
        pytest.skip("this kernel has cpu and memory on cgroup v2: the lab can use them")
    env = {"LAB_CGROUP_ROOT": str(root)}
    refused(preflight(tmp_path, mount, env=env, unshare=("-n", "-m")), f"cgroup v2 at {root} offers the controllers")
    # lab_vm_limits: false is the way to boot without them.
    result = preflight(tmp_path, mount, env={**env, "LAB_VM_LIMITS": "false"}, unshare=("-n", "-m"))
    assert result.returncode == 0, result.stderr
    assert f"cgroup v2 at {root}; VMs boot without CPU and memory limits" in result.stdout


def test_lab_vm_detects_the_cgroup_version(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    env = {"LAB_STATE_DIR": str(tmp_path), "LAB_CGROUP_ROOT": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    v2 = subprocess.run(["unshare", "-m", "sh", "-ec", f"mount -t cgroup2 none {root}; {LAB_VM} cgroup"],
                        capture_output=True, text=True, env=env, check=True).stdout
    assert v2.strip() == f"cgroup v2: {root}/turnomatic-lab/NAME"
    v1 = subprocess.run([LAB_VM, "cgroup"], capture_output=True, text=True, env=env, check=True).stdout
    assert v1.strip() == f"cgroup v1: {root}/cpu/turnomatic-lab/NAME {root}/memory/turnomatic-lab/NAME"
