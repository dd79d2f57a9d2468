"""Benchmark: what tracing costs turnomatic, in one run, side by side.

Five servers on the same redis-server, metrics on, alike but for tracing: off (no
OTEL_EXPORTER_OTLP_ENDPOINT), on at the default sampling (the app's
parentbased_traceidratio, 1 %), on at 100 % (always_on), on at 0 % (every request
unsampled: what tracing costs a request that is not traced, apart from the traced
ones), and off again. Each server is three alike `turnomatic serve` processes
(--processes): two processes of the same code can differ by a few percent for as long
as they live, as much as the cost measured. The traced ones export over OTLP/HTTP to a
sink in this process that reads each export and answers 200 (a collector or Honeycomb
would be elsewhere; the sink's work is not the app's). wrk runs against each process
in turn, in alternating rounds; a server's figure in a round is the mean of its
processes'.

Target: the default sampling costs at most 5 % of the requests/s of tracing off (exit
status 1 when not met); the 100 % figure is reported. Also CPU per request of each
process (from /proc), steadier than req/s on a shared machine. The second untraced
server ("off, again") measures the noise: what two identical servers differ by in the
same rounds. A cost within that spread is reported as inside the noise.

    make bench-tracing        # or: .venv/bin/python -m tools.bench.bench_tracing [--rounds N --seconds S]
"""

import os
import statistics
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tools.bench.rounds import parse_args, redis_and_servers, run_rounds, start_alike, statsd_sink, turnomatic_server
from turnomatic.tracing import DEFAULT_SAMPLE_RATIO

TARGET_COST = 0.05


class DiscardingSink(BaseHTTPRequestHandler):
    """OTLP/HTTP: reads the export, answers 200 with an empty ExportTraceServiceResponse."""

    protocol_version = "HTTP/1.1"
    exports = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        DiscardingSink.exports += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def main():
    # One waitress thread by default: on this 2-vCPU VM each hand-over between threads
    # (the GIL, waitress's task queue) costs more when the other vCPU is idle than when
    # it is busy, so with 4 threads the CPU per request of the same server went from about
    # 300 µs (busy machine) to 1,500 µs (quiet one), diluting what tracing adds. With
    # one thread it was about 450 µs on the quiet machine (docs/monitoring.md, "Overhead").
    # Three processes per server: of six alike untraced processes measured side by side
    # (5 rounds of 5 s), the medians of CPU per request spanned 6 %, more than the
    # cost being measured (docs/monitoring.md, "Overhead").
    args = parse_args(__doc__, "waitress threads of each server", app_threads_default=1, processes_default=3)
    sink = ThreadingHTTPServer(("127.0.0.1", 0), DiscardingSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = "http://127.0.0.1:%d" % sink.server_address[1]
    _statsd_socket, statsd = statsd_sink()

    # Tracing settings come from the environment only: none of ours may leak in.
    base_env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    variants = {
        "off": {},
        "off, again": {},
        f"default ({DEFAULT_SAMPLE_RATIO:.0%})": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        "100%": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "always_on"},
        "0%": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER_ARG": "0"},
    }
    off, again, default, full, unsampled = variants
    try:
        with redis_and_servers("turnomatic-bench-tracing-") as (redis_url, processes):
            targets = {
                name: start_alike(args.processes,
                                  lambda: turnomatic_server(redis_url, args.app_threads, statsd, {**base_env, **env}),
                                  processes, "/turno/bench-tracing")
                for name, env in variants.items()
            }
            rates, costs = run_rounds(targets, args, f"turnomatic with {args.app_threads} waitress thread(s) in each process, "
                                      "redis-server on loopback, OTLP/HTTP to a discarding sink on loopback")
            if not DiscardingSink.exports:
                sys.exit("the sink received no export: the traced servers did not trace")

            lost, added = {}, {}
            for name in (again, default, full, unsampled):
                lost[name] = [1 - traced / untraced for traced, untraced in zip(rates[name], rates[off])]
                added[name] = [traced / untraced - 1 for traced, untraced in zip(costs[name], costs[off])]
                print(f"{name} vs off:\n"
                      f"  req/s lost       median {statistics.median(lost[name]):+.1%}, "
                      f"spread {min(lost[name]):+.1%} .. {max(lost[name]):+.1%} "
                      f"(rounds {', '.join(f'{c:+.1%}' for c in lost[name])})\n"
                      f"  CPU/req added    median {statistics.median(added[name]):+.1%}, "
                      f"spread {min(added[name]):+.1%} .. {max(added[name]):+.1%} "
                      f"(rounds {', '.join(f'{c:+.1%}' for c in added[name])})")
            cost = statistics.median(lost[default])
            noise = max(abs(c) for c in lost[again])
            met = cost <= TARGET_COST
            print(f"target: default sampling costs at most {TARGET_COST:.0%} of req/s: "
                  f"{'met' if met else 'NOT met'} ({cost:+.1%}); two untraced servers differed by up to "
                  f"{noise:.1%} in the same rounds, so this cost is "
                  f"{'inside' if abs(cost) <= noise else 'outside'} the noise")
    finally:
        sink.shutdown()
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
