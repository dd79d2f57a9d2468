"""Steady load through the service name, run on the lab's client host (Python
standard library only), recording every request: the edge failover test
(tests/edge) and the game days (tools/gameday) run it.

Two kinds of client, as users have them:
- --threads workers that resolve the name for every request and open a new
  connection each time, as urllib does (getaddrinfo, then each address in the
  order of the answer until one connects, as socket.create_connection does);
- --keepalive workers that keep one HTTP/1.1 connection and open a new one
  (resolving again) only after an error.

Every request is recorded: [worker, start, end, outcome, address, id index,
number], times in seconds after the run's `t0` (wall clock, shared with the
control machine: the lab's VMs are containers on its kernel). Outcomes:
"ok"; "closed" (a reused keep-alive connection the server closed before any
byte of an answer: sent again on a new one, not a failure, but the first may have
run: a balancer powered off mid-request closes this way too); "resolve" (the
name did not resolve); "connect" (no address accepted a
connection: nothing was sent); "sent" (an error after the request was written:
the increment may have run); "status-N" (an answer other than 200).

With --rate, all workers together start at most that many requests a second
(each keeps its own share); without it they send as fast as they are answered.

The run stops when stdin closes or after --max-seconds; then one JSON document
goes to stdout.
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="turnomatic.lab")
    parser.add_argument("--port", type=int, default=7017)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--keepalive", type=int, default=1)
    parser.add_argument("--ids", type=int, default=4)
    parser.add_argument("--id-prefix", required=True, help="fresh per run, so every id starts at 1")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=0, help="requests/s of all workers together; 0: unpaced")
    # Bounds a request that nothing ends (no reset, no answer); far above any
    # failover, so it only shows up as a latency if it happens.
    parser.add_argument("--timeout", type=float, default=30.0)
    return parser.parse_args()


class Run:
    def __init__(self, args):
        self.args = args
        self.t0 = time.time()
        self.stop = threading.Event()
        self.records = []
        self.lock = threading.Lock()

    def now(self):
        return round(time.time() - self.t0, 4)

    def record(self, worker, start, outcome, address, id_index, number=None):
        with self.lock:
            self.records.append([worker, start, self.now(), outcome, address, id_index, number])

    def path(self, id_index):
        return f"/turno/{self.args.id_prefix}-{id_index}"

    def connect(self):
        """(socket, address) or raises: ("resolve" | "connect", error)."""
        try:
            answers = socket.getaddrinfo(self.args.name, self.args.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise Failure("resolve", error) from None
        last = None
        for family, kind, proto, _, sockaddr in answers:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.args.timeout)
            try:
                sock.connect(sockaddr)
                return sock, sockaddr[0]
            except OSError as error:
                last = error
                sock.close()
        raise Failure("connect", last)

    def exchange(self, connection, id_index):
        connection.request("GET", self.path(id_index))
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return f"status-{response.status}", None
        return "ok", json.loads(body)["turno"]

    def pacer(self):
        """A wait before each of a worker's requests: with --rate, each worker keeps its
        share of it; a late request is not made up for (a slow answer lowers the rate,
        as for real clients). Returns False once the run stops."""
        interval = (self.args.threads + self.args.keepalive) / self.args.rate if self.args.rate else 0
        due = time.monotonic() + random.uniform(0, interval) - interval

        def wait():
            nonlocal due
            due = max(due + interval, time.monotonic())
            return not self.stop.wait(max(0.0, due - time.monotonic()))
        return wait

    def per_request_worker(self, worker):
        wait = self.pacer()
        while wait():
            id_index = random.randrange(self.args.ids)
            start = self.now()
            try:
                sock, address = self.connect()
            except Failure as failure:
                self.record(worker, start, failure.outcome, None, id_index)
                continue
            connection = http.client.HTTPConnection(self.args.name, self.args.port, timeout=self.args.timeout)
            connection.sock = sock
            try:
                outcome, number = self.exchange(connection, id_index)
            except (OSError, http.client.HTTPException, ValueError):
                outcome, number = "sent", None
            finally:
                connection.close()
            self.record(worker, start, outcome, address, id_index, number)

    def keepalive_worker(self, worker):
        connection = address = None
        served = 0
        wait = self.pacer()
        while wait():
            id_index = random.randrange(self.args.ids)
            start = self.now()
            if connection is None:
                try:
                    sock, address = self.connect()
                except Failure as failure:
                    self.record(worker, start, failure.outcome, None, id_index)
                    time.sleep(0.05)
                    continue
                connection = http.client.HTTPConnection(self.args.name, self.args.port, timeout=self.args.timeout)
                connection.sock = sock
            reused = connection.sock is not None and served > 0
            try:
                outcome, number = self.exchange(connection, id_index)
                served += 1
            except http.client.RemoteDisconnected:
                # Closed cleanly before any byte of an answer: on a reused
                # connection, the server ending an idle or long-used keep-alive
                # connection (nginx's keepalive_requests) as the request was
                # written. Sent once more on a new connection, as browsers do.
                outcome, number = ("closed" if reused else "sent"), None
                connection.close()
                connection, served = None, 0
            except (OSError, http.client.HTTPException, ValueError):
                outcome, number = "sent", None
                connection.close()
                connection, served = None, 0
            self.record(worker, start, outcome, address, id_index, number)


class Failure(Exception):
    def __init__(self, outcome, error):
        super().__init__(f"{outcome}: {error!r}")
        self.outcome = outcome


def main():
    args = parse_args()
    run = Run(args)
    workers = [threading.Thread(target=run.per_request_worker, args=(n,), daemon=True) for n in range(args.threads)]
    workers += [threading.Thread(target=run.keepalive_worker, args=(args.threads + n,), daemon=True)
                for n in range(args.keepalive)]
    for worker in workers:
        worker.start()
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    stdin_closed.wait(args.max_seconds)
    run.stop.set()
    for worker in workers:
        worker.join(args.timeout + 5)
    with run.lock:
        json.dump({"t0": run.t0, "threads": args.threads, "keepalive": args.keepalive,
                   "records": run.records}, sys.stdout)


if __name__ == "__main__":
    main()
