"""The autoscaler's lock and journal with real processes on loopback: the autoscaler
runs as its own process (stub_autoscaler.py: the real main loop, the Ansible
actuation and Graphite input replaced), on a loopback inventory whose state
directory is a temporary one; processes are killed with SIGKILL mid-action, as a
crash or a power cut would stop them."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.autoscale import write_inventory
from tests.support.statsd import udp_listener
from tests.support.waiting import wait_until

HERE = Path(__file__).resolve().parent
STUB = HERE / "stub_autoscaler.py"


@pytest.fixture
def setup(tmp_path):
    """(run, state_dir, calls, statsd socket): run(utilisation, *args, pause_in=None, wait=True)."""
    metrics = udp_listener(5)
    state_dir = tmp_path / "state"
    inventory = write_inventory(
        tmp_path / "hosts.yml", ("t1", "t2", "t3", "t4"), ("t3", "t4"),
        max_hosts=4, warmup_seconds=0, stabilization_seconds=0, window_seconds=60,
        graphite_url="http://127.0.0.1:9", host_cores=1, statsd=f"127.0.0.1:{metrics.getsockname()[1]}",
        state_dir=str(state_dir), provision_playbook="unused.yml", deprovision_playbook="unused.yml")
    calls = tmp_path / "calls.jsonl"
    processes = []

    def run(utilisation, *args, pause_in=None, fail_in=None, wait=True):
        env = dict(os.environ, STUB_CALLS=str(calls), STUB_UTILISATION=str(utilisation), STUB_PAUSE_IN=pause_in or "",
                   STUB_FAIL_IN=fail_in or "")
        process = subprocess.Popen([sys.executable, str(STUB), "-i", str(inventory), *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        processes.append(process)
        if wait:
            out, err = process.communicate(timeout=120)
            return process.returncode, out, err
        return process

    yield run, state_dir, calls, metrics
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    metrics.close()


def read_calls(calls):
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_only_one_autoscaler_acts_at_a_time(setup):
    run, state_dir, calls, metrics = setup
    first = run(0.6, wait=False)                     # on target: decides every second, no action
    assert wait_until(lambda: (state_dir / "state.json").exists(), 60, 0.2), "the first autoscaler never decided"
    holder = (state_dir / "lock").read_text().strip()
    assert holder == str(first.pid)

    status, out, err = run(0.95, "--decisions", "1")
    assert status == 75, (out, err)
    assert f"another autoscaler (pid {first.pid})" in err
    assert read_calls(calls) == [], "the second autoscaler acted while the first held the lock"

    # A dry run takes no lock: it may watch beside the one that acts, and never acts.
    status, out, err = run(0.95, "--decisions", "1", "--dry-run")
    assert status == 0, err
    assert '"action": "out"' in out and read_calls(calls) == []

    # The lock dies with its process, however it ends.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    status, out, err = run(0.95, "--decisions", "1")
    assert status == 0, err
    assert [(c["call"], c["host"]) for c in read_calls(calls)] == [("scale_out", "t3")]


def test_each_decision_is_sent_to_statsd(setup):
    run, _, _, metrics = setup
    status, out, err = run(0.95, "--decisions", "1")
    assert status == 0, err
    received = metrics.recv(4096).decode().splitlines()
    assert {"turnomatic.autoscale.hosts:2|g", "turnomatic.autoscale.desired:3|g",
            "turnomatic.autoscale.decision:1|g", "turnomatic.autoscale.utilisation:95.0|g"} <= set(received)
    decision = json.loads(next(line for line in out.splitlines() if '"action"' in line).split(" INFO ", 1)[1])
    assert decision["utilisation"] == {"t1": 0.95, "t2": 0.95} and decision["desired"] == 3


def kill_in(run, state_dir, calls, utilisation, call):
    """Start an autoscaler, SIGKILL it inside its first `call` (scale_out/scale_in)."""
    process = run(utilisation, pause_in=call, wait=False)
    assert wait_until(lambda: any(c["call"] == call for c in read_calls(calls)), 60, 0.2), process.stderr.read()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    return json.loads((state_dir / "journal.json").read_text())


def test_a_scale_out_cut_short_is_rolled_back_by_the_next_run(setup):
    run, state_dir, calls, _ = setup
    journal = kill_in(run, state_dir, calls, 0.95, "scale_out")
    assert (journal["action"], journal["host"]) == ("out", "t3")
    assert json.loads((state_dir / "state.json").read_text())["pool_in_service"] == {}

    status, out, err = run(0.6, "--decisions", "1")
    assert status == 0, err
    assert [(c["call"], c["host"], c["in_service"]) for c in read_calls(calls)] == [
        ("scale_out", "t3", ["t1", "t2", "t3"]),
        ("scale_in", "t3", ["t1", "t2"]),            # the rollback: out of the balancers, stopped
    ]
    assert not (state_dir / "journal.json").exists()
    assert json.loads((state_dir / "state.json").read_text())["pool_in_service"] == {}


def test_a_scale_in_cut_short_is_finished_by_the_next_run(setup):
    run, state_dir, calls, _ = setup
    state_dir.mkdir()
    (state_dir / "state.json").write_text(json.dumps({"pool_in_service": {"t3": 1.0}, "history": []}))
    journal = kill_in(run, state_dir, calls, 0.1, "scale_in")
    assert (journal["action"], journal["host"]) == ("in", "t3")

    status, out, err = run(0.6, "--decisions", "1")
    assert status == 0, err
    assert [(c["call"], c["host"], c["in_service"]) for c in read_calls(calls)] == [
        ("scale_in", "t3", ["t1", "t2"]), ("scale_in", "t3", ["t1", "t2"])]
    assert not (state_dir / "journal.json").exists()
    assert json.loads((state_dir / "state.json").read_text())["pool_in_service"] == {}


def test_a_scale_out_that_had_finished_is_not_undone(setup):
    """A crash after state.json recorded the new host, before the journal was closed."""
    run, state_dir, calls, _ = setup
    state_dir.mkdir()
    (state_dir / "state.json").write_text(json.dumps({"pool_in_service": {"t3": 1.0}, "history": []}))
    (state_dir / "journal.json").write_text(json.dumps({"action": "out", "host": "t3", "started": 0.5}))
    status, out, err = run(0.6, "--decisions", "1")
    assert status == 0, err
    assert read_calls(calls) == []
    assert not (state_dir / "journal.json").exists()
    assert json.loads((state_dir / "state.json").read_text())["pool_in_service"] == {"t3": 1.0}


def test_a_failed_playbook_is_rolled_back_at_the_next_interval_by_the_same_process(setup):
    run, state_dir, calls, _ = setup
    status, out, err = run(0.95, "--decisions", "2", fail_in="scale_out")
    assert status == 0, err
    assert "scale_out of t3: the stub's failure" in out
    # Interval 1: the scale-out fails; interval 2: it is rolled back, then the load asks again.
    assert [(c["call"], c["host"]) for c in read_calls(calls)] == [
        ("scale_out", "t3"), ("scale_in", "t3"), ("scale_out", "t3")]
    assert not (state_dir / "journal.json").exists()
    assert list(json.loads((state_dir / "state.json").read_text())["pool_in_service"]) == ["t3"]
