"""`turnomatic serve` / `python -m turnomatic serve`: options, environment, refusals."""

import socket
import subprocess
import sys

import pytest

from tests.support.ports import free_port
from tests.support.service import get
from tests.support.statsd import counters_from, received_lines, udp_listener


def run(*args, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "turnomatic", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_names_every_option_and_variable():
    result = run("serve", "--help")
    assert result.returncode == 0
    for option, variable in [("--host", "TURNOMATIC_HOST"), ("--port", "TURNOMATIC_PORT"),
                             ("--store", "TURNOMATIC_STORE"), ("--threads", "TURNOMATIC_THREADS"),
                             ("--connection-limit", "TURNOMATIC_CONNECTION_LIMIT"),
                             ("--reuse-port", "TURNOMATIC_REUSE_PORT"), ("--statsd", "TURNOMATIC_STATSD"),
                             ("--statsd-prefix", "TURNOMATIC_STATSD_PREFIX")]:
        assert option in result.stdout and variable in result.stdout


def test_settings_from_the_environment(start_service, redis_server, redis_client):
    port = free_port()
    service = start_service(env={"TURNOMATIC_STORE": redis_server.url, "TURNOMATIC_THREADS": "2"}, port=port)
    assert get(service.base, "/turno/env")[2]["turno"] == 1
    assert redis_client.get("turno:env") == "1"
    assert "2 threads" in service.log()


def test_command_line_wins_over_the_environment(start_service, redis_server, redis_client):
    service = start_service("--store", "memory://", env={"TURNOMATIC_STORE": redis_server.url})
    assert get(service.base, "/turno/cli")[2]["turno"] == 1
    assert redis_client.get("turno:cli") is None


@pytest.mark.parametrize("args, env, message", [
    (["serve", "--store", "postgres://x"], {}, "unknown store URL 'postgres://x'"),
    (["serve", "--store", "memory://somewhere"], {}, "the memory store takes no address"),
    (["serve", "--store", "redis://h:1/0?retry_on_timeout=yes"], {}, "unsupported option(s) in the store URL: retry_on_timeout"),
    (["serve", "--statsd", "nohostport"], {}, "must be host:port"),
    (["serve"], {"TURNOMATIC_PORT": "seventy"}, "TURNOMATIC_PORT: must be a port number 0-65535, not 'seventy'"),
    (["serve", "--port", "abc"], {}, "argument --port: must be a port number 0-65535, not 'abc'"),
    (["serve", "--port", "70000"], {}, "must be a port number 0-65535, not 70000"),
    (["serve", "--threads", "four"], {}, "argument --threads: must be a whole number of at least 1, not 'four'"),
    (["serve"], {"TURNOMATIC_CONNECTION_LIMIT": "lots"}, "TURNOMATIC_CONNECTION_LIMIT: must be a whole number"),
    (["serve", "--store", "redis://127.0.0.1:1/abc"], {}, "the database in the store URL must be a number"),
    (["serve", "--store", "redis://127.0.0.1:1/0/1"], {}, "the database in the store URL must be a number"),
    (["serve", "--store", "redis+sentinel://h:1,h/svc/0"], {}, "the sentinels in the store URL must be host:port"),
    (["serve", "--store", "redis+sentinel://h:1,h:2/"], {}, "the store URL needs a service name"),
    (["serve", "--store", "redis+sentinel://h:1/svc/x"], {}, "the store URL needs a service name and a numeric database"),
    (["serve", "--store", "redis+sentinel://h:1/svc/0?replica_acks=one"], {}, "replica_acks must be a whole number"),
    (["serve", "--store", "redis+sentinel://h:1/svc/0?socket_timeout=0.3"], {},
     "replica_ack_timeout between 0 and socket_timeout (0.3 s)"),
    (["serve", "--store", "redis+sentinel://h:1/svc/0?max_connections=many"], {},
     "max_connections in the store URL must be a whole number"),
    ([], {}, "a command is required: serve"),
    (["serve"], {"TURNOMATIC_REUSE_PORT": "maybe"}, "TURNOMATIC_REUSE_PORT: must be true or false"),
    (["serve", "--threads", "0"], {}, "must be at least 1"),
])
def test_bad_settings_are_refused_with_a_message(args, env, message):
    result = run(*args, env={"PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "invalid literal" not in result.stderr


def test_help_works_with_a_bad_variable_in_the_environment():
    result = run("serve", "--help", env={"PATH": "/usr/bin:/bin", "TURNOMATIC_PORT": "seventy"})
    assert result.returncode == 0, result.stderr
    assert "TURNOMATIC_PORT" in result.stdout


def test_the_command_line_overrides_a_bad_variable(start_service):
    service = start_service(env={"TURNOMATIC_PORT": "seventy"})  # start_service gives --port
    assert get(service.base, "/turno/override")[2]["turno"] == 1
    # The variable that the command line does not override is still refused.
    result = run("serve", "--port", str(free_port()), env={"PATH": "/usr/bin:/bin", "TURNOMATIC_THREADS": "0"})
    assert result.returncode == 2 and "TURNOMATIC_THREADS: must be at least 1" in result.stderr


def test_it_says_where_it_serves(start_service):
    service = start_service()
    assert f"serving on http://{service.base} (try: curl http://{service.base}/turno/grupo1)" in service.log()


def test_port_in_use_is_refused_with_a_message():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        result = run("serve", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1 port" in result.stderr
    assert "Address already in use" in result.stderr


def test_password_is_not_logged(start_service):
    service = start_service("--store", f"redis://user:hunter2@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in service.log()
    assert "redis://user:***@127.0.0.1" in service.log()


def test_sentinel_password_is_not_logged(start_service):
    service = start_service("--store", f"redis+sentinel://user:hunter2@127.0.0.1:{free_port()}/turnomatic/0")
    assert "hunter2" not in service.log()
    assert "redis+sentinel://user:***@127.0.0.1" in service.log()


@pytest.mark.parametrize("url", [
    "redis//turnomatic:hunter2-secret@127.0.0.1:6379/0",        # no colon after the scheme
    "redis://turnomatic:hunter2-secret@127.0.0.1:port/0",      # a port that is not a number
    "redis://127.0.0.1:hunter2-secret/0",                      # the password where the port goes
    "redis:/turnomatic:hunter2-secret@127.0.0.1:6379/0",       # one slash
    "rediss//:hunter2-secret@10.0.0.1:6379/0",
])
def test_a_mistyped_store_url_never_shows_its_password(url):
    result = run("serve", "--store", url, env={"PATH": "/usr/bin:/bin"})
    assert "hunter2" not in result.stdout + result.stderr
    assert result.returncode == 2, result.stderr
    assert "cannot start" in result.stderr


def test_statsd_over_ipv6(start_service):
    """[::1]:port, as documented, reaches a StatsD listening on IPv6 loopback."""
    listener = udp_listener(0.5, "::1")
    try:
        service = start_service("--statsd", "[::1]:%d" % listener.getsockname()[1])
        assert get(service.base, "/turno/v6")[0] == 200
        assert counters_from(received_lines(listener, at_least=1))["turnomatic.tickets"] == 1
    finally:
        listener.close()
