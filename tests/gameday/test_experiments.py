"""The game-day experiments (tools/gameday/experiments/) as Chaos Toolkit reads
them: each is valid by Chaos Toolkit's own validator, checks the same
steady-state hypothesis, injects one fault into an inventory host, and undoes it
in a rollback that always runs, so a method stopped half-way still leaves the
fleet as found."""
import pytest
from chaoslib import merge_vars
from chaoslib.configuration import load_configuration
from chaoslib.experiment import ensure_experiment_is_valid
from chaoslib.loader import load_experiment

from tests.support.lab import lab_facts
from tools.gameday import __main__ as gameday, activities

HYPOTHESIS = ["answers_through_name", "tickets_unique_and_consecutive", "p99_of_sample"]


def experiment(name):
    return load_experiment(str(gameday.EXPERIMENTS / f"{name}.yaml"))


def test_there_is_a_scenario_per_fault_kind():
    assert len(gameday.scenarios()) >= 8, gameday.scenarios()


@pytest.mark.parametrize("name", gameday.scenarios())
def test_the_experiment_is_valid_for_chaos_toolkit(name):
    ensure_experiment_is_valid(experiment(name))


@pytest.mark.parametrize("name", gameday.scenarios())
def test_the_experiment_checks_the_steady_state_and_rolls_its_fault_back(name):
    document = experiment(name)
    probes = document["steady-state-hypothesis"]["probes"]
    assert [probe["provider"]["func"] for probe in probes] == HYPOTHESIS
    assert [probe["tolerance"] for probe in probes[:2]] == [0, 0]
    method = {activity["name"].partition(": ")[0]: activity for activity in document["method"]}
    assert sorted(method) == ["fault", "load", "mitigation"], "one fault, one mitigation, the load around them"
    for activity in document["method"] + document["rollbacks"]:
        assert hasattr(activities, activity["provider"]["func"]), activity["name"]
    host = method["fault"]["provider"]["arguments"].get("vm") or method["fault"]["provider"]["arguments"]["host"]
    if host == "${redis_primary}":  # the runner sets it to the primary; the default names a Redis host
        host = document["configuration"]["redis_primary"]
        assert host in lab_facts().group("redis")
    assert host in lab_facts().hosts
    # The rollback does what the mitigation does (both are safe to run twice), and ends the load.
    undo = [rollback["provider"] for rollback in document["rollbacks"]]
    assert method["mitigation"]["provider"] in undo
    assert any(provider["func"] == "stop_load" for provider in undo)



def test_the_p99_limit_given_to_the_runner_replaces_the_slo_in_the_hypothesis(tmp_path):
    configuration = experiment("app-power-cut")["configuration"]
    assert load_configuration(configuration)["p99_range_ms"] == {"type": "range", "range": [0, 50]}
    variables, _ = merge_vars(var_files=[str(gameday.write_p99_limit(tmp_path / "variables.json", 1000))])
    assert load_configuration(configuration, variables)["p99_range_ms"] == {"type": "range", "range": [0, 1000]}
