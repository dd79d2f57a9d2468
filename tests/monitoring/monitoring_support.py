"""Helpers of the monitoring tests: rendering the roles' templates, waiting."""
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
ANSIBLE = Path(sys.executable).parent / "ansible"
# The inventory the loopback tests render the rules for (the host-silent rule
# watches these hosts only): the names test_rules_loopback.py writes.
REPORTING_HOSTS = ["lb95", "ns95", "app95"]


def render_template(role, template, destination, extra_vars=None):
    """Render one of a role's templates with its defaults and vars, with ansible's template module."""
    variables = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    if (ROLES / role / "vars/main.yml").is_file():
        variables.update(yaml.safe_load((ROLES / role / "vars/main.yml").read_text()))
    variables.update(extra_vars or {})
    variables["role_path"] = str(ROLES / role)
    subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={ROLES / role / 'templates' / template} dest={destination}",
         "-e", json.dumps(variables)],
        check=True, capture_output=True, text=True, timeout=120, env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    return Path(destination)


@functools.cache
def alert_rules_source():
    """The rules' source of truth, read as the grafana role reads it: a template, with the role's defaults."""
    with tempfile.TemporaryDirectory() as out:
        rendered = render_template("grafana", ROLES / "grafana/files/alert-rules.yml", Path(out) / "alert-rules.yml",
                                   {"grafana_reporting_hosts": REPORTING_HOSTS})
        return yaml.safe_load(rendered.read_text())["rules"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout, interval=10):
    """check() every `interval` seconds (by default the 10 s the metrics move by) until
    it returns something true, for at most `timeout` seconds; returns its last result
    (an OSError counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def aligned_now(step=10):
    """Now, on the 10 s boundary StatsD's and collectd's points are stored at."""
    return int(time.time()) // step * step
