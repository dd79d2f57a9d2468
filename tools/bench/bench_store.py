"""The Redis work of the benchmark's baselines (bare_app.py, minimal_flask_app.py): the
increment turnomatic runs (the function turno_next of turnomatic.lua, with FCALL), on a client set
up as turnomatic's (1 s timeouts, no retry), on the Redis at BENCH_REDIS_URL. Imported by
bare name: waitress loads the baselines from this directory."""

import logging
import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from turnomatic.store import LIBRARY_CODE, MAX_TURNO

# No "Task queue depth" warning per request under load (turnomatic turns it into a
# metric and at most one line a minute).
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

client = redis.Redis.from_url(
    os.environ["BENCH_REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
)
client.function_load(LIBRARY_CODE, replace=True)


def increment(id):
    """The id's counter after adding one, as turnomatic's store computes it."""
    return client.fcall("turno_next", 1, "turno:" + id, MAX_TURNO)
