"""The baseline for the benchmark: bare WSGI callables on waitress doing the same
Redis work as turnomatic, with no framework. Not part of the service.

/turno/<id>: the same scripted increment turnomatic runs (turnomatic.store.INCREMENT_SCRIPT).
/incr/<id>: a plain INCR, to show what the script costs.
"""

import json
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
increment = client.register_script(INCREMENT_SCRIPT)


def application(environ, start_response):
    _, kind, id = environ["PATH_INFO"].split("/", 2)
    if kind == "turno":
        number = increment(keys=["turno:" + id], args=[MAX_TURNO])
    else:
        number = client.incr("turno:" + id)
    body = json.dumps({"id": id, "turno": number}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
