"""StatsD metrics over UDP: requests.<status>, latency (ms), tickets, store.errors.

The statsd client swallows socket errors and UDP does not wait for the receiver,
so metrics never block or fail a request. Each request sends one packet.
"""

import time

import statsd
from flask import current_app, g

from .config import split_host_port


def init_app(app):
    """Send metrics to app.config['STATSD'] (host:port); nothing when it is empty."""
    if not app.config["STATSD"]:
        return
    host, port = split_host_port(app.config["STATSD"])
    app.extensions["statsd"] = statsd.StatsClient(host, port, prefix=app.config["STATSD_PREFIX"])
    app.before_request(start_timer)
    app.after_request(send_request_metrics)


def count(name):
    """Count one event (tickets, store.errors) with this request's metrics."""
    if "statsd" in current_app.extensions:
        g.metric_events.append(name)


def start_timer():
    g.started = time.perf_counter()
    g.metric_events = []


def send_request_metrics(response):
    pipeline = current_app.extensions["statsd"].pipeline()
    pipeline.incr(f"requests.{response.status_code}")
    pipeline.timing("latency", (time.perf_counter() - g.started) * 1000)
    for name in g.metric_events:
        pipeline.incr(name)
    pipeline.send()
    return response
