"""`molecule test` for every role that has a molecule/default scenario.

Each scenario creates its own lab VMs (addresses from the role's block in
docs/architecture.md), converges the role, checks that a second converge
changes nothing, runs its verify playbook and destroys the VMs. Scenarios run
side by side (MOLECULE_PARALLEL at a time, default 4: they mostly wait on
package downloads and SSH), one test per role; the full output of each goes to
tests/output/molecule/<role>.log.
"""

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.ansible import ENV
from tests.support.paths import BIN, OUTPUT, ROLES

pytestmark = pytest.mark.molecule
LOGS = OUTPUT / "molecule"
ROLES_WITH_SCENARIO = sorted(path.parents[2].name for path in ROLES.glob("*/molecule/default/molecule.yml"))
# The longest scenarios of a CI run (2.5 to 4.5 min each; the rest 1.5 to 2.5) start first, so
# that none of them starts last and holds the suite up alone: about 100 s less in CI.
LONGEST = ["turnomatic", "redis_sentinel", "otlp_receiver", "graphite", "keepalived", "redis_backup"]
SCENARIO_TIMEOUT = 25 * 60
PARALLEL = int(os.environ.get("MOLECULE_PARALLEL", "4"))


def molecule_test(role):
    """Run the scenario, once more when its VM became unreachable (the VM's network, not
    the role: a CI rehearsal saw a freshly booted VM answer SSH, then lose its link six
    seconds later, cause not found); returns (exit code, seconds, log path). A role that
    cuts its own VM off fails both runs."""
    returncode, seconds, log = molecule_run(role)
    if returncode != 0 and "UNREACHABLE!" in log.read_text():
        first = log.rename(LOGS / f"{role}.unreachable.log")
        print(f"molecule test {role}: its VM became unreachable ({first}); running it once more")
        returncode, more, log = molecule_run(role)
        seconds += more
    return returncode, seconds, log


def molecule_run(role):
    log = LOGS / f"{role}.log"
    started = time.monotonic()
    with log.open("w") as output:
        try:
            returncode = subprocess.run(
                [BIN / "molecule", "test"],
                cwd=ROLES / role, env=ENV, stdout=output, stderr=subprocess.STDOUT, timeout=SCENARIO_TIMEOUT,
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    return returncode, time.monotonic() - started, log


@pytest.fixture(scope="module")
def scenario_runs():
    """Every scenario submitted at once; each test waits for its own."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        order = sorted(ROLES_WITH_SCENARIO, key=lambda role: LONGEST.index(role) if role in LONGEST else len(LONGEST))
        yield {role: pool.submit(molecule_test, role) for role in order}


def test_the_longest_scenarios_named_are_roles_with_a_scenario():
    """A renamed role would drop out of LONGEST silently and start late again."""
    assert set(LONGEST) <= set(ROLES_WITH_SCENARIO), set(LONGEST) - set(ROLES_WITH_SCENARIO)


@pytest.mark.parametrize("role", ROLES_WITH_SCENARIO)
def test_molecule_scenario(role, scenario_runs):
    returncode, seconds, log = scenario_runs[role].result()
    print(f"molecule test {role}: exit {returncode}, {seconds:.0f} s (log: {log})")
    if returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-60:])
        pytest.fail(f"molecule test {role} failed (exit {returncode}, {seconds:.0f} s); end of {log}:\n{tail}")
