"""Load with checking, run on the lab's client host (Python standard library only).

Workers send GET /turno/<id> over keep-alive HTTP/1.1 connections to the
addresses the service name resolves to, spread over the DNS answers, and keep
every ticket they receive. At the end one JSON document goes to stdout: the
tickets per id, the status counts, the failures and which balancer served what.
Whether the numbers are exactly 1..n is judged by the test, not here. Like a
browser, a request whose reused keep-alive connection was closed before any byte
of an answer is sent once more on a new connection; those are counted apart.
Every request without a ticket is listed in "unanswered" as [id, status (0: no
answer), the answer's body or the error]: the test's TicketLedger decides which
of them may have taken a number (a closed keep-alive connection may have: a
balancer powered off mid-request closes it after the app counted).

The run stops at --requests, or after --max-seconds, or when stdin closes
(--until-stdin-closes), whichever comes first: the test closes stdin when the
fault or the rolling update it drives is over.

With --schedule (SECONDS:RATE,..., e.g. 60:100,300:450,120:100) the requests are
paced: each has a due time on that schedule and is sent then by a free worker, so
the offered rate follows the schedule as long as workers are free. The output then
has every request's [due time (s from the start), latency from its due time in ms
(None unless answered 200; a request sent late waited too), status or error].
"""

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from collections import Counter, defaultdict


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="turnomatic.lab", help="service name (resolved on every new connection)")
    parser.add_argument("--port", type=int, default=7017)
    parser.add_argument("--requests", type=int, default=20000, help="at most this many requests (0: no limit)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ids", type=int, default=10)
    parser.add_argument("--id-prefix", required=True, help="fresh per run, so every id starts at 1")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="per request")
    parser.add_argument("--until-stdin-closes", action="store_true")
    parser.add_argument("--schedule", type=schedule, help="SECONDS:RATE,...: paced requests (replaces --requests)")
    args = parser.parse_args()
    if args.schedule:
        args.requests = sum(round(seconds * rate) for seconds, rate in args.schedule)
        args.max_seconds = max(args.max_seconds, sum(seconds for seconds, _ in args.schedule) + 2 * args.timeout)
    return args


def schedule(text):
    """[(seconds, rate)] from "60:100,300:450"."""
    return [(float(seconds), float(rate)) for seconds, rate in (part.split(":") for part in text.split(","))]


def due_offsets(segments):
    """The due time of each request, in seconds from the start, segment after segment."""
    offsets, start = [], 0.0
    for seconds, rate in segments:
        offsets.extend(start + n / rate for n in range(round(seconds * rate)))
        start += seconds
    return offsets


class Run:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.issued = 0
        self.stop = threading.Event()
        self.tickets = defaultdict(list)
        self.statuses = Counter()
        self.failures = Counter()
        self.by_balancer = Counter()
        self.failure_times = []  # seconds into the run of every failure and non-200 answer
        self.stale_retries = 0
        self.unanswered = []  # [id, status or 0, body or error] of every request without a ticket
        self.due = due_offsets(args.schedule) if args.schedule else None
        self.answers = []  # with --schedule: (due offset, latency from due or None, status) of each request
        self.started_at = time.time()
        self.started = time.monotonic()

    def next_request(self):
        """(id, due offset or None) of the next request, or None when the run is over;
        a paced request is returned at its due time."""
        with self.lock:
            if self.stop.is_set() or (self.args.requests and self.issued >= self.args.requests):
                return None
            if time.monotonic() - self.started > self.args.max_seconds:
                return None
            number = self.issued
            self.issued += 1
        due = self.due[number] if self.due else None
        if due is not None:
            time.sleep(max(0.0, self.started + due - time.monotonic()))
        return f"{self.args.id_prefix}-{number % self.args.ids}", due

    def answered(self, due, status):
        if due is not None:
            latency = (time.monotonic() - self.started - due) * 1000
            with self.lock:
                self.answers.append((due, latency if status == 200 else None, status))

    def count_stale_retry(self, ticket_id):
        with self.lock:
            self.stale_retries += 1
            self.unanswered.append([ticket_id, 0, "keep-alive connection closed before an answer"])

    def record(self, address, status=None, ticket=None, ticket_id=None, failure=None, body=b""):
        with self.lock:
            if failure:
                self.failures[failure] += 1
                self.failure_times.append(round(time.monotonic() - self.started, 2))
                self.unanswered.append([ticket_id, 0, failure])
                return
            self.statuses[str(status)] += 1
            self.by_balancer[address] += 1
            if status != 200:
                self.failure_times.append(round(time.monotonic() - self.started, 2))
                self.unanswered.append([ticket_id, status, body[:300].decode("utf-8", "replace")])
            if ticket is not None:
                self.tickets[ticket_id].append(ticket)


def resolve(name, port):
    """The first address of the DNS answer: the name server's order spreads the load."""
    return socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def worker(run):
    args = run.args
    connection = address = None
    reused = False  # the connection has already carried a response
    retry = None
    while True:
        request = retry or run.next_request()
        retry = None
        if request is None:
            break
        ticket_id, due = request
        try:
            if connection is None:
                address = resolve(args.name, args.port)
                connection = http.client.HTTPConnection(address, args.port, timeout=args.timeout)
                reused = False
            connection.request("GET", f"/turno/{ticket_id}")
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            connection = None
            # An idle keep-alive connection the balancer closed (nginx does on a
            # reload) just as the request went out: nothing of it was read, so a
            # browser sends it again on a new connection; so do we, once. Were
            # the guess wrong, the number would be missing and the test would see it.
            if reused and isinstance(error, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
                run.count_stale_retry(ticket_id)
                retry = request
                continue
            run.record(address, ticket_id=ticket_id, failure=type(error).__name__)
            run.answered(due, type(error).__name__)
            continue
        reused = True
        if response.status == 200:
            answer = json.loads(body)
            if answer.get("id") != ticket_id:
                run.record(address, ticket_id=ticket_id, failure="wrong id in body")
                run.answered(due, "wrong id in body")
                continue
            run.record(address, status=200, ticket=answer["turno"], ticket_id=ticket_id)
        else:
            run.record(address, status=response.status, ticket_id=ticket_id, body=body)
        run.answered(due, response.status)
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def main():
    args = parse_args()
    run = Run(args)
    if args.until_stdin_closes:
        def watch_stdin():
            sys.stdin.read()
            run.stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    workers = [threading.Thread(target=worker, args=(run,)) for _ in range(args.concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - run.started
    ok = run.statuses.get("200", 0)
    json.dump(
        {
            "requests": run.issued,
            "seconds": round(elapsed, 2),
            "ok_per_second": round(ok / elapsed, 1) if elapsed else 0.0,
            "statuses": dict(run.statuses),
            "failures": dict(run.failures),
            "stale_keepalive_retries": run.stale_retries,
            "failure_times": run.failure_times,
            "unanswered": run.unanswered,
            "by_balancer": dict(run.by_balancer),
            "tickets": run.tickets,
            "started_at": run.started_at,
            "answers": [[round(due, 3), None if latency is None else round(latency, 1), status]
                        for due, latency, status in sorted(run.answers, key=lambda answer: answer[0])],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
