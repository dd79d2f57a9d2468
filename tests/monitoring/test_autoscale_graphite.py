"""The autoscaler's Graphite reader (tools/autoscale/graphite.py) against a real
carbon-cache and graphite-web on loopback (the loopback_graphite fixture): points
written under collectd's names come back as per-host utilisation; a host with
null points or no metric at all is missing, never idle."""
import socket
import sys
from pathlib import Path

from monitoring_support import aligned_now, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools.autoscale import graphite  # noqa: E402

STEP = 10


def send(line_port, points):
    with socket.create_connection(("127.0.0.1", line_port), timeout=10) as sock:
        sock.sendall("".join(f"{metric} {value} {t}\n" for metric, value, t in points).encode())


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
