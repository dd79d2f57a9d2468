"""No task shows a secret in `ansible-playbook --diff` output or in its logged result.

A secret is a variable of a role's defaults or vars, or of an inventory's group_vars,
named like a password, a secret or a private key (`*password*`, `*secret*`, `*_key`,
`*token*`), the store URL that carries the Redis password, and every variable whose
value is made from one of them. A task references a secret when its arguments name
one, or when it templates a file (`template`) whose text names one.

Such a task must say `no_log: true`, which hides its arguments and its result, the
diff included; a `template` task may say `diff: false` instead: what it writes
never appears in its result, only in the diff. An `assert` whose condition reads a
secret shows the condition's text, never the value, so only its messages count.

Static on purpose: it reads every task of every role and playbook, including the
branches a given run skips, which no single run of the roles would cover.
"""

import re

import pytest
import yaml

from tests.support.paths import REPO

SECRET_NAME = re.compile(r"[a-z0-9_]*(password|secret|_key|token)[a-z0-9_]*")
# Named for what they hold, not for their secret: URLs that carry a password.
SECRETS_BY_ROLE = {"turnomatic_store"}
NOT_SECRETS = {
    # A pattern of key names, and public SSH keys.
    "redis_app_key_pattern",
    "common_deploy_authorized_keys",
    "grafana_apt_key_url",
    # Whether sshd accepts passwords.
    "common_sshd_password_authentication",
    # The path of the lab's SSH key file, not its content.
    "lab_ssh_key",
    "ansible_ssh_private_key_file",
}
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
ASSERT_MODULES = {"assert", "ansible.builtin.assert"}
TEMPLATE_MODULES = {"template", "ansible.builtin.template"}
# Task keywords that are not the module's arguments.
KEYWORDS = {
    "name", "when", "notify", "listen", "register", "loop", "loop_control", "tags", "become", "vars",
    "delegate_to", "changed_when", "failed_when", "until", "retries", "delay", "no_log", "diff",
    "check_mode", "ignore_errors", "run_once", "environment", "args",
}


def variable_files():
    yield from REPO.glob("roles/*/defaults/main.yml")
    yield from REPO.glob("roles/*/vars/main.yml")
    yield from REPO.glob("inventory/*/group_vars/**/*.yml")


def load_yaml(path):
    # Vault-encrypted values are opaque here: their names are what matters.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: "")
    return yaml.load(path.read_text(), Loader=Loader)


def secret_variables():
    """The secret names, closed over values that are made from a secret."""
    values = {}
    for path in variable_files():
        for name, value in (load_yaml(path) or {}).items():
            values.setdefault(name, []).append(yaml.safe_dump(value, width=10**6))
    secrets = {name for name in values if SECRET_NAME.fullmatch(name)} | SECRETS_BY_ROLE
    secrets -= NOT_SECRETS
    while True:
        derived = {name for name, texts in values.items()
                   if name not in secrets and name not in NOT_SECRETS and any(mentions(text, secrets) for text in texts)}
        if not derived:
            return secrets
        secrets |= derived


def mentions(text, names):
    """The names that a Jinja expression or statement of the text reads (plain words render as they are)."""
    jinja = " ".join(re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, re.DOTALL))
    return {name for name in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", jinja)}


def walk_tasks(entries):
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        if any(key in entry for key in ("block", "rescue", "always")):
            for key in ("block", "rescue", "always"):
                yield from walk_tasks(entry.get(key))
            continue
        if "hosts" in entry or "import_playbook" in entry:  # a play
            for key in TASK_LISTS:
                yield from walk_tasks(entry.get(key))
            continue
        yield entry


def task_files():
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")) + sorted(REPO.glob("roles/*/handlers/*.yml")):
        yield path, path.parents[1] / "templates"
    for path in sorted(REPO.glob("playbooks/**/*.yml")) + [REPO / "site.yml"]:
        yield path, path.parent / "templates"


def module_of(task):
    return next((key for key in task if key not in KEYWORDS), None)


def shown_text(task, templates):
    """What the task could show: its arguments and loop, and for a template task the file it writes."""
    module = module_of(task)
    arguments = task.get(module)
    if module in ASSERT_MODULES:
        arguments = {key: value for key, value in (arguments or {}).items() if key.endswith("msg")}
    text = yaml.safe_dump([arguments, task.get("loop"), task.get("args"), task.get("vars")], width=10**6)
    if module in TEMPLATE_MODULES and isinstance(arguments, dict):
        source = templates / arguments["src"]
        if source.is_file():
            text += source.read_text()
    return module, text


def exposures():
    secrets = secret_variables()
    for path, templates in task_files():
        for task in walk_tasks(load_yaml(path)):
            module, text = shown_text(task, templates)
            named = mentions(text, secrets)
            if not named or task.get("no_log") is True:
                continue
            if module in TEMPLATE_MODULES and task.get("diff") is False:
                continue
            yield f"{path.relative_to(REPO)}: {task.get('name', module)!r} shows {sorted(named)}"


def test_the_secret_names_are_found():
    # The check is only as good as its list: these are the fleet's secrets today.
    secrets = secret_variables()
    for name in ("redis_app_password", "redis_admin_password", "grafana_admin_password", "graphite_web_secret_key",
                 "turnomatic_store", "turnomatic_redis_password", "vault_redis_app_password"):
        assert name in secrets


def test_no_task_shows_a_secret_in_diff_or_log():
    found = list(exposures())
    assert not found, "tasks that would show a secret (no_log: true, or diff: false on a template):\n" + "\n".join(found)


@pytest.mark.parametrize("task, shown", [
    ({"name": "t", "ansible.builtin.template": {"src": "x.j2", "dest": "/x"}, "diff": False}, False),
    ({"name": "t", "ansible.builtin.command": "redis-cli -a {{ redis_admin_password }} ping"}, True),
    ({"name": "t", "ansible.builtin.command": "redis-cli -a {{ redis_admin_password }} ping", "no_log": True}, False),
    ({"name": "t", "ansible.builtin.assert": {"that": ["redis_app_password | length > 16"],
                                             "fail_msg": "set redis_app_password"}}, False),
    ({"name": "t", "ansible.builtin.assert": {"that": ["true"], "fail_msg": "{{ grafana_admin_password }}"}}, True),
])
def test_the_check_tells_shown_from_hidden(task, shown):
    module, text = shown_text(task, REPO)
    named = mentions(text, secret_variables())
    hidden = task.get("no_log") is True or (module in TEMPLATE_MODULES and task.get("diff") is False)
    assert bool(named) and not hidden if shown else not named or hidden
