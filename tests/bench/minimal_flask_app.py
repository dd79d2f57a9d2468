"""The benchmark's second baseline: the least a Flask app can do for the same work (one
route, the same Redis script, no validation, errors or metrics). turnomatic against it
shows what turnomatic's own code costs; it against the bare callable, Flask's floor."""

import json
import logging
import os
import sys

import redis
from flask import Flask, Response
from redis.backoff import NoBackoff
from redis.retry import Retry

from turnomatic.store import LIBRARY_CODE, MAX_TURNO

logging.getLogger("waitress.queue").setLevel(logging.ERROR)

client = redis.Redis.from_url(
    os.environ["BENCH_REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
)
client.function_load(LIBRARY_CODE, replace=True)
sys.setswitchinterval(float(os.environ["BENCH_GIL_SWITCH_INTERVAL"]))  # as turnomatic's
app = Flask(__name__)


@app.get("/turno/<id>")
def turno(id):
    number = client.fcall("turno_next", 1, "turno:" + id, MAX_TURNO)
    return Response(json.dumps({"id": id, "turno": number}), content_type="application/json")
