"""Fixtures of the high-availability suite: the lab fleet's Redis nodes and
sentinels, read over SSH with the lab's generated admin password (on standard
input: never on a command line)."""

import pytest

from tests.support.lab import credential_file


class RedisFleet:
    def __init__(self, fleet):
        self.fleet = fleet
        self.password = credential_file("redis_admin").read_text().strip()

    def cli(self, host, arguments, port=6379, timeout=10):
        """redis-cli on `host` as the admin user; its output lines ([] when unreachable)."""
        result = self.fleet.ssh(host, f"REDISCLI_AUTH=$(cat) timeout {timeout} redis-cli --user admin --no-auth-warning "
                                      f"--raw -p {port} {arguments}", timeout=timeout + 20, check=False,
                                input=self.password)
        return result.stdout.split() if result.returncode == 0 else []

    def host_of(self, address):
        return next(host for host in self.fleet.group("redis") if self.fleet.address(host) == address)

    def primary(self, asking=None):
        """The host most of the reachable sentinels name as the primary (None if none does)."""
        answers = [self.cli(host, "sentinel get-master-addr-by-name turnomatic", port=26379)
                   for host in asking or self.fleet.group("sentinel")]
        named = [answer[0] for answer in answers if answer]
        return self.host_of(max(set(named), key=named.count)) if named else None

    def replicates(self, host):
        """The host `host` replicates, with its link up (None otherwise)."""
        info = dict(line.split(":", 1) for line in self.cli(host, "info replication") if ":" in line)
        if info.get("role") != "slave" or info.get("master_link_status") != "up":
            return None
        return self.host_of(info["master_host"])

    def fence_skip(self, host):
        answer = self.cli(host, "get turno::fence_skip")
        return int(answer[0]) if answer else 0


@pytest.fixture(scope="module")
def redis_fleet(fleet):
    return RedisFleet(fleet)
