"""The autoscaler's Graphite reader (tools/autoscale/graphite.py) against a real
carbon-cache and graphite-web on loopback (the loopback_graphite fixture): points
written under collectd's names come back as per-host utilisation; a host with
null points or no metric at all is missing, never idle."""
import json
import subprocess
import sys

from tests.support.alerting import aligned_now, send_points as send
from tests.support.autoscale import write_inventory
from tests.support.paths import REPO
from tests.support.statsd import udp_listener
from tests.support.waiting import wait_until
from tools.autoscale import graphite

STEP = 10


def cpu_points(host, cores_per_step, end):
    """collectd's processes plugin: µs of CPU per second, split user 90 % / system 10 %;
    None leaves the point out (Graphite then answers null for it)."""
    points = []
    for index, cores in enumerate(cores_per_step):
        t = end - (len(cores_per_step) - 1 - index) * STEP
        if cores is not None:
            points += [(f"collectd.{host}.processes-turnomatic.ps_cputime.user", cores * 0.9e6, t),
                       (f"collectd.{host}.processes-turnomatic.ps_cputime.syst", cores * 0.1e6, t)]
    return points


def test_render_api_gives_per_host_utilisation_and_missing_for_nulls(loopback_graphite):
    line_port, url = loopback_graphite
    end = aligned_now()
    send(line_port, cpu_points("asapp1", [0.15] * 6, end)                     # 60 % of a quarter core
         + cpu_points("asapp2", [0.05, 0.05, None, None, None, None], end)    # stopped reporting
         + cpu_points("asapp3", [None, 0.2, None, 0.2, 0.2, 0.2], end))      # gaps, enough points
    hosts = ["asapp1", "asapp2", "asapp3", "asapp4"]                          # asapp4: no metric at all
    cores = dict.fromkeys(hosts, 0.25)

    def read():
        return graphite.app_utilisation(url, hosts, cores, window_seconds=90, min_points=3)

    assert wait_until(lambda: read()[0]["asapp1"] is not None and read()[0]["asapp3"] is not None, 30, 0.5), \
        f"carbon did not store the points: {read()[1]}"
    values, series = read()
    assert abs(values["asapp1"] - 0.6) < 1e-6
    assert abs(values["asapp3"] - 0.8) < 1e-6
    assert values["asapp2"] is None, series["asapp2"]
    assert values["asapp4"] is None and series["asapp4"] == []
    # Graphite itself answered null for the points left out: the reader saw them as missing.
    assert any(v is None for _, v in series["asapp3"]) and any(v is None for _, v in series["asapp2"])


def test_dry_run_reads_graphite_decides_and_acts_on_nothing(loopback_graphite, tmp_path):
    """`python -m tools.autoscale --dry-run` end to end on loopback: settings from an
    inventory (ansible-runner), CPU from the real Graphite, decisions logged and sent
    to StatsD; no lock, no state, no playbook."""
    line_port, url = loopback_graphite
    end = aligned_now()
    send(line_port, cpu_points("dryapp1", [0.45] * 6, end) + cpu_points("dryapp2", [0.45] * 6, end))
    assert wait_until(lambda: all(v is not None for v in graphite.app_utilisation(
        url, ["dryapp1", "dryapp2"], {"dryapp1": 0.5, "dryapp2": 0.5}, 90, 3)[0].values()), 30, 0.5)
    metrics = udp_listener(10)
    state_dir = tmp_path / "state"
    inventory = write_inventory(
        tmp_path / "hosts.yml", ("dryapp1", "dryapp2", "dryapp3"), ("dryapp3",),
        max_hosts=3, warmup_seconds=60, stabilization_seconds=300, window_seconds=90, graphite_url=url,
        host_cores=0.5, statsd=f"127.0.0.1:{metrics.getsockname()[1]}", state_dir=str(state_dir),
        provision_playbook="absent.yml", deprovision_playbook="absent.yml")
    result = subprocess.run([sys.executable, "-m", "tools.autoscale", "--dry-run", "--decisions", "2",
                             "-i", str(inventory)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    decisions = [json.loads(line.split(" INFO ", 1)[1]) for line in result.stdout.splitlines() if '"action"' in line]
    assert len(decisions) == 2
    # 0.45 of 0.5 core = 0.9 per host, 1.5 × the target: ceil(2 × 1.5) = 3 hosts.
    assert decisions[0]["utilisation"] == {"dryapp1": 0.9, "dryapp2": 0.9}
    assert [(d["action"], d["desired"], d["dry_run"]) for d in decisions] == [("out", 3, True)] * 2
    assert "turnomatic.autoscale.desired:3|g" in metrics.recv(4096).decode().splitlines()
    metrics.close()
    assert not state_dir.exists(), "a dry run wrote state or took the lock"
