"""The redis role's replication metrics script (collectd's exec plugin runs it for
as long as collectd runs) keeps reporting when the monitoring user's password
changes: the role rewrites the password file, and the script must use the new one.
A game day found the replicas silent in Graphite: their scripts, started at boot,
had kept the password from before the lab's secrets were generated again.

The role's rendered script runs here against a real redis-server with the
monitoring user's ACL; the password is changed in Redis and in the file.
"""

import os
import queue
import subprocess
import threading
import time

import redis

from tests.support.ansible import render_role_template
from tests.support.service import RedisServer

ADMIN_PASSWORD = "loopback-admin-password-0123456789"
OLD_PASSWORD = "loopback-monitoring-password-0123"
NEW_PASSWORD = "loopback-monitoring-password-4567"


def lines_of(process):
    """The script's output lines, each with the time it arrived, through a queue."""
    arrived = queue.Queue()

    def read():
        for line in process.stdout:
            arrived.put((time.monotonic(), line.strip()))
    threading.Thread(target=read, daemon=True).start()
    return arrived


def primary_reported_after(arrived, instant, timeout):
    """Whether a PUTVAL of gauge-primary arrives after `instant`, within `timeout` s."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            at, line = arrived.get(timeout=left)
        except queue.Empty:
            return False
        if at > instant and line.startswith("PUTVAL") and "/redis-replication/gauge-primary" in line:
            return True
    return False


def test_the_metrics_follow_a_new_monitoring_password(tmp_path):
    node = RedisServer(tmp_path / "redis", appendfsync=None).start()
    secret = tmp_path / "monitoring.secret"
    script = render_role_template("redis", "redis-replication-metrics.j2", tmp_path / "redis-replication-metrics",
                                  variables={"redis_port": node.port,
                                             "redis_monitoring_credentials_path": str(secret),
                                             "redis_metrics_sentinel_port": 0})
    # As the role has it: no anonymous access (redis-cli goes on without a login when
    # its AUTH fails), an admin user, the monitoring user.
    redis.Redis(port=node.port, socket_timeout=5).acl_setuser(
        "admin", enabled=True, passwords=[f"+{ADMIN_PASSWORD}"], keys=["*"], channels=["*"], commands=["+@all"])
    admin = redis.Redis(port=node.port, username="admin", password=ADMIN_PASSWORD, socket_timeout=5)
    admin.acl_setuser("default", enabled=False)
    admin.acl_setuser("monitoring", enabled=True, passwords=[f"+{OLD_PASSWORD}"], commands=["+info", "+role", "+ping"])
    secret.write_text(OLD_PASSWORD + "\n")
    process = subprocess.Popen(["sh", str(script)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "COLLECTD_HOSTNAME": "loopback", "COLLECTD_INTERVAL": "1"})
    try:
        arrived = lines_of(process)
        assert primary_reported_after(arrived, 0, 10), "no metric with the first password"
        admin.acl_setuser("monitoring", enabled=True, reset_passwords=True, passwords=[f"+{NEW_PASSWORD}"])
        secret.write_text(NEW_PASSWORD + "\n")
        changed = time.monotonic()
        assert primary_reported_after(arrived, changed + 1, 10), (
            "no metric in the 10 s after the password changed: the script kept the old one")
    finally:
        process.terminate()
        process.wait(timeout=10)
        node.stop()
