"""The fleet end to end on the lab: site.yml on the lab VMs, then the service as
a client sees it through the DNS name, under load, with an app VM killed, and
during a rolling update.

Load comes from the lab's client host: ticket_checker.py runs there and returns
every ticket it received; the numbers are judged here. Figures (site.yml times,
requests per second) are printed and written to tests/output/fleet-figures.json.
"""

import json
import subprocess
import time
import uuid

import pytest

from tests.support import figures
from tests.support.checker import SERVICE_NAME, Load, install_checker
from tests.support.lab import lab_facts
from tests.support.paths import OUTPUT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.lab
FIGURES = OUTPUT / "fleet-figures.json"
CONCURRENCY = 64


def record_figure(name, value):
    figures.record_figure(FIGURES, name, value)


def fresh_prefix(label):
    return f"e2e-{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(fleet):
    """The fleet, with the checker copied onto the client host."""
    install_checker(fleet)
    return fleet


def service_addresses():
    """The balancers' virtual addresses (keepalived), which the service name answers with."""
    return sorted(address for address, _ in lab_facts().virtual_addresses.values())


def can_connect(fleet, source, host, port):
    """Whether source opens a TCP connection to host:port (3 s, from source itself)."""
    probe = (f"python3 -c \"import socket; socket.create_connection(('{fleet.address(host)}', {port}), timeout=3)\"")
    return fleet.ssh(source, probe, check=False).returncode == 0


def wait_until_served_by(fleet, app_host, seconds=120):
    """Until app_host answers /healthz to a balancer again."""
    probe = (f"python3 -c \"import urllib.request; "
             f"urllib.request.urlopen('http://{fleet.address(app_host)}:7017/healthz', timeout=2)\"")
    wait_for(lambda: fleet.ssh("lb1", probe, check=False).returncode == 0, seconds,
             f"{app_host} answering a balancer again", interval=2)


def test_site_yml_converges_and_a_second_run_changes_nothing(fleet):
    record_figure("site_yml_first_run_seconds", round(fleet.first_run.seconds))
    record_figure("site_yml_first_run_changed", sum(h["changed"] for h in fleet.first_run.recap.values()))
    record_figure("site_yml_second_run_seconds", round(fleet.second_run.seconds))
    recap = fleet.second_run.recap
    assert set(fleet.hosts) <= set(recap), f"hosts missing from the recap: {set(fleet.hosts) - set(recap)}"
    changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
    assert not changed, f"second site.yml run changed something: {changed} (log {fleet.second_run.log})"


def test_dns_answers_the_service_name_with_both_virtual_addresses(fleet):
    for server in ("dns1", "dns2"):
        direct = subprocess.run(["dig", "+short", f"@{fleet.address(server)}", SERVICE_NAME, "A"],
                                capture_output=True, text=True, timeout=10).stdout.split()
        assert sorted(direct) == service_addresses(), server
    through_resolver = fleet.ssh("client1", f"getent ahostsv4 {SERVICE_NAME}").stdout.split()
    assert sorted({word for word in through_resolver if word[0].isdigit()}) == service_addresses()


def test_each_balancer_serves_turno(client):
    ticket_id = fresh_prefix("each")
    answers = []
    for balancer in ("lb1", "lb2"):
        url = f"http://{client.address(balancer)}:7017/turno/{ticket_id}"
        body = client.ssh("client1", f"python3 -c \"import urllib.request; "
                                     f"print(urllib.request.urlopen('{url}', timeout=5).read().decode())\"").stdout
        answers.append(json.loads(body))
    assert answers == [{"id": ticket_id, "turno": 1}, {"id": ticket_id, "turno": 2}]


def test_20000_requests_over_both_balancers_give_exactly_1_to_n_per_id(client):
    load = Load(client, fresh_prefix("load"), requests=20000, max_seconds=300)
    report = load.finish()
    print(json.dumps(report.summary()))
    record_figure("end_to_end_requests_per_second", report.result["ok_per_second"])
    assert report.result["requests"] == 20000, "the run stopped at its time limit"
    assert report.failed == 0, report.summary()
    assert report.duplicates() == {}
    assert report.exactly_one_to_n(), f"gaps: {report.missing()}"
    assert sum(len(numbers) for numbers in report.tickets.values()) == 20000
    per_balancer = report.result["by_balancer"]
    assert sorted(per_balancer) == service_addresses(), per_balancer
    assert min(per_balancer.values()) >= 0.2 * 20000, f"DNS round-robin did not spread the load: {per_balancer}"


