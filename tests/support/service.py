"""A real redis-server, real turnomatic processes, and HTTP against them."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from turnomatic.store import LIBRARY_CODE

from tests.support.ports import free_port
from tests.support.relay import Relay
from tests.support.waiting import wait_for


class RedisServer:
    """A redis-server on a free loopback port, its data and log in `directory`. By default
    AOF with appendfsync always: every acknowledged increment is on disk, so a kill and
    restart loses nothing; appendfsync=None runs it without persistence (load, benchmarks)."""

    def __init__(self, directory, *extra_args, appendfsync="always"):
        self.directory = Path(directory)
        self.extra_args = extra_args
        self.appendfsync = appendfsync
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "yes", "--appendfsync", self.appendfsync] if self.appendfsync
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             *persistence, "--save", "", "--logfile", "redis.log", "--enable-debug-command", "local",
             *self.extra_args],
        )
        wait_for(self.answers, 10, f"redis-server on port {self.port} answering")
        return self

    def answers(self):
        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def kill(self):
        """A crash: SIGKILL, no chance to reply to what is in flight."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self):
        """SIGSTOP: the process holds its connections but answers nothing (a VM paused, a long GC)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def load_library(self):
        """What the redis role does with its admin user: load the app's function library."""
        self.client().function_load(LIBRARY_CODE, replace=True)


# What the redis role sets on every node of a replicated fleet, for loopback: a primary
# refuses writes (NOREPLICAS) once no replica has acknowledged it for this many seconds.
MIN_REPLICAS_MAX_LAG = 2


class SentinelServer(RedisServer):
    """A real Redis Sentinel (redis-server --sentinel) on a free loopback port, watching
    `service`, its config file (which Sentinel rewrites) in `directory`."""

    def __init__(self, directory, service, primary_port, quorum=2, down_after_ms=2000, failover_timeout_ms=4000):
        super().__init__(directory)
        self.service = service
        self.settings = [f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
                         f"sentinel down-after-milliseconds {service} {down_after_ms}",
                         f"sentinel failover-timeout {service} {failover_timeout_ms}"]

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        if not config.exists():
            config.write_text("\n".join([f"port {self.port}", "bind 127.0.0.1", f"dir {self.directory}",
                                         "logfile sentinel.log", *self.settings]) + "\n")
        self.process = subprocess.Popen(["redis-server", str(config), "--sentinel"])
        wait_for(self.answers, 10, f"sentinel on port {self.port} answering")
        return self

    def primary_port(self):
        host_port = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True).sentinel_get_master_addr_by_name(
            self.service)
        return int(host_port[1])


class ReplicatedRedis:
    """What the redis and redis_sentinel roles set up on three hosts, on loopback: a
    primary, replicas and sentinels (quorum 2), every node with min-replicas-to-write 1,
    the function library loaded and the failover fence on with skip `fence_skip`.
    down_after_ms: 1 s made a busy machine's sentinels take a promoted node for dead
    (a second failover); 2 s did not."""

    SERVICE = "turnomatic"

    def __init__(self, directory, replicas=2, sentinels=3, fence_skip=1000, down_after_ms=2000):
        self.directory = Path(directory)
        self.fence_skip = fence_skip
        node_settings = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG))
        self.nodes = [RedisServer(self.directory / f"redis{n}", *node_settings) for n in range(replicas + 1)]
        primary = self.nodes[0]
        # Each replica's first link goes through a relay that a test can cut (a partition);
        # after a failover the sentinels point the replicas at the new primary directly.
        self.relays = {}
        for replica in self.nodes[1:]:
            self.relays[replica] = Relay(primary.port)
            replica.extra_args += ("--replicaof", "127.0.0.1", str(self.relays[replica].port))
        self.sentinels = [SentinelServer(self.directory / f"sentinel{n}", self.SERVICE, primary.port,
                                         down_after_ms=down_after_ms) for n in range(sentinels)]

    def start(self):
        for node in self.nodes:
            node.start()
        wait_for(self.in_sync, 20, "every replica in sync")
        primary = self.nodes[0].client()
        primary.function_load(LIBRARY_CODE, replace=True)
        if self.fence_skip:
            primary.fcall("turno_fence_setup", 1, "turno::fence_skip", self.fence_skip)
        wait_for(self.in_sync, 20, "every replica in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(lambda: all(self.sentinels_know_everyone(s) for s in self.sentinels), 20,
                 "every sentinel knowing the replicas and the other sentinels")
        return self

    def url(self, **options):
        sentinels = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"redis+sentinel://{sentinels}/{self.SERVICE}/0" + (f"?{query}" if query else "")

    def node(self, port):
        return next(node for node in self.nodes if node.port == port)

    def primary(self):
        """The node the sentinels name as the primary."""
        return self.node(self.sentinels[0].primary_port())

    def sentinels_know_everyone(self, sentinel):
        client = redis.Redis(port=sentinel.port, socket_timeout=2, decode_responses=True)
        state = client.sentinel_master(self.SERVICE)
        return (int(state["num-slaves"]) == len(self.nodes) - 1
                and int(state["num-other-sentinels"]) == len(self.sentinels) - 1)

    def in_sync(self):
        """One primary taking writes, every other node its replica with the link up and
        the initial sync done."""
        try:
            states = [node.client().info("replication") for node in self.nodes]
        except redis.RedisError:
            return False
        primaries = [state for state in states if state["role"] == "master"]
        # Good replicas: acknowledged within min-replicas-max-lag (else writes are refused).
        if len(primaries) != 1 or not (primaries[0]["connected_slaves"] == primaries[0]["min_slaves_good_slaves"]
                                       == len(self.nodes) - 1):
            return False
        return all(state["master_link_status"] == "up" and not state["master_sync_in_progress"]
                   for state in states if state["role"] == "slave")

    def failovers(self):
        """Fences applied (each adds 2 to turno::failovers)."""
        return int(self.primary().client().get("turno::failovers") or 0) // 2

    def stop(self):
        for relay in self.relays.values():
            relay.drop()
        for server in [*self.sentinels, *self.nodes]:
            if server.process and server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)
            server.stop()


