"""Fixtures for the service tests: a real redis-server and real turnomatic processes."""

import pytest

from tests.support.service import RedisServer, Service


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on a Redis whose data was flushed, for tests that read and seed keys."""
    if not redis_server.answers():
        redis_server.start()  # a fault test left it down
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def start_service(tmp_path):
    """Start turnomatic with the given options; stopped at the end of the test."""
    services = []

    def start(*options, env=None, port=None):
        service = Service(tmp_path / f"turnomatic-{len(services)}.log", *options, env=env, port=port)
        services.append(service)
        return service

    yield start
    for service in services:
        service.stop()


@pytest.fixture(scope="module")
def memory_service(tmp_path_factory):
    """One turnomatic on the memory store, shared by a module's tests (use distinct ids)."""
    service = Service(tmp_path_factory.mktemp("memory") / "turnomatic.log")
    yield service
    service.stop()
