"""The lab's facts, read from its inventory and nowhere else: host addresses, groups, the
state directory, the SSH key and options Ansible uses. Moving the lab (another subnet,
another state directory) is a change to inventory/lab only.

    lab = lab_facts()
    lab.address("lb1"); lab.group("app"); lab.ssh("client1", "getent hosts turnomatic.lab")

Read with Ansible's own API (inventory, group_vars, templated values such as
lab_ssh_key), from the inventories ansible.cfg names or the ones given.
"""

import os
import shlex
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support.paths import REPO

LAB_INVENTORY = REPO / "inventory" / "lab"
SCALE_OUT_INVENTORY = LAB_INVENTORY / "scaleout.yml"


def credential_file(name):
    """A secret the lab inventory generated (its group_vars' password lookups), by name:
    redis_admin, redis_app... Read from the file, never put on a command line."""
    return LAB_INVENTORY / "credentials" / name


@dataclass(frozen=True)
class Lab:
    hosts: dict  # inventory name → address
    groups: dict  # group → inventory names
    state_dir: Path
    bridge: str
    ssh_key: str
    ssh_user: str
    ssh_options: tuple
    # The balancers' virtual addresses (keepalived role): instance name → (address, master).
    virtual_addresses: dict

    def address(self, host):
        return self.hosts[host]

    def group(self, name):
        return self.groups.get(name, [])

    def ssh_command(self, host, command):
        return ["ssh", "-i", self.ssh_key, *self.ssh_options, f"{self.ssh_user}@{self.hosts[host]}", command]

    def ssh(self, host, command, timeout=60, check=True, input=None):
        """Run a shell command on a lab host; returns the CompletedProcess (text)."""
        result = subprocess.run(self.ssh_command(host, command), capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: {command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result


@cache
def lab_facts(*inventories: Path) -> Lab:
    """The lab as its inventory describes it (inventory/lab by default; name
    SCALE_OUT_INVENTORY too for the scale-out fleet). Read once per process."""
    # ansible reads its configuration when first imported: the project's, wherever we run from.
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    loader.set_basedir(str(REPO))
    inventory = InventoryManager(loader=loader, sources=[str(path) for path in inventories or (LAB_INVENTORY,)])
    variables = VariableManager(loader=loader, inventory=inventory)
    hosts = {host.name: host.vars.get("ansible_host", host.name) for host in inventory.get_hosts()}
    groups = {name: sorted(host.name for host in group.get_hosts())
              for name, group in inventory.groups.items() if name not in ("all", "ungrouped")}
    # Facts every lab host shares (group_vars/all), templated as Ansible would.
    first = inventory.get_hosts()[0]
    templar = Templar(loader=loader, variables=variables.get_vars(host=first))
    fact = lambda name: templar.template(trust_as_template(f"{{{{ {name} }}}}"))  # noqa: E731
    balancer = inventory.get_host(groups["lb"][0])
    instances = Templar(loader=loader, variables=variables.get_vars(host=balancer)).template(
        trust_as_template("{{ keepalived_instances }}"))
    return Lab(hosts=hosts, groups=groups, state_dir=Path(fact("lab_state_dir")), bridge=fact("lab_bridge"),
               ssh_key=fact("ansible_ssh_private_key_file"), ssh_user=fact("ansible_user"),
               ssh_options=tuple(shlex.split(fact("ansible_ssh_common_args"))),
               virtual_addresses={instance["name"]: (instance["address"], instance["master"]) for instance in instances})
