"""Every secret the fleet's roles need is set in the production inventory, from Ansible Vault.

A role's secret is a variable of its defaults/main.yml named *_password or
*_secret_key whose default is empty, plus turnomatic_store (its URL carries the
Redis password) and turnomatic_otel_headers (Honeycomb's API key). For each play of site.yml, every production host of the play's
group must set each secret of the play's roles to a template that names a vault_*
variable, and every vault_* variable must be encrypted: never a secret in clear,
never one left empty for a production run to find out.
"""

import json
import re
import subprocess

import pytest
import yaml

from tests.support.ansible import ENV
from tests.support.paths import BIN, REPO

ANSIBLE_INVENTORY = BIN / "ansible-inventory"
SECRET_NAME = re.compile(r".*_(password|secret_key)$")
SECRETS_INSIDE_SETTINGS = {"turnomatic": ["turnomatic_store", "turnomatic_otel_headers"]}


def role_secrets(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    named = [name for name, value in defaults.items() if SECRET_NAME.fullmatch(name) and value == ""]
    return named + SECRETS_INSIDE_SETTINGS.get(role, [])


def plays_with_secrets():
    """(group, roles) of each play of site.yml whose roles have secrets."""
    for play in yaml.safe_load((REPO / "site.yml").read_text()):
        roles = [entry["role"] if isinstance(entry, dict) else entry for entry in play.get("roles", [])]
        if any(role_secrets(role) for role in roles):
            yield play["hosts"], roles


@pytest.fixture(scope="module")
def production():
    listing = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", "inventory/production", "--list"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120, env=ENV,
    )
    return json.loads(listing.stdout)


def hosts_of(inventory, group):
    if group == "all":
        return sorted(inventory["_meta"]["hostvars"])
    hosts = set(inventory.get(group, {}).get("hosts", []))
    for child in inventory.get(group, {}).get("children", []):
        hosts.update(hosts_of(inventory, child))
    return sorted(hosts)


def test_the_roles_have_secrets_to_check():
    assert {"redis_app_password", "redis_admin_password", "graphite_web_secret_key",
            "grafana_admin_password", "turnomatic_store", "turnomatic_otel_headers"} <= {
        secret for _, roles in plays_with_secrets() for role in roles for secret in role_secrets(role)
    }


@pytest.mark.parametrize("group,roles", list(plays_with_secrets()), ids=lambda value: value if isinstance(value, str) else "+".join(value))
def test_every_secret_of_a_play_comes_from_the_vault(production, group, roles):
    hosts = hosts_of(production, group)
    assert hosts, f"no production host in group {group}"
    for host in hosts:
        variables = production["_meta"]["hostvars"][host]
        for role in roles:
            for secret in role_secrets(role):
                value = variables.get(secret)
                assert isinstance(value, str) and value, f"{host}: {secret} ({role}) is not set in production"
                vault_names = re.findall(r"\{\{\s*(vault_\w+)\s*\}\}", value)
                assert vault_names, f"{host}: {secret} ({role}) is {value!r}: not from a vault_* variable"
                for name in vault_names:
                    assert "__ansible_vault" in (variables.get(name) or {}), (
                        f"{host}: {name}, which {secret} reads, is not Vault-encrypted"
                    )
