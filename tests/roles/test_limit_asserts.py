"""The roles refuse connection limits that do not fit together (docs/architecture.md, "Connection limits").

The balancer role's and the turnomatic role's own assert tasks, run by Ansible on the
control machine against an inventory of two balancers and two app hosts, with the
roles' defaults and one setting changed at a time.
"""

import pytest

from tests.support.ansible import run_role_asserts


def run_assert(tmp_path, role, extra_vars, app_vars=None):
    groups = {"lb": {"lb1": None, "lb2": None},
              "app": {"app1": {"ansible_host": "127.0.0.21", **(app_vars or {})}, "app2": {"ansible_host": "127.0.0.22"}}}
    return run_role_asserts(role, tmp_path, extra_vars, groups, host="lb1" if role == "balancer" else "app1")


TURNOMATIC_STORE = {"turnomatic_store": "redis://127.0.0.1:6379/0", "turnomatic_instances": 2}


@pytest.mark.parametrize(("role", "extra_vars", "app_vars", "accepted"), [
    ("balancer", {}, None, True),
    # One more idle connection per worker: 2 x 2 x (64 + 2 x 17) + 16 = 408 > 400.
    ("balancer", {"balancer_keepalive_connections": 17}, None, False),
    ("balancer", {"balancer_app_max_conns": 100}, None, False),
    # An app host whose inventory sets a lower limit is checked with its own.
    ("balancer", {}, {"turnomatic_connection_limit": 300}, False),
    # Apps that accept more: 2 x 2 x (100 + 2 x 16) + 16 = 544 <= 600.
    ("balancer", {"balancer_app_max_conns": 100, "balancer_app_connection_limit": 600}, None, True),
    ("turnomatic", TURNOMATIC_STORE, None, True),
    ("turnomatic", {**TURNOMATIC_STORE, "turnomatic_connection_limit": 1000}, None, False),
    ("turnomatic", {**TURNOMATIC_STORE, "turnomatic_connection_limit": 4}, None, False),
])
def test_connection_limits_that_do_not_fit_are_refused(tmp_path, role, extra_vars, app_vars, accepted):
    result = run_assert(tmp_path, role, extra_vars, app_vars)
    assert (result.returncode == 0) == accepted, result.stdout[-3000:]
    if not accepted:
        assert "connection" in result.stdout.lower(), result.stdout[-3000:]
