"""The reader on a recorded render API answer (format=json, the shape graphite-web
1.1 returns: [{"target", "datapoints": [[value or null, time], ...]}]): nulls and
hosts left out of the answer are missing, a host's user + system CPU is summed per
point, and a half-present point (user without syst) is missing too."""
from tools.autoscale.graphite import host_cpu_series, utilisation

ANSWER = [
    {"target": "collectd.app1.processes-turnomatic.ps_cputime.user", "tags": {},
     "datapoints": [[135000.0, 1000], [140000.0, 1010], [130000.0, 1020], [None, 1030]]},
    {"target": "collectd.app1.processes-turnomatic.ps_cputime.syst", "tags": {},
     "datapoints": [[15000.0, 1000], [10000.0, 1010], [20000.0, 1020], [None, 1030]]},
    {"target": "collectd.app2.processes-turnomatic.ps_cputime.user", "tags": {},
     "datapoints": [[50000.0, 1000], [None, 1010], [None, 1020], [None, 1030]]},
    {"target": "collectd.app2.processes-turnomatic.ps_cputime.syst", "tags": {},
     "datapoints": [[5000.0, 1000], [5000.0, 1010], [None, 1020], [None, 1030]]},
    {"target": "collectd.app3.processes-turnomatic.ps_cputime.user", "tags": {},
     "datapoints": [[50000.0, 1000], [50000.0, 1010], [50000.0, 1020], [None, 1030]]},
]


def test_recorded_answer():
    series = host_cpu_series(ANSWER, ["app1", "app2", "app3", "app4"])
    assert series["app1"] == [(1000, 0.15), (1010, 0.15), (1020, 0.15), (1030, None)]
    assert series["app2"] == [(1000, 0.055), (1010, None), (1020, None), (1030, None)]
    assert series["app3"] == [] and series["app4"] == []          # syst absent; no metric at all
    assert abs(utilisation(series["app1"], 0.25, min_points=3) - 0.6) < 1e-9
    assert utilisation(series["app2"], 0.25, min_points=3) is None
    assert utilisation(series["app3"], 0.25, min_points=1) is None
