"""The scale playbooks run through the autoscaler's own ansible-runner wrapper, on
the lab inventory, with requests they must refuse: their first play (on the
control machine) stops them before any host is contacted, and the failure comes
back as PlaybookFailed with the run's output kept. No VM is needed or touched."""
import re
import signal

import pytest

from tools.autoscale.actuate import Ansible, PlaybookFailed

INVENTORIES = ["inventory/lab", "inventory/lab/scaleout.yml"]


NOWHERE = {"ansible_host": "127.0.0.9", "ansible_port": 9}


@pytest.mark.parametrize("playbook, in_service, limit", [
    # the new host missing from the hosts in service
    ("playbooks/scale_out.yml", ["app1", "app2"], None),
    ("playbooks/scale_in.yml", ["app1", "app2", "app3"], None),     # the leaving host still in them
    ("playbooks/scale_in.yml", ["app1", "nosuchhost"], None),       # not an app host
])
def test_a_wrong_request_is_refused_before_any_host_is_contacted(tmp_path, playbook, in_service, limit):
    ansible = Ansible(INVENTORIES)
    ansible.runner_dir = tmp_path
    with pytest.raises(PlaybookFailed, match=playbook):
        ansible.playbook(playbook, {"autoscale_host": "app3", "autoscale_in_service": in_service, **NOWHERE},
                         limit=limit)
    stdout = next(tmp_path.glob("artifacts/*/stdout")).read_text()
    assert "Check the host" in stdout and "usage: -e autoscale_host=HOST" in stdout
    recap = re.sub(r"\x1b\[[0-9;]*m", "", stdout.split("PLAY RECAP", 1)[1])    # without its colours
    assert re.findall(r"^(\S+)\s+: ok=", recap, re.MULTILINE) == ["localhost"]    # only localhost ran


def test_the_settings_come_from_the_inventory():
    answer = Ansible(INVENTORIES).settings()
    assert answer["pool"] == ["app3", "app4"] and answer["app"][:2] == ["app1", "app2"]
    assert answer["settings"]["autoscale_state_dir"] == "/var/lib/turnomatic-lab/autoscale"
    assert answer["settings"]["autoscale_graphite_url"].startswith("http://10.70.17.")


def test_overrides_reach_the_settings():
    answer = Ansible(INVENTORIES, {"autoscale_interval_seconds": "7"}).settings()
    assert answer["settings"]["autoscale_interval_seconds"] == "7"


def test_ctrl_c_and_sigterm_still_stop_the_autoscaler_after_a_run(tmp_path):
    # ansible-runner leaves handlers of its own that only cancel its run.
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for number, handler in handlers.items():
        signal.signal(number, handler)
    ansible = Ansible(INVENTORIES)
    ansible.runner_dir = tmp_path / "runner"       # not there yet: the wrapper makes it
    ansible.settings()
    with pytest.raises(PlaybookFailed):
        ansible.playbook("playbooks/scale_in.yml", {"autoscale_host": "app3", "autoscale_in_service": ["app3"]})
    assert {number: signal.getsignal(number) for number in handlers} == handlers
