"""The lab fleet's Redis nodes and sentinels, read over SSH with redis-cli as the lab's
generated admin user (the password on standard input: never on a command line).
Used by the ha suite and the game days."""

from tests.support.lab import credential_file

# The redis_sentinel role's port and the service it watches (roles/redis_sentinel defaults).
SENTINEL_PORT = 26379
SERVICE = "turnomatic"


class RedisFleet:
    """`fleet`: anything with ssh(), group() and address() (the suites' Fleet, a Lab)."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.password = credential_file("redis_admin").read_text().strip()

    def cli(self, host, arguments, port=6379, timeout=10, check=False):
        """redis-cli on `host` as the admin user; its output lines ([] when unreachable,
        or an error with `check`)."""
        result = self.fleet.ssh(host, f"REDISCLI_AUTH=$(cat) timeout {timeout} redis-cli --user admin --no-auth-warning "
                                      f"--raw -p {port} {arguments}", timeout=timeout + 20, check=check,
                                input=self.password)
        return result.stdout.split() if result.returncode == 0 else []

    def host_of(self, address):
        return next(host for host in self.fleet.group("redis") if self.fleet.address(host) == address)

    def primary(self, asking=None):
        """The host most of the reachable sentinels name as the primary (None if none does)."""
        answers = [self.cli(host, f"sentinel get-master-addr-by-name {SERVICE}", port=SENTINEL_PORT)
                   for host in asking or self.fleet.group("sentinel")]
        named = [answer[0] for answer in answers if answer]
        return self.host_of(max(set(named), key=named.count)) if named else None

    def replicates(self, host):
        """The host `host` replicates, with its link up (None otherwise)."""
        info = dict(line.split(":", 1) for line in self.cli(host, "info replication") if ":" in line)
        if info.get("role") != "slave" or info.get("master_link_status") != "up":
            return None
        return self.host_of(info["master_host"])

    def fence_offset(self):
        """How far the failover fence has moved every counter (turno::failovers x K) on the
        primary: a fresh id's numbers start above it, and each failover adds 2K."""
        primary = self.primary()
        if not primary:
            raise AssertionError("no sentinel names a primary: the fence's offset cannot be read")
        return self.number(primary, "turno::failovers") * self.fence_skip(primary)

    def fence_skip(self, host):
        return self.number(host, "turno::fence_skip")

    def number(self, host, key):
        """An integer key on `host` (0 when it is not set; an error when Redis does not answer)."""
        answer = self.cli(host, f"get {key}", check=True)
        return int(answer[0]) if answer else 0
