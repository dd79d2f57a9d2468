"""What waitress does when requests wait for a thread, made visible.

waitress reads requests in its main thread and queues them for the worker threads.
With channel_request_lookahead it keeps reading a connection whose request waits,
so it sees a client that went away; it then drops the request without calling the
app (which also checks, web.client_gone, for the moment after). The requests
dropped that way are counted in client_gone: each would otherwise have
used up a number that nobody received.

waitress also logs "Task queue depth is N" for every request that finds no idle
thread: under load a flood of lines that costs CPU. It becomes the queue.depth gauge
(the deepest in each metrics interval) and at most one log line a minute.
"""

import logging
import time

from waitress.channel import HTTPChannel

# Read one request ahead of the one waiting: enough to see the end of the connection.
CHANNEL_REQUEST_LOOKAHEAD = 1
QUEUE_LOG_EVERY_SECONDS = 60.0


def install(server, metrics_buffer):
    """Count on `server` (waitress.create_server's) what the module docstring says."""
    if metrics_buffer is not None:
        server.channel_class = counting_channel(metrics_buffer)
    logging.getLogger("waitress.queue").addFilter(QueueDepth(metrics_buffer))


def counting_channel(metrics_buffer):
    class CountingChannel(HTTPChannel):
        def service(self):
            if not self.connected:
                # waitress drops the waiting request (and any read after it) unserved.
                metrics_buffer.count("client_gone", len(self.requests))
            super().service()

    return CountingChannel


class QueueDepth(logging.Filter):
    def __init__(self, metrics_buffer):
        super().__init__()
        self.metrics_buffer = metrics_buffer
        self.last_logged = -QUEUE_LOG_EVERY_SECONDS

    def filter(self, record):
        if self.metrics_buffer is not None and record.args:
            self.metrics_buffer.gauge_max("queue.depth", record.args[0])
        now = time.monotonic()
        if now - self.last_logged < QUEUE_LOG_EVERY_SECONDS:
            return False
        self.last_logged = now
        record.msg += " (requests wait for a thread; logged once a minute at most, metric queue.depth)"
        return True