def test_redis_and_sentinel_are_reachable_from_app_hosts_and_each_other_only(fleet):
    for port in (6379, 26379):
        assert can_connect(fleet, "app1", "redis1", port)
        assert can_connect(fleet, "redis2", "redis1", port)
        for outsider in ("client1", "lb1"):
            assert not can_connect(fleet, outsider, "redis1", port), f"{outsider} reached redis1:{port}"


def test_app_port_is_reachable_from_balancers_only(fleet):
    for app in ("app1", "app2"):
        assert can_connect(fleet, "lb1", app, 7017)
        assert can_connect(fleet, "lb2", app, 7017)
        assert not can_connect(fleet, "client1", app, 7017), f"client1 reached {app}:7017"
        assert not can_connect(fleet, "redis1", app, 7017), f"redis1 reached {app}:7017"


def test_an_app_vm_killed_under_load_fails_only_its_requests_in_flight(client):
    load = Load(client, fresh_prefix("kill"), requests=0, max_seconds=120, until_stdin_closes=True)
    time.sleep(10)
    kill_started = time.monotonic() - load.started
    kill = client.playbook("playbooks/fault.yml", "-e", "lab_vm=app2", "-e", "lab_fault=kill",
                           log_name="fault-kill-app2")
    kill_done = time.monotonic() - load.started
    assert kill.returncode == 0, f"fault kill failed ({kill.log}):\n{kill.tail()}"
    time.sleep(20)
    report = load.finish()
    start = client.playbook("playbooks/fault.yml", "-e", "lab_vm=app2", "-e", "lab_fault=start",
                            log_name="fault-start-app2")
    assert start.returncode == 0, f"fault start failed ({start.log}):\n{start.tail()}"

    lost = sum(report.missing().values())
    failure_times = report.result["failure_times"]
    print(json.dumps(report.summary()), f"kill between {kill_started:.1f} s and {kill_done:.1f} s, "
          f"lost numbers {lost}, failures at {failure_times}")
    record_figure("kill_app_failed_requests", report.failed)
    record_figure("kill_app_lost_numbers", lost)
    assert report.duplicates() == {}
    # Each of the client's connections has one request in flight at most: only
    # those that were on the killed app may fail (nginx cannot know whether the
    # app counted them, so it does not re-send them), nothing after.
    assert report.failed <= CONCURRENCY, f"more failures than requests in flight: {report.summary()}"
    # A number can only go missing with a request that failed.
    assert lost <= report.failed
    # Routed around within seconds: nothing fails before the kill or later than 5 s after it.
    stray = [t for t in failure_times if not kill_started <= t <= kill_done + 5]
    assert not stray, f"failures outside the kill ({kill_started:.1f} to {kill_done:.1f} s, +5 s): {stray}"
    assert report.ok > 1000, "too little load went through to judge"
    wait_until_served_by(client, "app2")


def test_rolling_update_under_load_fails_no_request(client):
    load = Load(client, fresh_prefix("rolling"), requests=0, max_seconds=600, until_stdin_closes=True)
    time.sleep(3)
    update = client.playbook("playbooks/rolling_update.yml", log_name="rolling-update")
    report = load.finish()
    lost = sum(report.missing().values())
    print(json.dumps(report.summary()), f"rolling update {update.seconds:.0f} s, lost numbers {lost}")
    record_figure("rolling_update_seconds", round(update.seconds))
    record_figure("rolling_update_failed_requests", report.failed)
    record_figure("rolling_update_lost_numbers", lost)
    record_figure("rolling_update_stale_keepalive_retries", report.result["stale_keepalive_retries"])
    assert update.returncode == 0, f"rolling update failed ({update.log}):\n{update.tail()}"
    assert report.result["seconds"] < 600, "the load stopped at its time limit before the update ended"
    assert report.duplicates() == {}
    assert report.failed == 0, f"{report.summary()}, lost numbers {lost}"
    assert report.exactly_one_to_n(), f"gaps: {report.missing()}"
