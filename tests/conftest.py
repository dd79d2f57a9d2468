"""Fixtures shared by the suites that run on the lab fleet (tests/fleet, and the
monitoring and load suites): the lab's VMs up, and the fleet converged by
site.yml, each done once per pytest session.

    def test_something(fleet):
        fleet.ssh("client1", "getent hosts turnomatic.lab")
        fleet.address("lb1")                  # "10.70.17.11"
        fleet.playbook("playbooks/rolling_update.yml")
"""

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUTPUT = REPO / "tests" / "output"
LAB_INVENTORY = REPO / "inventory" / "lab"
LAB_SSH_KEY = "/var/lib/turnomatic-lab/ssh/id_ed25519"
SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes",
]
PLAYBOOK_TIMEOUT = 20 * 60
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def lab_hosts():
    """Inventory name → address, from inventory/lab/hosts.yml."""
    hosts = {}

    def walk(group):
        for name, variables in (group.get("hosts") or {}).items():
            hosts[name] = (variables or {}).get("ansible_host")
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(yaml.safe_load((LAB_INVENTORY / "hosts.yml").read_text())["all"])
    return hosts


@dataclass
class PlaybookRun:
    command: list
    returncode: int
    seconds: float
    output: str
    log: Path

    @property
    def recap(self):
        """Host → {"ok", "changed", "unreachable", "failed"} from the PLAY RECAP."""
        return {
            host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts)))
            for host, *counts in RECAP_LINE.findall(self.output)
        }

    def tail(self, lines=80):
        return "\n".join(self.output.splitlines()[-lines:])


def run_playbook(playbook, *args, log_name=None, timeout=PLAYBOOK_TIMEOUT):
    """ansible-playbook from the repository root; the output is kept in tests/output/."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / f"{log_name or Path(playbook).stem}.log"
    command = [str(BIN / "ansible-playbook"), playbook, *args]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               PATH=f"{BIN}:{os.environ['PATH']}")
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    log.write_text(output)
    return PlaybookRun(command, result.returncode, seconds, output, log)


@dataclass
class Fleet:
    hosts: dict
    first_run: PlaybookRun
    second_run: PlaybookRun
    figures: dict = field(default_factory=dict)

    def address(self, host):
        return self.hosts[host]

    def ssh_command(self, host, command):
        return ["ssh", "-i", LAB_SSH_KEY, *SSH_OPTIONS, f"root@{self.hosts[host]}", command]

    def ssh(self, host, command, timeout=60, check=True, input=None):
        """Run a shell command on a lab host; returns the CompletedProcess (text)."""
        result = subprocess.run(self.ssh_command(host, command), capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: {command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def playbook(self, playbook, *args, log_name=None):
        return run_playbook(playbook, *args, log_name=log_name)


@pytest.fixture(scope="session")
def lab():
    """The lab's VMs and bridge up (idempotent: leaves running VMs as they are)."""
    run = run_playbook("playbooks/lab.yml", "-e", "lab_action=up", log_name="lab-up")
    assert run.returncode == 0, f"lab up failed ({run.log}):\n{run.tail()}"
    return lab_hosts()


@pytest.fixture(scope="session")
def fleet(lab):
    """site.yml converged on the lab, twice: the first run from whatever the VMs
    hold (bare on a fresh machine), the second to show it changes nothing."""
    first = run_playbook("site.yml", log_name="site-first")
    assert first.returncode == 0, f"site.yml failed ({first.log}):\n{first.tail()}"
    second = run_playbook("site.yml", log_name="site-second")
    assert second.returncode == 0, f"site.yml failed on its second run ({second.log}):\n{second.tail()}"
    print(f"\nsite.yml: first run {first.seconds:.0f} s, second run {second.seconds:.0f} s")
    return Fleet(lab, first, second)
