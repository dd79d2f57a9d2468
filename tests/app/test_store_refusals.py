"""A Redis that answers but refuses the write, a key with a TTL, and the app user's rights.

A refusal (out of memory under noeviction, READONLY on a replica, no permission,
MISCONF after a failed save) ran nothing: 503 store_unavailable saying so, never
500 corrupt_counter, and /readyz says not ready. corrupt_counter is kept for a value
that is not a counter.
"""

import re
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.support.service import RedisServer, get
from tests.support.waiting import wait_for

ROLE_DEFAULTS = Path(__file__).parents[2] / "roles" / "redis" / "defaults" / "main.yml"


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of the test's own, started with extra arguments, stopped at the end."""
    servers = []

    def start(*extra_args):
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, *extra_args)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def assert_refused(service, id, expected_counter, client):
    status, headers, body = get(service.base, f"/turno/{id}")
    assert (status, body["error"]) == (503, "store_unavailable"), body
    assert body["message"].endswith("no increment ran"), body
    assert headers["Cache-Control"] == "no-store"
    assert client.get(f"turno:{id}") == expected_counter
    status, _, body = get(service.base, "/readyz")
    assert (status, body["error"]) == (503, "store_unavailable"), body


def test_out_of_memory_under_noeviction(own_redis, start_service):
    server = own_redis("--maxmemory-policy", "noeviction")
    client = server.client()
    service = start_service("--store", server.url)
    assert get(service.base, "/turno/full")[2]["turno"] == 1
    client.config_set("maxmemory", "1")
    assert_refused(service, "full", "1", client)
    assert "OOM" in service.log()
    client.config_set("maxmemory", "0")
    assert get(service.base, "/readyz")[0] == 200
    assert get(service.base, "/turno/full")[2]["turno"] == 2


def test_read_only_replica(own_redis, start_service):
    """After a failover a demoted primary answers READONLY: the app must say 503, not
    retry, and /readyz must take it out of service."""
    primary = own_redis()
    primary.load_library()
    primary.client().set("turno:replica", 5)
    replica = own_redis("--replicaof", "127.0.0.1", str(primary.port))
    wait_for(lambda: replica.client().get("turno:replica") == "5", 10, "the replica in sync")
    service = start_service("--store", replica.url)
    assert_refused(service, "replica", "5", replica.client())
    assert "READONLY" in service.log()


def test_missing_permission(redis_server, redis_client, start_service):
    """An app user from before the functions (no INCR allowed inside them): refused."""
    redis_server.load_library()
    redis_client.execute_command("ACL", "SETUSER", "noincr", "reset", "on", ">noincr-pass", "~turno:*",
                                 "+fcall", "+get", "+persist")
    try:
        service = start_service("--store", f"redis://noincr:noincr-pass@127.0.0.1:{redis_server.port}/0")
        redis_client.set("turno:perm", 3)
        assert_refused(service, "perm", "3", redis_client)
    finally:
        redis_client.execute_command("ACL", "DELUSER", "noincr")


