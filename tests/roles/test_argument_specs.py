"""Every role's meta/argument_specs.yml mirrors its defaults/main.yml.

The spec is what `ansible-doc --type role` shows and what Ansible checks the
variables against; the defaults are what the role really uses. A variable added
to one and not the other, or a default changed in one place only, fails here.
"""

import pytest
import yaml

from tests.support.paths import ROLES

ROLES_WITH_DEFAULTS = sorted(path.parent.parent.name for path in ROLES.glob("*/defaults/main.yml"))


def load(path):
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES_WITH_DEFAULTS)
def test_argument_specs_mirror_defaults(role):
    specs_file = ROLES / role / "meta" / "argument_specs.yml"
    assert specs_file.exists(), f"{role}: defaults/main.yml has no meta/argument_specs.yml beside it"
    defaults = load(ROLES / role / "defaults" / "main.yml")
    options = load(specs_file)["argument_specs"]["main"].get("options") or {}

    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"{role}: in defaults/main.yml but not in argument_specs: {undocumented}"

    without_default = sorted(
        name for name, spec in options.items() if not spec.get("required") and name not in defaults
    )
    assert not without_default, f"{role}: optional in argument_specs but not in defaults/main.yml: {without_default}"

    different = {
        name: {"defaults/main.yml": value, "argument_specs": options[name].get("default")}
        for name, value in defaults.items()
        if options[name].get("default") != value
    }
    assert not different, f"{role}: defaults differ: {different}"


def test_a_drifted_role_is_caught(tmp_path, monkeypatch):
    """The check itself: a spec whose default drifted from defaults/main.yml fails."""
    role = tmp_path / "drifted"
    (role / "defaults").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "defaults" / "main.yml").write_text("drifted_port: 7017\ndrifted_extra: 1\n")
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n      drifted_port:\n        type: int\n        default: 7018\n"
    )
    monkeypatch.setattr(__import__(__name__), "ROLES", tmp_path)
    with pytest.raises(AssertionError, match="drifted_extra"):
        test_argument_specs_mirror_defaults("drifted")
    (role / "defaults" / "main.yml").write_text("drifted_port: 7017\n")
    with pytest.raises(AssertionError, match="defaults differ"):
        test_argument_specs_mirror_defaults("drifted")