class Service:
    """`python -m turnomatic serve ...` as a real process, its log in a file."""

    def __init__(self, log_path, *options, env=None, port=None):
        self.port = port or free_port()
        self.base = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log_file = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "turnomatic", "serve", "--port", str(self.port), *options],
            stdout=self.log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        wait_for(self.answers, 15, f"turnomatic on port {self.port} answering")

    def answers(self):
        assert self.process.poll() is None, f"turnomatic exited:\n{self.log()}"
        try:
            return get(self.base, "/healthz")[0] == 200
        except OSError:
            return False

    def log(self):
        self.log_file.flush()
        return Path(self.log_path).read_text()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log_file.close()


def get(base, path, method="GET", timeout=10, connection=None):
    """One request over real HTTP; the path is sent as given (no normalisation).
    Returns status, headers and the parsed JSON body (None when there is none)."""
    own = connection is None
    if own:
        connection = http.client.HTTPConnection(base, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        raw = response.read()
        body = json.loads(raw) if raw else None
        return response.status, response.headers, body
    finally:
        if own:
            connection.close()


def run_in_threads(worker, threads):
    """worker(n) for n in 0..threads-1, each in its own thread, all at once; returns when all are done."""
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def hammer(base, ids, threads, requests_per_thread, timeout=10):
    """Many threads, each on its own keep-alive connection, cycling over ids.
    Returns the numbers handed out per id and the failed requests (status, body)."""
    numbers = {id: [] for id in ids}
    failures = []

    def worker(offset):
        connection = http.client.HTTPConnection(base, timeout=timeout)
        for i in range(requests_per_thread):
            id = ids[(offset + i) % len(ids)]
            try:
                status, _, body = get(base, f"/turno/{id}", connection=connection)
            except OSError as error:
                failures.append(("exception", repr(error)))
                connection.close()
                connection = http.client.HTTPConnection(base, timeout=timeout)
                continue
            if status == 200:
                numbers[id].append(body["turno"])
            else:
                failures.append((status, body))
        connection.close()

    run_in_threads(worker, threads)
    return numbers, failures


class SteadyLoad:
    """Requests from `threads` threads over `ids`, each on its own keep-alive connection,
    until stop(); every answer goes to `ledger` and, with its time, to `records`
    (start, status, message) for error windows."""

    def __init__(self, base, ids, ledger, threads=6, timeout=10):
        self.base, self.ids, self.ledger, self.timeout = base, ids, ledger, timeout
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.worker, args=(n,), daemon=True) for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def worker(self, offset):
        connection = http.client.HTTPConnection(self.base, timeout=self.timeout)
        i = offset
        while not self.stopping.is_set():
            id = self.ids[i % len(self.ids)]
            i += 1
            started = time.monotonic()
            try:
                status, _, body = get(self.base, f"/turno/{id}", connection=connection)
            except (OSError, http.client.HTTPException):
                status, body = 0, None
                connection.close()
                connection = http.client.HTTPConnection(self.base, timeout=self.timeout)
            with self.lock:
                self.ledger.add({"id": id, "status": status, "body": json.dumps(body) if body else ""})
                self.records.append((started, status, (body or {}).get("message", "")))
        connection.close()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.timeout + 5)

    def answered_since(self, instant):
        with self.lock:
            return any(start > instant and status == 200 for start, status, _ in self.records)

    def error_window(self):
        """Seconds from the first failed request to the last one (0 when none failed), and how many failed."""
        failed = [start for start, status, _ in self.records if status != 200]
        return (round(max(failed) - min(failed), 2) if failed else 0.0), len(failed)

    def messages(self):
        """How often each error message was answered."""
        return Counter(message for _, status, message in self.records if status != 200)
