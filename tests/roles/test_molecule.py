"""`molecule test` for every role that has a molecule/default scenario.

Each scenario creates its own lab VMs (addresses from the role's block in
docs/architecture.md), converges the role, checks that a second converge
changes nothing, runs its verify playbook and destroys the VMs. The full
output goes to tests/output/molecule/<role>.log.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
LOGS = REPO / "tests" / "output" / "molecule"
ROLES_WITH_SCENARIO = sorted(path.parents[2].name for path in ROLES.glob("*/molecule/default/molecule.yml"))
SCENARIO_TIMEOUT = 20 * 60


@pytest.mark.parametrize("role", ROLES_WITH_SCENARIO)
def test_molecule_scenario(role):
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{role}.log"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", ANSIBLE_FORCE_COLOR="0")
    started = time.monotonic()
    with log.open("w") as output:
        result = subprocess.run(
            [Path(sys.executable).parent / "molecule", "test"],
            cwd=ROLES / role,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=SCENARIO_TIMEOUT,
        )
    elapsed = time.monotonic() - started
    print(f"molecule test {role}: exit {result.returncode} in {elapsed:.0f} s (log: {log})")
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-60:])
        pytest.fail(f"molecule test {role} failed (exit {result.returncode}, {elapsed:.0f} s); end of {log}:\n{tail}")