def test_misconf_after_a_failed_save(own_redis, start_service, tmp_path):
    """stop-writes-on-bgsave-error: once a snapshot failed, Redis refuses every write."""
    server = own_redis("--save", "3600 1", "--appendonly", "no")
    client = server.client()
    service = start_service("--store", server.url)
    assert get(service.base, "/turno/misconf")[2]["turno"] == 1
    subprocess.run(["rm", "-rf", str(server.directory)], check=True)  # the snapshot cannot be written
    try:
        client.bgsave()
        wait_for(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", 10, "the failed save")
        assert_refused(service, "misconf", "1", client)
        assert "MISCONF" in service.log()
    finally:
        client.config_set("save", "")  # else Redis refuses to stop without its snapshot


@pytest.mark.parametrize("seed, detail", [("abc", "not an integer"), ("-3", "negative"), ("007", "not an integer")])
def test_values_that_are_not_counters_are_still_corrupt(redis_server, redis_client, start_service, seed, detail):
    service = start_service("--store", redis_server.url)
    redis_client.set("turno:notcounter", seed)
    status, _, body = get(service.base, "/turno/notcounter")
    assert (status, body["error"]) == (500, "corrupt_counter")
    assert detail in body["message"]
    assert redis_client.get("turno:notcounter") == seed
    assert get(service.base, "/readyz")[0] == 200  # the store is fine, one value is not


def test_a_ttl_is_removed_with_the_increment(redis_server, redis_client, start_service):
    """INCR keeps a key's TTL: the counter would restart at 1 when it expires (a duplicate).
    The increment removes the TTL in the same atomic step and the log says so."""
    service = start_service("--store", redis_server.url)
    redis_client.set("turno:ttl", 41, px=800)
    assert get(service.base, "/turno/ttl")[2]["turno"] == 42
    assert redis_client.pttl("turno:ttl") == -1
    wait_for(lambda: "turno:ttl had a TTL: removed" in service.log(), 5, "the log line")
    time.sleep(1.0)  # past the TTL it had
    assert get(service.base, "/turno/ttl")[2]["turno"] == 43


def role_app_user():
    """The app user's rights as the redis role grants them (its defaults)."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return defaults["redis_app_key_pattern"], defaults["redis_app_commands"]


def test_the_app_user_may_only_take_tickets(redis_server, redis_client, start_service):
    """The role's app user (its defaults), with the library loaded by the admin as the
    role does: tickets and /readyz work; nothing that could hand out a number twice
    (lower, reset or remove a counter, run other code) is allowed."""
    key_pattern, commands = role_app_user()
    redis_server.load_library()
    redis_client.execute_command("ACL", "SETUSER", "turnomatic", "reset", "on", ">s3cret-pass",
                                 f"~{key_pattern}", "resetchannels", "-@all", *(f"+{c}" for c in commands))
    try:
        url = f"redis://turnomatic:s3cret-pass@127.0.0.1:{redis_server.port}/0"
        service = start_service("--store", url)
        assert get(service.base, "/turno/acl")[:3:2] == (200, {"id": "acl", "turno": 1})
        assert get(service.base, "/readyz")[0] == 200
        assert "s3cret-pass" not in service.log()

        app = redis.Redis(port=redis_server.port, username="turnomatic", password="s3cret-pass",
                          decode_responses=True)
        forbidden = [
            ("DECR", "turno:acl"), ("DECRBY", "turno:acl", "1"), ("SET", "turno:acl", "0"), ("DEL", "turno:acl"),
            ("GETDEL", "turno:acl"), ("EXPIRE", "turno:acl", "1"), ("RENAME", "turno:acl", "turno:x"),
            ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("SCRIPT", "LOAD", "return 1"),
            ("EVAL", "return redis.call('DECR', KEYS[1])", "1", "turno:acl"),
            ("FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('f', function() return 1 end)"),
            ("FUNCTION", "DELETE", "turnomatic"), ("FUNCTION", "FLUSH"),
            ("FCALL", "turno_next", "1", "other:key", "10"),
        ]
        for command in forbidden:
            with pytest.raises(redis.exceptions.NoPermissionError):
                app.execute_command(*command)
        assert redis_client.get("turno:acl") == "1"

        wrong = start_service("--store", f"redis://turnomatic:wrong@127.0.0.1:{redis_server.port}/0")
        status, _, body = get(wrong.base, "/turno/acl")
        assert (status, body["error"]) == (503, "store_unavailable")
        assert get(wrong.base, "/readyz")[0] == 503
    finally:
        redis_client.execute_command("ACL", "DELUSER", "turnomatic")


def test_library_missing_where_the_app_may_not_load_it(redis_server, redis_client, start_service):
    """Only the admin may load functions: without the library, 503 and a log line saying
    what is missing and who loads it, nothing ran."""
    key_pattern, commands = role_app_user()
    redis_client.function_flush()
    redis_client.execute_command("ACL", "SETUSER", "turnomatic", "reset", "on", ">s3cret-pass",
                                 f"~{key_pattern}", "resetchannels", "-@all", *(f"+{c}" for c in commands))
    try:
        service = start_service("--store", f"redis://turnomatic:s3cret-pass@127.0.0.1:{redis_server.port}/0")
        assert "store not ready yet" in service.log()
        status, _, body = get(service.base, "/turno/nolib")
        assert (status, body["error"]) == (503, "store_unavailable")
        assert body["message"] == ("the store is not set up: the turnomatic function library is missing; "
                                   "no increment was sent")
        assert re.search(r"FUNCTION LOAD refused \(NOPERM .*\): the redis role loads the library", service.log())
        assert get(service.base, "/readyz")[0] == 503
        assert redis_client.get("turno:nolib") is None
        redis_server.load_library()
        assert get(service.base, "/turno/nolib")[2]["turno"] == 1
    finally:
        redis_client.execute_command("ACL", "DELUSER", "turnomatic")
