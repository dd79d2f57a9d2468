"""The baseline for the benchmark: bare WSGI callables on waitress doing the same
Redis work as turnomatic, with no framework. Not part of the service.

/turno/<id>: the same increment turnomatic runs (FCALL turno_next, turnomatic.store.LIBRARY_CODE).
BENCH_GIL_SWITCH_INTERVAL, when set, is the interpreter's GIL switch interval (seconds).
"""

import json
import logging
import os
import sys

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from turnomatic.store import LIBRARY_CODE, MAX_TURNO

# No "Task queue depth" warning per request under load (turnomatic turns it into a metric
# and at most one line a minute).
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

client = redis.Redis.from_url(
    os.environ["BENCH_REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
)
client.function_load(LIBRARY_CODE, replace=True)
if "BENCH_GIL_SWITCH_INTERVAL" in os.environ:
    sys.setswitchinterval(float(os.environ["BENCH_GIL_SWITCH_INTERVAL"]))


def application(environ, start_response):
    id = environ["PATH_INFO"].removeprefix("/turno/")
    number = client.fcall("turno_next", 1, "turno:" + id, MAX_TURNO)
    body = json.dumps({"id": id, "turno": number}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
