"""A real redis-server, real turnomatic processes, and HTTP against them."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import redis

from turnomatic.store import LIBRARY_CODE

from tests.support.ports import free_port
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

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def load_library(self):
        """What the redis role does with its admin user: load the app's function library."""
        self.client().function_load(LIBRARY_CODE, replace=True)


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
