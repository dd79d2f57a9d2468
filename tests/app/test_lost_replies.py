"""Which 503 may have cost a number: a reply lost after the increment was written, and
failures before it was written.

A TCP proxy on loopback between the service and a real redis-server forwards the
increment (FCALL turno_next) to Redis and then, for every third one, closes or resets
the service's connection instead of forwarding Redis's reply: the increment ran, the
answer was lost. The service must say "the increment may have run" and count
store.maybe_ran; the counter then advanced exactly as many times as answers said 200
or may-have-run. A connection refused or that cannot be made in time sent nothing.
"""

import select
import socket
import struct
import threading
import time

import pytest

from tests.support.ports import free_port
from tests.support.service import get
from tests.support.statsd import counters_from, received_lines, udp_listener
from tests.support.waiting import wait_for


# How FCALL turno_next starts on the wire (RESP).
INCREMENT = b"$5\r\nFCALL\r\n$10\r\nturno_next\r\n"


class ReplyDroppingProxy:
    """Forwards 127.0.0.1:port to Redis; drops the reply of every `every`-th FCALL
    turno_next and closes (FIN) or resets (RST) the client's connection instead."""

    def __init__(self, redis_port, every, how):
        self.redis_port = redis_port
        self.every = every
        self.how = how
        self.increments = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.forward, args=(client,), daemon=True).start()

    def forward(self, client):
        """Both directions in one thread, so that closing the client's socket really
        closes it (a recv blocked in another thread would keep it open)."""
        server = socket.create_connection(("127.0.0.1", self.redis_port))
        drop_next_reply = False
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [])
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    if INCREMENT in data:
                        with self.lock:
                            self.increments += 1
                            drop_next_reply = self.increments % self.every == 0
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    if drop_next_reply:
                        with self.lock:
                            self.dropped += 1
                        if self.how == "reset":
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        return
                    client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def close(self):
        self.closing = True
        self.listener.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_lost_replies_say_the_increment_may_have_run(start_service, redis_server, redis_client, how):
    statsd = udp_listener(0.5)
    proxy = ReplyDroppingProxy(redis_server.port, every=3, how=how)
    try:
        service = start_service("--threads", "4", "--store", f"redis://127.0.0.1:{proxy.port}/0",
                                "--statsd", "127.0.0.1:%d" % statsd.getsockname()[1])
        answers = []
        lock = threading.Lock()

        def client(_):
            for _ in range(15):
                answer = get(service.base, "/turno/lost")
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        proxy.close()

    numbers = [body["turno"] for status, _, body in answers if status == 200]
    maybe_ran = [body for status, _, body in answers
                 if status == 503 and body["message"].endswith("the increment may have run")]
    others = [(status, body) for status, _, body in answers if status != 200 and body not in maybe_ran]
    print(f"\n{how}: {len(numbers)} × 200, {len(maybe_ran)} × 503 may have run, {len(others)} other; "
          f"proxy dropped {proxy.dropped} replies of {proxy.increments} increments")
    # Failures to connect anew after a drop are possible and sent nothing.
    assert all(status == 503 and body["message"].endswith("no increment was sent") for status, body in others)
    assert len(numbers) == len(set(numbers))
    assert maybe_ran and proxy.dropped == len(maybe_ran)
    assert all("127.0.0.1" not in body["message"] for body in maybe_ran)
    # Exactly: each increment that ran answered 200 or said it may have run.
    assert int(redis_client.get("turno:lost")) == len(numbers) + len(maybe_ran)
    counters = counters_from(received_lines(statsd, at_least=1))
    assert counters["turnomatic.store.maybe_ran"] == len(maybe_ran)
    statsd.close()


def test_connect_timeout_says_no_increment_was_sent(start_service):
    """A Redis whose accept queue is full (SYNs dropped): the connection cannot be made,
    nothing was sent."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    held = socket.create_connection(listener.getsockname())  # fills the queue of one
    try:
        url = "redis://127.0.0.1:%d/0?socket_connect_timeout=0.3" % listener.getsockname()[1]
        service = start_service("--store", url)
        status, _, body = get(service.base, "/turno/noconnect")
        assert (status, body["error"]) == (503, "store_unavailable")
        assert body["message"] == "could not connect to the store in time; no increment was sent"
        assert "127.0.0.1" not in body["message"]
        wait_for(lambda: "127.0.0.1" in service.log().split("-> 503 store_unavailable")[-1], 5,
                 "the address in the log line")
    finally:
        held.close()
        listener.close()


def test_refused_connection_says_no_increment_was_sent_and_hides_the_address(start_service):
    port = free_port()
    service = start_service("--store", f"redis://127.0.0.1:{port}/0")
    status, headers, body = get(service.base, "/turno/refused2")
    assert (status, body["error"]) == (503, "store_unavailable")
    assert body["message"] == "could not connect to the store; no increment was sent"
    assert str(port) not in str(body) and headers["Cache-Control"] == "no-store"
    log_line = [line for line in service.log().splitlines() if "/turno/refused2" in line][0]
    assert f"127.0.0.1:{port}" in log_line and "Connection refused" in log_line
    started = time.monotonic()
    status, _, body = get(service.base, "/readyz")
    assert status == 503 and str(port) not in str(body) and time.monotonic() - started < 2
