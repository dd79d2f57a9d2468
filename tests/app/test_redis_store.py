"""The Redis store through the running service: the 2^53-1 limit, values near 2^63-1,
corrupt keys, the function library, and an unreachable Redis."""

import socket
import time

import pytest
import redis

from tests.support.ports import free_port
from tests.support.service import Service, get

MAX_TURNO = 2**53 - 1


@pytest.fixture(scope="module")
def redis_service(redis_server, tmp_path_factory):
    service = Service(tmp_path_factory.mktemp("redis-store") / "turnomatic.log", "--store", redis_server.url)
    yield service
    service.stop()


def test_counts_in_key_turno_id(redis_service, redis_client):
    assert get(redis_service.base, "/turno/grupo1")[2] == {"id": "grupo1", "turno": 1}
    assert get(redis_service.base, "/turno/grupo1")[2] == {"id": "grupo1", "turno": 2}
    assert redis_client.get("turno:grupo1") == "2"


def test_last_number_is_2_53_minus_1_then_409_and_counter_unchanged(redis_service, redis_client):
    redis_client.set("turno:edge", MAX_TURNO - 2)
    assert get(redis_service.base, "/turno/edge")[2]["turno"] == MAX_TURNO - 1
    assert get(redis_service.base, "/turno/edge")[2]["turno"] == MAX_TURNO
    for _ in range(3):
        status, headers, body = get(redis_service.base, "/turno/edge")
        assert status == 409
        assert headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "no-store"
        assert body == {"error": "counter_exhausted", "message": f"counter is at its maximum {MAX_TURNO}"}
        assert redis_client.get("turno:edge") == str(MAX_TURNO)


@pytest.mark.parametrize("seed", [MAX_TURNO + 1, 2**53 + 7, 2**62, 2**63 - 2, 2**63 - 1])
def test_counters_beyond_the_limit_answer_409_and_stay(redis_service, redis_client, seed):
    """2^63-1 overflows INCR inside Redis; above 2^53 Lua doubles round: both still 409."""
    redis_client.set("turno:big", seed)
    status, _, body = get(redis_service.base, "/turno/big")
    assert (status, body["error"]) == (409, "counter_exhausted")
    assert redis_client.get("turno:big") == str(seed)


@pytest.mark.parametrize(
    "seed, detail",
    [("abc", "not an integer"), ("1.5", "not an integer"), (" 7", "not an integer"),
     ("-3", "negative"), ("0x10", "not an integer")],
)
def test_corrupt_values_answer_500_logged_and_untouched(redis_service, redis_client, seed, detail):
    redis_client.set("turno:bad", seed)
    status, headers, body = get(redis_service.base, "/turno/bad")
    assert status == 500
    assert headers["Cache-Control"] == "no-store"
    assert body["error"] == "corrupt_counter"
    assert detail in body["message"]
    assert "Traceback" not in str(body)
    assert redis_client.get("turno:bad") == seed
    assert "GET '/turno/bad' -> 500 corrupt_counter" in redis_service.log()


def test_key_of_another_type_answers_500(redis_service, redis_client):
    redis_client.rpush("turno:list", "1")
    status, _, body = get(redis_service.base, "/turno/list")
    assert (status, body["error"]) == (500, "corrupt_counter")
    assert "WRONGTYPE" in body["message"]
    assert redis_client.lrange("turno:list", 0, -1) == ["1"]


def test_turno_next_without_its_maximum_refuses_and_writes_nothing(redis_server, redis_client):
    """A caller that forgets the ceiling gets an error, not a counter without a limit."""
    redis_server.load_library()
    for seed in (None, "41"):
        if seed:
            redis_client.set("turno:nomax", seed)
        with pytest.raises(redis.ResponseError, match="needs the largest number"):
            redis_client.fcall("turno_next", 1, "turno:nomax")
        assert redis_client.get("turno:nomax") == seed


def test_library_loaded_again_after_function_flush(redis_service, redis_client):
    """A Redis that lost the function library (FUNCTION FLUSH, a new empty Redis): FCALL
    answers that the function is unknown (nothing ran); the app, whose user may load it
    here (the default user), loads it and runs the increment once."""
    get(redis_service.base, "/turno/flush")
    redis_client.function_flush()
    assert get(redis_service.base, "/turno/flush")[2]["turno"] == 2
    assert redis_client.get("turno:flush") == "2"


def test_unreachable_redis_answers_503_quickly(start_service):
    service = start_service("--store", f"redis://127.0.0.1:{free_port()}/0")
    assert "store not ready yet" in service.log()
    started = time.monotonic()
    status, _, body = get(service.base, "/turno/down")
    assert time.monotonic() - started < 2
    assert (status, body["error"]) == (503, "store_unavailable")
    assert "Traceback" not in service.log()
    status, _, body = get(service.base, "/readyz")
    assert (status, body["error"]) == (503, "store_unavailable")
    assert get(service.base, "/healthz")[0] == 200


def test_redis_that_does_not_answer_gives_503_within_the_timeout(start_service):
    """A listener that never answers (like a host that went away): bounded by socket_timeout."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        url = "redis://127.0.0.1:%d/0?socket_timeout=0.5&socket_connect_timeout=0.5" % silent.getsockname()[1]
        service = start_service("--store", url)
        started = time.monotonic()
        status, _, body = get(service.base, "/turno/silent")
        elapsed = time.monotonic() - started
        assert (status, body["error"]) == (503, "store_unavailable")
        assert 0.4 < elapsed < 3
        # The connection's handshake already went unanswered: the increment was never sent.
        assert body["message"] == "could not connect to the store in time; no increment was sent"
    finally:
        silent.close()
