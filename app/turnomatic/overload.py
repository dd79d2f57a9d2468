"""What waitress does when requests wait for a thread, made visible.

waitress reads requests in its main thread and queues them for the worker threads.
With channel_request_lookahead it keeps reading a connection whose request waits,
so it sees a client that went away; it then drops the request without calling the
app (which also checks, web.client_gone, for the moment after). The requests
dropped that way are counted in client_gone: each would otherwise have
used up a number that nobody received.

waitress also logs "Task queue depth is N" for every request that finds no idle
thread: under load a flood of lines that costs CPU. It becomes the queue.depth gauge
(the deepest in each metrics interval) and at most one log line a minute. The
dispatcher's queue logger is replaced, not filtered: a logging filter runs after the
log record is made, and making one for every queued request cost about 5 % of a
saturated process's CPU (py-spy, docs/capacity.md "Where the CPU goes").
"""

import time

from waitress.channel import HTTPChannel

# Read one request ahead of the one waiting: enough to see the end of the connection.
CHANNEL_REQUEST_LOOKAHEAD = 1
QUEUE_LOG_EVERY_SECONDS = 60.0


def install(server, metrics_buffer):
    """Count on `server` (waitress.create_server's) what the module docstring says."""
    if metrics_buffer is not None:
        server.channel_class = counting_channel(metrics_buffer)
    server.task_dispatcher.queue_logger = QueueDepth(metrics_buffer, server.task_dispatcher.queue_logger)


def counting_channel(metrics_buffer):
    class CountingChannel(HTTPChannel):
        def service(self):
            if not self.connected:
                # waitress drops the waiting request (and any read after it) unserved.
                metrics_buffer.count("client_gone", len(self.requests))
            super().service()

    return CountingChannel


class QueueDepth:
    """Stands in for the dispatcher's queue logger (waitress calls only its warning())."""

    def __init__(self, metrics_buffer, logger):
        self.metrics_buffer = metrics_buffer
        self.logger = logger
        self.last_logged = -QUEUE_LOG_EVERY_SECONDS

    def warning(self, message, depth):
        if self.metrics_buffer is not None:
            self.metrics_buffer.gauge_max("queue.depth", depth)
        now = time.monotonic()
        if now - self.last_logged < QUEUE_LOG_EVERY_SECONDS:
            return
        self.last_logged = now
        self.logger.warning(message + " (requests wait for a thread; logged once a minute at most, metric queue.depth)",
                            depth)
