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

# How long a thread may hold the GIL while another waits for it: Python's default,
# 5 ms, set here so that it is a decision (and the benchmarks' "same interval"
# baselines read it). With the 16 threads the role runs, every thread that wants
# the GIL wakes and asks for it each interval: at 0.5 ms (this setting until
# December 2026) a loaded process made over 100 futex calls per request and spent
# 1.16x (1/0.86) the CPU per request it spends at 5 ms, and served fewer requests/s
# (make bench-change; 10 and 20 ms gained nothing more; docs/capacity.md "Per core").
GIL_SWITCH_INTERVAL = 0.005


class BadVariable:
    """The default of an option whose TURNOMATIC_* variable does not parse: refused after
    parsing, only when the command line does not set the option, so that `--help` and
    `--port 7017` still work with a bad TURNOMATIC_PORT in the environment."""

    def __init__(self, message):
        self.message = message


def build_parser(environ):
    parser = argparse.ArgumentParser(prog="turnomatic", description="Ticket numbers: GET /turno/<id>.")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="serve")
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
        try:
            default = setting.from_environ(environ)
        except ValueError as error:
            default = BadVariable(str(error))
        serve_parser.add_argument(
            setting.option,
            default=default,
            help=f"{setting.help} [{setting.env}, default: {setting.default!r}]",
            **kind,
        )
    return parser


def parse_args(argv, environ):
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("a command is required: serve (see turnomatic serve --help)")
    for value in vars(args).values():
        if isinstance(value, BadVariable):
            parser.error(value.message)
    return args


def argument_type(parse):
    """argparse shows the parser's own message only for ArgumentTypeError."""

    def parse_argument(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse_argument


def main(argv=None):
    args = parse_args(argv, os.environ)
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
    # On stderr with the other log lines, unbuffered: what `make run` and a newcomer wait for.
    host, port = listener.getsockname()[:2]
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    log.info("serving on %s (try: curl %s/turno/grupo1)", base, base)
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

