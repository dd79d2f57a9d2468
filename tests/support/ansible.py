"""Ansible from the suites and tools: the environment its commands run in, playbook runs
with their output kept, and a role's template rendered the way the role renders it."""

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.paths import BIN, OUTPUT, REPO, ROLES

# Every Ansible command of the suites and tools: the project's ansible.cfg (the lab's
# inventory, the roles), the virtualenv's commands first, output without colours.
ENV = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
           PATH=f"{BIN}:{os.environ['PATH']}")
PLAYBOOK_TIMEOUT = 20 * 60
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass
class PlaybookRun:
    command: list
    returncode: int
    seconds: float
    output: str
    log: Path

    @property
    def recap(self):
        """Host → {"ok", "changed", "unreachable", "failed"} from the PLAY RECAP."""
        return {
            host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts)))
            for host, *counts in RECAP_LINE.findall(self.output)
        }

    def tail(self, lines=80):
        return "\n".join(self.output.splitlines()[-lines:])


def run_playbook(playbook, *args, log_name=None, timeout=PLAYBOOK_TIMEOUT):
    """ansible-playbook from the repository root; the output is kept in tests/output/."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / f"{log_name or Path(playbook).stem}.log"
    command = [str(BIN / "ansible-playbook"), playbook, *args]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    log.write_text(output)
    return PlaybookRun(command, result.returncode, seconds, output, log)


def render_role_template(role, template, destination, variables=None, groups=None, local_group="render"):
    """Render roles/<role>/templates/<template> to destination with Ansible's template
    module, as the role would: its defaults and vars, then `variables` (extra vars, which
    win), on a local host in local_group. groups ({group: {host: address}}) are the other
    hosts of the inventory, for templates that read groups[...] and hostvars."""
    destination = Path(destination)
    workdir = destination.parent
    children = {group: {"hosts": {host: {"ansible_host": address} for host, address in hosts.items()}}
                for group, hosts in (groups or {}).items()}
    children.setdefault(local_group, {"hosts": {}})["hosts"][f"{local_group}-local"] = {
        "ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")}
    inventory = {"all": {"children": children}}
    role_vars = [ROLES / role / "defaults" / "main.yml", ROLES / role / "vars" / "main.yml"]
    playbook = [{"name": f"Render {role}'s {template}", "hosts": f"{local_group}-local", "gather_facts": False, "tasks": [
        *({"ansible.builtin.include_vars": {"file": str(path)}} for path in role_vars if path.is_file()),
        {"ansible.builtin.template": {"src": str(ROLES / role / "templates" / template), "dest": str(destination)}},
    ]}]
    stem = destination.name.replace(".", "-")
    (workdir / f"{stem}.inventory.json").write_text(json.dumps(inventory))
    (workdir / f"{stem}.render.json").write_text(json.dumps(playbook))
    subprocess.run([str(BIN / "ansible-playbook"), "-i", str(workdir / f"{stem}.inventory.json"),
                    str(workdir / f"{stem}.render.json"),
                    "-e", json.dumps({"role_path": str(ROLES / role), **(variables or {})})],
                   check=True, capture_output=True, text=True, timeout=120, env=ENV)
    return destination


def run_role_asserts(role, workdir, variables=None, groups=None, host="localhost"):
    """The role's own checks (roles/<role>/tasks/assert.yml, through include_role, so its
    defaults and vars apply as in a real run) on `host`, connection local, with `variables`
    as extra vars. groups ({group: {host: host vars}}) is the inventory, for checks that read
    groups[...] and hostvars; without it, `host` alone. The CompletedProcess: a refusal is a
    non-zero returncode with the assert's fail_msg in stdout."""
    workdir = Path(workdir)
    local = {"ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")}
    children = {group: {"hosts": {name: {**local, **(hostvars or {})} for name, hostvars in hosts.items()}}
                for group, hosts in (groups or {"local": {host: None}}).items()}
    playbook = [{"name": f"The {role} role's checks", "hosts": host, "gather_facts": False, "tasks": [
        {"ansible.builtin.include_role": {"name": role, "tasks_from": "assert"}},
    ]}]
    (workdir / "asserts.inventory.json").write_text(json.dumps({"all": {"children": children}}))
    (workdir / "asserts.play.json").write_text(json.dumps(playbook))
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(workdir / "asserts.inventory.json"),
                           str(workdir / "asserts.play.json"), "-e", json.dumps(variables or {})],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


def render_balancer_config(workdir, variables, app_hosts, balancers=1):
    """The balancer role's nginx.conf in workdir, in front of app_hosts ({name: address}),
    for a fleet of `balancers` balancers, with its system paths (pid, logs, user) moved
    into workdir so that nginx runs unprivileged."""
    workdir = Path(workdir)
    peers = {f"lb-peer{n}": "127.0.0.1" for n in range(1, balancers)}
    config = render_role_template("balancer", "nginx.conf.j2", workdir / "nginx.conf", variables,
                                  groups={"app": app_hosts, "lb": peers}, local_group="lb")
    text = config.read_text().replace("user www-data;", "")
    text = text.replace("/run/nginx.pid", str(workdir / "nginx.pid")).replace("/var/log/nginx/", f"{workdir}/")
    config.write_text(text)
    return config


def role_defaults(role):
    """roles/<role>/defaults/main.yml as a dict."""
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
