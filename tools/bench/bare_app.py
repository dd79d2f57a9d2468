"""The baseline for the benchmark: bare WSGI callables on waitress doing the same
Redis work as turnomatic, with no framework. Not part of the service.

/turno/<id>: the same increment turnomatic runs (FCALL turno_next, turnomatic.store.LIBRARY_CODE).
BENCH_GIL_SWITCH_INTERVAL, when set, is the interpreter's GIL switch interval (seconds).
"""

import json
import os
import sys

from bench_store import increment

if "BENCH_GIL_SWITCH_INTERVAL" in os.environ:
    sys.setswitchinterval(float(os.environ["BENCH_GIL_SWITCH_INTERVAL"]))


def application(environ, start_response):
    id = environ["PATH_INFO"].removeprefix("/turno/")
    number = increment(id)
    body = json.dumps({"id": id, "turno": number}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
