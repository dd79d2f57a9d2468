"""Under concurrency, through waitress over real HTTP, per id exactly 1..n: no duplicate, no gap."""

import subprocess
import sys

from tests.support.ports import free_port
from tests.support.processes import cpu_seconds
from tests.support.service import hammer
from tests.support.tickets import TicketLedger

THREADS = 32
REQUESTS_PER_THREAD = 500
IDS = ["cola", "caja", "mesa-1", "x.y_z"]


def assert_exactly_one_to_n(numbers):
    ledger = TicketLedger()
    for id, handed_out in numbers.items():
        ledger.add_numbers(id, handed_out)
    assert ledger.exactly_one_to_n(), ledger.violations()


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
    cpu_before = [cpu_seconds(first.process.pid), cpu_seconds(second.process.pid)]
    numbers, failures = hammer(first.base, IDS, 16, 250)
    assert failures == []
    assert_exactly_one_to_n(numbers)
    # The kernel spread the 16 connections over both processes: both worked.
    busy = [after - before for after, before in zip([cpu_seconds(first.process.pid), cpu_seconds(second.process.pid)], cpu_before)]
    assert min(busy) > 0.1, f"CPU seconds per process during the run: {busy}"


def test_memory_store_refuses_reuse_port():
    result = subprocess.run(
        [sys.executable, "-m", "turnomatic", "serve", "--reuse-port", "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "--reuse-port runs several processes on one port" in result.stderr
    assert "use a redis:// store" in result.stderr
