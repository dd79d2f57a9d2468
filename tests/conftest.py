"""The order every run keeps, and the lab fixtures.

Order (pytest_collection_modifyitems): whatever `pytest` is given (nothing: every
suite, or one file), the tests run in four stages, each keeping its suites'
documented order (SUITES):

  1. loopback: no marker; real processes on this machine, no VM
  2. destructive (marker `destructive`): take the lab down and wipe it (tests/lab)
  3. molecule (marker `molecule`): the roles' scenarios on VMs of their own
  4. the lab fleet (marker `lab`): the session's `fleet`, converged by site.yml once

so that nothing takes the lab down while a fleet fixture expects it up. A test that
uses the `lab` or `fleet` fixture is marked `lab` even if its module forgot to, so
`-m "not lab"` never reaches a VM.

    def test_something(fleet):
        fleet.ssh("client1", "getent hosts turnomatic.lab")
        fleet.address("lb1")
        fleet.playbook("playbooks/rolling_update.yml")
"""

from dataclasses import dataclass

import pytest

from tests.support import alerting
from tests.support.ansible import PlaybookRun, run_playbook
from tests.support.lab import Lab, lab_facts

# The suites in the order they run within a stage (tests/<name>); others follow, by name.
SUITES = ["layout", "app", "balancer", "autoscale", "lab", "roles", "fleet", "monitoring", "load", "edge", "gameday", "ha"]
LAB_FIXTURES = {"lab", "fleet"}


def stage(item):
    if item.get_closest_marker("destructive"):
        return 2
    if item.get_closest_marker("molecule"):
        return 3
    if item.get_closest_marker("lab"):
        return 4
    return 1


def suite_rank(item):
    parts = item.path.relative_to(item.config.rootpath).parts
    suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
    return (SUITES.index(suite), "") if suite in SUITES else (len(SUITES), suite)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if LAB_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.lab)
    # A stable sort: within a suite, pytest's own order (files by name, tests as written).
    items.sort(key=lambda item: (stage(item), suite_rank(item)))


@dataclass
class Fleet:
    lab: Lab
    first_run: PlaybookRun
    second_run: PlaybookRun

    @property
    def hosts(self):
        return self.lab.hosts

    def address(self, host):
        return self.lab.address(host)

    def group(self, name):
        return self.lab.group(name)

    def ssh_command(self, host, command):
        return self.lab.ssh_command(host, command)

    def ssh(self, host, command, timeout=60, check=True, input=None):
        return self.lab.ssh(host, command, timeout=timeout, check=check, input=input)

    def playbook(self, playbook, *args, log_name=None):
        return run_playbook(playbook, *args, log_name=log_name)


@pytest.fixture(scope="session")
def lab():
    """The lab's VMs and bridge up (idempotent: leaves running VMs as they are)."""
    run = run_playbook("playbooks/lab.yml", "-e", "lab_action=up", log_name="lab-up")
    assert run.returncode == 0, f"lab up failed ({run.log}):\n{run.tail()}"
    return lab_facts()


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


# Where the grafana role provisions the alert rules on the monitoring host.
RULES_PATH = "/etc/grafana/provisioning/alerting/turnomatic-rules.yaml"


@pytest.fixture(scope="module")
def graphite(fleet):
    """graphite-web on the fleet's monitoring host."""
    return alerting.Graphite(f"http://{fleet.address(fleet.group('monitoring')[0])}")


@pytest.fixture(scope="module")
def rules(fleet):
    """The alert rules as the monitoring host's Grafana has them: uid → Rule."""
    return alerting.load_rules(fleet.ssh(fleet.group("monitoring")[0], f"cat {RULES_PATH}").stdout)
