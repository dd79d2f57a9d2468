"""Requests that waited for a thread while their client went away take no number, and
are counted (client_gone); the queue depth is a metric, not a log flood."""

import socket
import threading
import time

from tests.support.service import get
from tests.support.statsd import counters_from, received_lines, udp_listener


def test_clients_gone_while_queued_take_no_number(start_service, redis_server, redis_client):
    """One thread, held by a request waiting on a sleeping Redis; 20 clients send a
    request behind it and hang up. When Redis wakes, only the first request counts."""
    statsd = udp_listener(0.5)
    service = start_service("--threads", "1", "--store", redis_server.url + "?socket_timeout=5",
                            "--statsd", "127.0.0.1:%d" % statsd.getsockname()[1])
    host, port = service.base.split(":")
    sleeper = threading.Thread(target=redis_server.client().execute_command, args=("DEBUG", "SLEEP", "1.5"))
    sleeper.start()
    time.sleep(0.2)
    first = []
    holder = threading.Thread(target=lambda: first.append(get(service.base, "/turno/gone")))
    holder.start()
    time.sleep(0.2)  # the one thread now waits on Redis
    for _ in range(20):
        with socket.create_connection((host, int(port))) as client:
            client.sendall(b"GET /turno/gone HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.01)
    holder.join()
    sleeper.join()
    time.sleep(0.5)  # the queued requests have been dealt with
    assert first[0][0] == 200 and first[0][2]["turno"] == 1
    assert redis_client.get("turno:gone") == "1", "requests of clients that had gone took numbers"
    assert get(service.base, "/turno/gone")[2]["turno"] == 2
    counters = counters_from(received_lines(statsd, at_least=1))
    assert counters["turnomatic.client_gone"] == 20
    statsd.close()


def test_queue_depth_is_a_gauge_and_one_log_line(start_service, redis_server):
    statsd = udp_listener(0.5)
    service = start_service("--threads", "1", "--store", redis_server.url + "?socket_timeout=5",
                            "--statsd", "127.0.0.1:%d" % statsd.getsockname()[1])
    sleeper = threading.Thread(target=redis_server.client().execute_command, args=("DEBUG", "SLEEP", "0.5"))
    sleeper.start()
    time.sleep(0.1)
    clients = [threading.Thread(target=get, args=(service.base, "/turno/queued")) for _ in range(8)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    sleeper.join()
    lines = received_lines(statsd, at_least=1)
    depths = [int(line.split(":")[1].split("|")[0]) for line in lines if line.startswith("turnomatic.queue.depth:")]
    assert max(depths) >= 5, lines
    assert service.log().count("Task queue depth is") == 1
    statsd.close()
