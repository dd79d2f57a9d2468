"""The benchmark's second baseline: the least a Flask app can do for the same work (one
route, the same Redis script, no validation, errors or metrics). turnomatic against it
shows what turnomatic's own code costs; it against the bare callable, Flask's floor."""

import json
import os
import sys

from bench_store import increment
from flask import Flask, Response

sys.setswitchinterval(float(os.environ["BENCH_GIL_SWITCH_INTERVAL"]))  # as turnomatic's
app = Flask(__name__)


@app.get("/turno/<id>")
def turno(id):
    number = increment(id)
    return Response(json.dumps({"id": id, "turno": number}), content_type="application/json")
