"""StatsD metrics over UDP: requests.<status>, tickets, store.errors, store.maybe_ran,
client_gone and metrics.dropped (counters), queue.depth (gauge: the deepest
waitress's task queue was in the interval), latency (timer, ms, from the start of the
app's work to its response headers).

A request only adds its figures to memory; a background thread sends them every
FLUSH_SECONDS, many per UDP packet. A send per request would cost a system call and
a GIL hand-over each time, more than the rest of the metrics work. UDP does not wait
for the receiver, so metrics never block or fail a request. The flusher survives any
error (logged, at most once a minute) and the buffer is bounded: past
MAX_LATENCY_SAMPLES per interval latencies are dropped and counted. Figures of the last
interval are lost when the process stops.
"""

import logging
import threading
import time
from collections import Counter

import statsd
from flask import current_app, has_app_context

from .config import split_host_port

FLUSH_SECONDS = 1.0
# About ten seconds of one process's peak (2,500 requests/s) fits; more means the
# flusher is stuck, and memory must not grow with it.
MAX_LATENCY_SAMPLES = 25_000
LOG_EVERY_SECONDS = 60.0

log = logging.getLogger(__name__)


class MetricsBuffer:
    def __init__(self, host, port, prefix):
        self.address = (host, port)
        self.prefix = prefix
        self.client = None  # made by the flusher: a name that does not resolve yet must not stop the service
        self.lock = threading.Lock()
        self.counts = Counter()
        self.gauges = {}
        self.latencies = []
        self.last_logged = -LOG_EVERY_SECONDS
        threading.Thread(target=self.flush_forever, name="statsd-flush", daemon=True).start()

    def add_request(self, status, latency_ms):
        with self.lock:
            self.counts["requests." + status] += 1
            if len(self.latencies) < MAX_LATENCY_SAMPLES:
                self.latencies.append(latency_ms)
            else:
                self.counts["metrics.dropped"] += 1

    def count(self, name, n=1):
        with self.lock:
            self.counts[name] += n

    def gauge_max(self, name, value):
        with self.lock:
            self.gauges[name] = max(value, self.gauges.get(name, 0))

    def flush_forever(self):
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:
                now = time.monotonic()
                if now - self.last_logged >= LOG_EVERY_SECONDS:
                    self.last_logged = now
                    log.exception("metrics not sent to %s:%d (logged once a minute at most)", *self.address)

    def flush(self):
        with self.lock:
            counts, self.counts = self.counts, Counter()
            latencies, self.latencies = self.latencies, []
            gauges, self.gauges = self.gauges, {}
        if self.client is None:
            host, port = self.address
            self.client = statsd.StatsClient(host, port, prefix=self.prefix, ipv6=":" in host)
        pipeline = self.client.pipeline()  # splits into packets of at most 512 bytes
        for name, count in counts.items():
            pipeline.incr(name, count)
        pipeline.gauge("queue.depth", gauges.get("queue.depth", 0))
        for latency_ms in latencies:
            pipeline.timing("latency", latency_ms)
        pipeline.send()


def init_app(app):
    """Send metrics to app.config['STATSD'] (host:port, [v6-address]:port); nothing when empty."""
    if not app.config["STATSD"]:
        return
    host, port = split_host_port(app.config["STATSD"])
    app.extensions["metrics"] = MetricsBuffer(host, port, app.config["STATSD_PREFIX"])
    app.wsgi_app = RequestMetrics(app.wsgi_app, app.extensions["metrics"])


def count(name):
    """Count one event: tickets, store.errors... Outside an app (the store used by a
    tool) there is nothing to count into."""
    if has_app_context() and "metrics" in current_app.extensions:
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
