"""The redis role refuses settings that would let the service hand out a number twice,
unless redis_duplicates_accepted says so. Only the role's assertion tasks run, on the
control machine (connection local): no VM needed."""

import pytest

from tests.support.ansible import run_role_asserts

PASSWORDS = {"redis_app_password": "a" * 16, "redis_admin_password": "b" * 16}


def run_assertions(tmp_path, **variables):
    return run_role_asserts("redis", tmp_path, {**PASSWORDS, **variables})


UNSAFE = {
    "no AOF": {"redis_appendonly": False},
    "fsync every second": {"redis_appendfsync": "everysec"},
    "fsync by the OS": {"redis_appendfsync": "no"},
    "eviction": {"redis_maxmemory_policy": "allkeys-lru"},
    "volatile eviction": {"redis_maxmemory_policy": "volatile-ttl"},
    "DECR for the app": {"redis_app_commands": ["fcall", "get", "persist", "incr", "ping", "decr"]},
    "EVAL for the app": {"redis_app_commands": ["fcall", "incr", "eval"]},
}


def test_the_defaults_pass(tmp_path):
    result = run_assertions(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variables", UNSAFE.values(), ids=UNSAFE.keys())
def test_settings_that_allow_duplicates_are_refused(tmp_path, variables):
    result = run_assertions(tmp_path, **variables)
    assert result.returncode != 0
    assert "let turnomatic hand out a number twice" in result.stdout
    accepted = run_assertions(tmp_path, redis_duplicates_accepted=True, **variables)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
