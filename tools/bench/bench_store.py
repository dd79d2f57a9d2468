"""The Redis work of the benchmark's baselines (bare_app.py, minimal_flask_app.py): the
scripted increment turnomatic runs (turnomatic.store.INCREMENT_SCRIPT), on a client set
up as turnomatic's (1 s timeouts, no retry), on the Redis at BENCH_REDIS_URL. Imported by
bare name: waitress loads the baselines from this directory."""

import logging
import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from turnomatic.store import INCREMENT_SCRIPT, MAX_TURNO

# As turnomatic does: no "Task queue depth" warning per request under load.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

client = redis.Redis.from_url(
    os.environ["BENCH_REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
)
script = client.register_script(INCREMENT_SCRIPT)


def increment(id):
    """The id's counter after adding one, as turnomatic's store computes it."""
    return script(keys=["turno:" + id], args=[MAX_TURNO])
