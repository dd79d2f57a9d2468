"""The grafana role's provisioning files, rendered from its defaults, have the documented structure."""
import copy
from pathlib import Path

import pytest
import yaml

from tests.support import alerting, grafana_provisioning as provisioning
from tests.support.alerting import alert_rules_source
from tests.support.paths import ROLES

DASHBOARDS = {p.name: p.read_text() for p in (ROLES / "grafana/files/dashboards").glob("*.json")}
DASHBOARDS_DIR = yaml.safe_load((ROLES / "grafana/defaults/main.yml").read_text())["grafana_dashboards_dir"]


def texts(grafana_provisioning):
    return {name: Path(path).read_text() for name, path in grafana_provisioning.items()}


def test_every_kind_of_file_is_rendered(grafana_provisioning):
    assert {name.split("/")[0] for name in grafana_provisioning} == {"datasources", "dashboards", "alerting"}


def test_rendered_files_have_the_documented_structure(grafana_provisioning):
    assert provisioning.check(texts(grafana_provisioning), DASHBOARDS, DASHBOARDS_DIR) == []


def test_rule_file_says_what_the_source_of_truth_says(rules_file):
    rendered = alerting.load_rules(rules_file.read_text())
    source = alert_rules_source()
    assert sorted(rendered) == sorted(rule["uid"] for rule in source)
    for rule in source:
        got = rendered[rule["uid"]]
        assert (got.target, got.threshold, got.operator, got.reducer, got.window, got.duration) == (
            rule["target"], float(rule["threshold"]), rule["operator"], rule["reducer"],
            rule["window_seconds"], alerting.seconds(rule["for"]))


def broken(files, name, change):
    files = copy.deepcopy(files)
    doc = yaml.safe_load(files[name])
    change(doc)
    files[name] = yaml.safe_dump(doc)
    return files


MUTATIONS = {
    "condition names no refId": ("alerting/turnomatic-rules.yaml",
                                 lambda d: d["groups"][0]["rules"][0].update(condition="Z")),
    "unknown datasource": ("alerting/turnomatic-rules.yaml",
                           lambda d: d["groups"][0]["rules"][0]["data"][0].update(datasourceUid="prometheus")),
    "expression reads nothing": ("alerting/turnomatic-rules.yaml",
                                 lambda d: d["groups"][0]["rules"][1]["data"][2]["model"].update(expression="X")),
    "policy without contact point": ("alerting/turnomatic-policies.yaml",
                                     lambda d: d["policies"][0].update(receiver="nobody")),
    "apiVersion": ("datasources/turnomatic.yaml", lambda d: d.update(apiVersion=2)),
    "bad duration": ("alerting/turnomatic-rules.yaml", lambda d: d["groups"][0]["rules"][0].update({"for": "soon"})),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_check_finds_a_broken_file(grafana_provisioning, mutation):
    name, change = MUTATIONS[mutation]
    assert provisioning.check(broken(texts(grafana_provisioning), name, change), DASHBOARDS, DASHBOARDS_DIR)


def test_the_check_finds_a_dashboard_on_an_unknown_datasource(grafana_provisioning):
    name, text = next(iter(DASHBOARDS.items()))
    assert provisioning.check(texts(grafana_provisioning), {name: text.replace('"uid": "graphite"', '"uid": "gone"')},
                              DASHBOARDS_DIR)
