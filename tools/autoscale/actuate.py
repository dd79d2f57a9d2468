"""Actuation through Ansible, run from Python with ansible-runner: the settings
from the inventory, the provisioning hooks, playbooks/scale_out.yml and
playbooks/scale_in.yml. Each run's events and output are kept by ansible-runner
under autoscale_state_dir/runner/artifacts/ (the last 50 runs)."""

import json
import logging
import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import ansible_runner

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
log = logging.getLogger("autoscale")

# Every setting of the inventory named autoscale_*, templated by Ansible itself, the
# app hosts, the pool and each app host's cores, as one JSON document.
SETTINGS = (
    "{{ {'settings': dict(q('ansible.builtin.varnames', '^autoscale_')"
    " | zip(q('ansible.builtin.vars', *q('ansible.builtin.varnames', '^autoscale_')))),"
    " 'app': groups['app'] | default([]), 'pool': groups['app_pool'] | default([]),"
    " 'cores': dict(groups['app'] | default([]) | zip(groups['app'] | default([])"
    " | map('extract', hostvars, 'autoscale_host_cores')))} | to_json }}"
)


class PlaybookFailed(Exception):
    pass


@contextmanager
def own_signal_handlers():
    """ansible-runner sets handlers of its own for SIGINT and SIGTERM (they cancel its
    run) and leaves them there: afterwards Ctrl-C and SIGTERM would no longer stop the
    autoscaler. Ours are put back after each run."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


class Ansible:
    def __init__(self, inventories: list[str], overrides: dict | None = None):
        """overrides: extra variables over the inventory's, in every run (settings and playbooks)."""
        self.inventories = [str((REPO / i).resolve()) for i in inventories]
        self.overrides = dict(overrides or {})
        # ansible-runner starts ansible-playbook from PATH: the one of this virtualenv.
        self.env = {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.runner_dir = None

    def settings(self) -> dict:
        with tempfile.TemporaryDirectory() as private, own_signal_handlers():
            result = ansible_runner.run(private_data_dir=private, project_dir=str(REPO), host_pattern="localhost",
                                        module="ansible.builtin.debug", module_args=f"msg={SETTINGS}",
                                        inventory=self.inventories, extravars=self.overrides, envvars=self.env,
                                        quiet=True)
            answers = [e["event_data"]["res"]["msg"] for e in result.events if e["event"] == "runner_on_ok"]
            if result.rc != 0 or not answers:
                raise PlaybookFailed(f"reading the autoscale_* settings failed (rc {result.rc}):\n"
                                     f"{result.stdout.read()[-3000:]}")
        return json.loads(answers[0])

    def playbook(self, playbook: str, extravars: dict, limit: str | None = None) -> None:
        log.info("ansible-playbook %s --limit %s -e %s", playbook, limit or "(none)", json.dumps(extravars))
        # ansible-runner refuses a private_data_dir that does not exist (a fresh state directory).
        Path(self.runner_dir).mkdir(parents=True, exist_ok=True)
        with own_signal_handlers():
            result = ansible_runner.run(private_data_dir=str(self.runner_dir), project_dir=str(REPO),
                                        playbook=str((REPO / playbook).resolve()), inventory=self.inventories,
                                        limit=limit, extravars={**self.overrides, **extravars}, envvars=self.env,
                                        rotate_artifacts=50, quiet=True)
        if result.status == "canceled":
            # Stopped by SIGINT or SIGTERM during the run: the journal stays for the next run.
            raise KeyboardInterrupt
        if result.rc != 0:
            raise PlaybookFailed(f"{playbook} failed (rc {result.rc}, status {result.status}); "
                                 f"output in {result.config.artifact_dir}")


class Actuator:
    """Scale-out and scale-in of one pool host, each a sequence of idempotent
    playbooks, so that running one again after a crash finishes it."""

    def __init__(self, ansible: Ansible, provision_playbook: str, deprovision_playbook: str):
        self.ansible = ansible
        self.provision_playbook = provision_playbook
        self.deprovision_playbook = deprovision_playbook

    def scale_out(self, host: str, in_service: list[str]) -> None:
        """in_service: the hosts in the balancers afterwards, host included."""
        self.ansible.playbook(self.provision_playbook, {"autoscale_host": host}, limit=f"localhost:{host}")
        # Its plays name the hosts they converge: the new host, the firewalls that admit it, the balancers.
        self.ansible.playbook("playbooks/scale_out.yml", {"autoscale_host": host, "autoscale_in_service": in_service})

    def scale_in(self, host: str, in_service: list[str]) -> None:
        """in_service: the hosts that stay in the balancers."""
        self.ansible.playbook("playbooks/scale_in.yml", {"autoscale_host": host, "autoscale_in_service": in_service})
        self.ansible.playbook(self.deprovision_playbook, {"autoscale_host": host}, limit=f"localhost:{host}")
