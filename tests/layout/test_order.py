"""The order every pytest run keeps (tests/conftest.py): loopback suites first, then the
test that wipes the lab, then Molecule, then the tests on the fleet, whatever pytest is
given; and `-m "not lab and not molecule"` (make check) reaches no VM."""

import subprocess

from tests.support.paths import BIN, REPO

pytest_plugins = ["pytester"]


def collected(*args):
    """The node ids pytest collects from the repository root, in run order."""
    result = subprocess.run([str(BIN / "pytest"), "--collect-only", "-q", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def first_and_last(ids, prefix):
    positions = [n for n, node in enumerate(ids) if node.startswith(prefix)]
    assert positions, f"nothing of {prefix} collected"
    return positions[0], positions[-1]


def test_the_whole_tree_runs_loopback_then_destructive_then_molecule_then_fleet():
    ids = collected()
    loopback = first_and_last(ids, "tests/app/")[0], first_and_last(ids, "tests/load/test_tickets.py")[1]
    destructive = first_and_last(ids, "tests/lab/test_lab.py")
    molecule = first_and_last(ids, "tests/roles/test_molecule.py")
    fleet = first_and_last(ids, "tests/fleet/")[0], first_and_last(ids, "tests/load/test_lab_load.py")[1]
    assert loopback[1] < destructive[0] <= destructive[1] < molecule[0] <= molecule[1] < fleet[0] <= fleet[1]
    assert ids[fleet[0]:] and all(not node.startswith(("tests/app/", "tests/lab/test_lab.py")) for node in ids[fleet[0]:])


def test_files_given_in_any_order_run_in_the_same_order():
    ids = collected("tests/load/test_lab_load.py", "tests/lab/test_lab.py", "tests/app/test_app.py")
    files = list(dict.fromkeys(node.split("::")[0] for node in ids))
    assert files == ["tests/app/test_app.py", "tests/lab/test_lab.py", "tests/load/test_lab_load.py"]


def test_make_check_selection_reaches_no_vm():
    ids = collected("-m", "not lab and not molecule")
    assert ids
    on_vms = [node for node in ids if node.startswith(("tests/lab/test_lab.py", "tests/fleet/", "tests/roles/test_molecule.py",
                                                       "tests/monitoring/test_lab_monitoring.py",
                                                       "tests/load/test_lab_load.py"))]
    assert on_vms == []


def test_a_test_using_the_fleet_without_the_marker_still_counts_as_lab(pytester):
    pytester.makeconftest("from tests.conftest import fleet, lab, pytest_collection_modifyitems  # noqa: F401")
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\nmarkers =\n"
                     "    lab: x\n    destructive: x\n    molecule: x\n")
    pytester.makepyfile(test_forgot="""
        import pytest

        def test_on_the_fleet(fleet):
            pass

        @pytest.mark.destructive
        def test_wipes_the_lab():
            pass

        def test_on_loopback():
            pass
    """)
    result = pytester.runpytest("--collect-only", "-q")
    assert [line.split("::")[1] for line in result.outlines if "::" in line] == [
        "test_on_loopback", "test_wipes_the_lab", "test_on_the_fleet"]
    result = pytester.runpytest("--collect-only", "-q", "-m", "not lab")
    assert [line.split("::")[1] for line in result.outlines if "::" in line] == [
        "test_on_loopback", "test_wipes_the_lab"]
