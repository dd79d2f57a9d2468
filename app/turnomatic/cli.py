"""`turnomatic serve`: the app on waitress, configured by options or TURNOMATIC_* variables."""

import argparse
import logging
import os
import signal
import socket
import sys

import waitress

from . import config, create_app, overload
from .store import StoreUnavailable, redacted

log = logging.getLogger("turnomatic")

# How long a thread may hold the GIL while another waits for it (Python's default:
# 5 ms). waitress reads and writes sockets in its main thread; with the default it
# waits for the worker threads running the app, and one process served 0.6-0.7 of
# the requests/s it serves with 0.5 ms (tests/bench/bench_app.py, side by side).
GIL_SWITCH_INTERVAL = 0.0005


def build_parser(environ):
    parser = argparse.ArgumentParser(prog="turnomatic", description="Ticket numbers: GET /turno/<id>.")
    try:
        defaults = config.from_environ(environ)
    except ValueError as error:
        parser.error(str(error))
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="serve the API on waitress",
        description="Serve GET /turno/<id>, /healthz and /readyz on waitress. "
        "Each option can also be set by the environment variable named in brackets.",
    )
    for setting in config.SETTINGS:
        if setting.parse is config.boolean:
            kind = {"action": argparse.BooleanOptionalAction}
        else:
            kind = {"type": argument_type(setting.parse)}
        serve_parser.add_argument(
            setting.option,
            default=defaults[setting.name],
            help=f"{setting.help} [{setting.env}, default: {setting.default!r}]",
            **kind,
        )
    return parser


def argument_type(parse):
    """argparse shows the parser's own message only for ArgumentTypeError."""

    def parse_argument(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse_argument


def main(argv=None):
    args = build_parser(os.environ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(serve(args))


def serve(args):
    settings = {setting.name.upper(): getattr(args, setting.name) for setting in config.SETTINGS}
    try:
        app = create_app(settings)
    except ValueError as error:
        log.error("cannot start: %s", error)
        return 2
    store = app.extensions["store"]
    if args.reuse_port and store.single_process:
        log.error(
            "cannot start: --reuse-port runs several processes on one port, and each would keep its own "
            "memory counters and hand out the same numbers; use a redis:// store for more than one process"
        )
        return 2
    try:
        store.check_ready()
    except StoreUnavailable as error:
        log.warning("store not ready yet, /turno answers 503 until it is: %s", error)
    try:
        listener = listen(args.host, args.port, args.reuse_port)
    except OSError as error:
        log.error("cannot listen on %s port %d: %s", args.host, args.port, error)
        return 1
    log.info("store %s, %d threads, metrics %s", redacted(args.store), args.threads, args.statsd or "off")
    server = waitress.create_server(
        app,
        sockets=[listener],
        threads=args.threads,
        connection_limit=args.connection_limit,
        channel_request_lookahead=overload.CHANNEL_REQUEST_LOOKAHEAD,
    )
    overload.install(server, app.extensions.get("metrics"))
    signal.signal(signal.SIGTERM, stop_accepting_and_finish(listener))
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    server.print_listen("Serving on http://{}:{}")
    server.run()
    log.info("stopped")
    return 0


def stop_accepting_and_finish(listener):
    """SIGTERM (systemd's stop): close the listening socket, so that new connections go to
    the other processes on the port or are refused, and leave waitress's loop. waitress
    then lets its threads finish the requests they are serving (up to 5 s; the thread
    sends the answer itself) and drops the requests not started, which used up no number.
    Killed instead, a process would cut requests whose increment already ran: gaps."""

    def on_sigterm(signum, frame):
        log.info("SIGTERM: no new connections; finishing the requests in progress")
        listener.close()
        raise SystemExit(0)

    return on_sigterm


def listen(host, port, reuse_port):
    """The listening socket, with SO_REUSEPORT when several processes share the port."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address, family=family, backlog=1024, reuse_port=reuse_port)

