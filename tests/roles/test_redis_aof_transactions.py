"""The redis role's redis.conf keeps a function's writes across a restart.

A function (or script) that writes more than one key goes into the AOF as a
MULTI/EXEC. Redis 7.0 checks such a transaction read back from the AOF against the
default user's rights and drops it when they lack its commands ("NOPERM ACLs rules
changed..."): with `user default off` and no rights, the failover fence (three
INCRs and the counter's) or an increment that removed a TTL would be lost at the
next restart, and its number handed out again. A real redis-server runs the role's
rendered redis.conf here, is restarted, and must still have every write.
"""

import subprocess

import redis

from tests.support.ansible import render_role_template
from tests.support.ports import free_port
from tests.support.waiting import wait_for

ADMIN_PASSWORD = "loopback-admin-password-0123456789"
# Two keys in one script call: propagated to the AOF inside MULTI/EXEC.
TWO_WRITES = "redis.call('INCR', KEYS[1]); redis.call('INCR', KEYS[2]); return 1"


def start(config, directory, port):
    process = subprocess.Popen(
        ["redis-server", str(config), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--logfile", str(directory / "redis.log"), "--pidfile", str(directory / "redis.pid"),
         "--supervised", "no", "--daemonize", "no"])
    admin = redis.Redis(port=port, username="admin", password=ADMIN_PASSWORD, socket_timeout=2, decode_responses=True)

    def answers():
        try:
            return admin.ping()
        except redis.RedisError:
            return False
    wait_for(answers, 15, f"redis-server on port {port} answering")
    return process, admin


def test_a_transaction_in_the_aof_survives_a_restart(tmp_path):
    config = render_role_template("redis", "redis.conf.j2", tmp_path / "redis.conf", variables={
        "redis_bind_address": "127.0.0.1", "redis_app_password": "loopback-app-password-0123456789",
        "redis_admin_password": ADMIN_PASSWORD})
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    process, admin = start(config, data, port)
    try:
        admin.eval(TWO_WRITES, 2, "turno:a", "turno:b")
    finally:
        process.terminate()
        process.wait(timeout=15)
    process, admin = start(config, data, port)
    try:
        assert admin.mget("turno:a", "turno:b") == ["1", "1"], (
            "a transaction was dropped when the AOF was read back:\n" + (data / "redis.log").read_text()[-1500:])
    finally:
        process.terminate()
        process.wait(timeout=15)
