"""StatsD metrics over UDP: requests.<status>, tickets and store.errors (counters),
latency (timer, ms, from the start of the app's work to its response headers).

A request only adds its figures to memory; a background thread sends them every
FLUSH_SECONDS, many per UDP packet. A send per request would cost a system call and
a GIL hand-over each time, more than the rest of the metrics work. The statsd client
swallows socket errors and UDP does not wait for the receiver, so metrics never
block or fail a request. Figures of the last interval are lost when the process stops.
"""

import threading
import time
from collections import Counter

import statsd
from flask import current_app

from .config import split_host_port

FLUSH_SECONDS = 1.0


class MetricsBuffer:
    def __init__(self, client):
        self.client = client
        self.lock = threading.Lock()
        self.counts = Counter()
        self.latencies = []
        threading.Thread(target=self.flush_forever, name="statsd-flush", daemon=True).start()

    def add_request(self, status, latency_ms):
        with self.lock:
            self.counts["requests." + status] += 1
            self.latencies.append(latency_ms)

    def count(self, name):
        with self.lock:
            self.counts[name] += 1

    def flush_forever(self):
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self):
        with self.lock:
            counts, self.counts = self.counts, Counter()
            latencies, self.latencies = self.latencies, []
        pipeline = self.client.pipeline()  # splits into packets of at most 512 bytes
        for name, count in counts.items():
            pipeline.incr(name, count)
        for latency_ms in latencies:
            pipeline.timing("latency", latency_ms)
        pipeline.send()


def init_app(app):
    """Send metrics to app.config['STATSD'] (host:port); nothing when it is empty."""
    if not app.config["STATSD"]:
        return
    host, port = split_host_port(app.config["STATSD"])
    client = statsd.StatsClient(host, port, prefix=app.config["STATSD_PREFIX"])
    app.extensions["metrics"] = MetricsBuffer(client)
    app.wsgi_app = RequestMetrics(app.wsgi_app, app.extensions["metrics"])


def count(name):
    """Count one event: tickets, store.errors."""
    if "metrics" in current_app.extensions:
        current_app.extensions["metrics"].count(name)


class RequestMetrics:
    """WSGI middleware (Flask's documented way to wrap app.wsgi_app): the status and
    latency of every request, errors and unknown paths included, at the cost of one call."""

    def __init__(self, wsgi_app, buffer):
        self.wsgi_app = wsgi_app
        self.buffer = buffer

    def __call__(self, environ, start_response):
        started = time.perf_counter()

        def record_and_start_response(status, headers, exc_info=None):
            self.buffer.add_request(status[:3], (time.perf_counter() - started) * 1000)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, record_and_start_response)
