"""Under concurrency, through waitress over real HTTP, per id exactly 1..n: no duplicate, no gap."""

import os
import subprocess
import sys

from app_helpers import free_port, hammer

THREADS = 32
REQUESTS_PER_THREAD = 500
IDS = ["cola", "caja", "mesa-1", "x.y_z"]


def assert_exactly_one_to_n(numbers):
    for id, handed_out in numbers.items():
        assert sorted(handed_out) == list(range(1, len(handed_out) + 1)), f"duplicate or gap for {id}"


def test_memory_store_under_32_threads(start_service):
    service = start_service("--threads", "8")
    numbers, failures = hammer(service.base, IDS, THREADS, REQUESTS_PER_THREAD)
    assert failures == []
    assert sum(map(len, numbers.values())) == THREADS * REQUESTS_PER_THREAD
    assert_exactly_one_to_n(numbers)


def test_redis_store_under_32_threads(start_service, redis_server, redis_client):
    service = start_service("--threads", "8", "--store", redis_server.url)
    numbers, failures = hammer(service.base, IDS, THREADS, REQUESTS_PER_THREAD)
    assert failures == []
    assert sum(map(len, numbers.values())) == THREADS * REQUESTS_PER_THREAD
    assert_exactly_one_to_n(numbers)
    assert {id: int(redis_client.get(f"turno:{id}")) for id in IDS} == {id: len(n) for id, n in numbers.items()}


def test_two_processes_sharing_the_port_with_redis(start_service, redis_server, redis_client):
    """--reuse-port: two processes on one port (as systemd runs one per core) share one count."""
    port = free_port()
    first = start_service("--reuse-port", "--store", redis_server.url, port=port)
    second = start_service("--reuse-port", "--store", redis_server.url, port=port)
    cpu_before = [cpu_seconds(first), cpu_seconds(second)]
    numbers, failures = hammer(first.base, IDS, 16, 250)
    assert failures == []
    assert_exactly_one_to_n(numbers)
    # The kernel spread the 16 connections over both processes: both worked.
    busy = [after - before for after, before in zip([cpu_seconds(first), cpu_seconds(second)], cpu_before)]
    assert min(busy) > 0.1, f"CPU seconds per process during the run: {busy}"


def cpu_seconds(service):
    fields = open(f"/proc/{service.process.pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_memory_store_refuses_reuse_port():
    result = subprocess.run(
        [sys.executable, "-m", "turnomatic", "serve", "--reuse-port", "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "--reuse-port runs several processes on one port" in result.stderr
    assert "use a redis:// store" in result.stderr
