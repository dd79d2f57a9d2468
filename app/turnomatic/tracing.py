"""OpenTelemetry traces: a server span per request and a child span for the Redis call,
exported over OTLP to any backend (Honeycomb, an OpenTelemetry Collector...).

Configured only by the standard OTEL_* environment variables, read by the SDK itself:
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), _HEADERS, _PROTOCOL,
_TIMEOUT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, _SAMPLER_ARG,
OTEL_BSP_* and OTEL_PROPAGATORS; but for the default sampler, parentbased_traceidratio,
which this module builds from OTEL_TRACES_SAMPLER_ARG when OTEL_TRACES_SAMPLER is unset
or names it (RATIO_SAMPLER). Without an endpoint tracing is off: no SDK, no
middleware, and the hooks below cost one context look-up.

Spans of our own rather than the Flask/WSGI instrumentations: those record dozens of
attributes per request and wrap every Flask hook, and what is wanted here is a handful
of attributes that the instrumentations do not know (the id, the outcome).

Most requests are not sampled, and for them no span is made at all: a request that
brings no trace context of its caller gets its trace id drawn by the middleware, the
sampler decides on it (the default one by a single comparison, see ratio_test), and
only a sampled one gets its span, with that very trace id. Making the span of an
unsampled request (the SDK's start_span, the context attached and detached, the
propagator's look-ups) cost 2.7 % of a request's instructions, most of the default
sampling's cost then (docs/monitoring.md).

A request never waits for the backend: a finished span goes into the batch processor's
bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048; beyond it spans are dropped, never
blocked on) and a background thread exports batches. A dead collector costs that thread
its retries, not the requests.
"""

import atexit
import logging
import os
import threading
import time
from contextlib import nullcontext

from flask import current_app, request
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

# The default sampler (OTEL_TRACES_SAMPLER unset, or set to it as the turnomatic role
# does): built here rather than by the SDK, so that its ratio is checked (a bad one
# stops the start; the SDK would trace everything) and its decision taken in one
# comparison (ratio_test).
RATIO_SAMPLER = "parentbased_traceidratio"

# Its ratio when OTEL_TRACES_SAMPLER_ARG is not set. Parent-based, so a trace a caller
# started (sampled in its traceparent) is always kept whole, and of the requests that
# come without one this fraction is traced. 1 %: a traced request costs
# the process 1.5 to 1.9 times the CPU of an untraced one (the SDK's two spans and their
# protobuf encoding); the default cost 0.3 and 3.0 % of the req/s in two runs on a
# quiet machine (docs/monitoring.md, tools/bench/bench_tracing.py); one process at
# 2,500 req/s still sends 25 traces a second.
DEFAULT_SAMPLE_RATIO = 0.01

# With a dead collector the exporter logs two lines per failed batch, a few a second per
# process for as long as the collector is down; once a minute says as much. (The
# batch processor's "Queue full, dropping" has the SDK's own filter: once per 20 s.)
EXPORTER_LOG_INTERVAL_SECONDS = 60

# At exit, how long the last spans may take to leave. The SDK's own exit hook waits up
# to 30 s (an export hung on a dead collector holds it that long): a restart, one
# process after the other, would wait that long per process.
EXIT_FLUSH_SECONDS = 2.0


def endpoint(environ):
    return environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def init_app(app, environ=os.environ):
    """Trace every request when an OTLP endpoint is configured; nothing otherwise."""
    if not endpoint(environ):
        return
    # Imported here: with tracing off the SDK and the exporter are not even loaded.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if resource.attributes[SERVICE_NAME].startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "turnomatic"}))
    sampler = None  # the SDK reads OTEL_TRACES_SAMPLER and _ARG
    root_sampled = None  # ask the sampler
    if (environ.get("OTEL_TRACES_SAMPLER") or RATIO_SAMPLER).lower() == RATIO_SAMPLER:
        ratio_sampler = TraceIdRatioBased(sample_ratio(environ))
        sampler = ParentBased(root=ratio_sampler)  # what the SDK's ParentBasedTraceIdRatio is
        root_sampled = ratio_test(ratio_sampler)
    trace_ids = DrawnTraceIds(RandomIdGenerator())
    provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False, id_generator=trace_ids)
    exporter = span_exporter(environ)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    atexit.register(shut_down_within, provider, EXIT_FLUSH_SECONDS)
    logging.getLogger(type(exporter).__module__).addFilter(OncePerInterval(EXPORTER_LOG_INTERVAL_SECONDS))
    tracer = provider.get_tracer("turnomatic")
    # The endpoint and the sampler, never the headers: they hold the backend's API key.
    log.info("tracing to %s as %s, sampler %s", endpoint(environ), resource.attributes[SERVICE_NAME],
             provider.sampler.get_description())
    app.extensions["tracer"] = tracer
    app.wsgi_app = ServerSpans(app.wsgi_app, tracer, provider.sampler, trace_ids, root_sampled)


def ratio_test(ratio_sampler):
    """What the ratio sampler (the root of the parent-based one) answers about a request
    without a parent (TraceIdRatioBased.should_sample: the trace id's lower 64 bits
    below its bound), as one comparison. Asking the SDK's parent-based sampler the same
    (its look-up of a parent, the ratio sampler, a SamplingResult, the parent's trace
    state) took 1.2 % of a saturated process's samples at the default sampling
    (py-spy), a third of all that ran only because tracing was on (docs/monitoring.md,
    "Overhead")."""
    bound, trace_id_limit = ratio_sampler.bound, ratio_sampler.TRACE_ID_LIMIT
    return lambda trace_id, _name: trace_id & trace_id_limit < bound


def shut_down_within(provider, seconds):
    """Export what is queued, waiting at most `seconds` (the SDK's shutdown takes no
    time limit): in a daemon thread, which the interpreter abandons at exit."""
    flush = threading.Thread(target=provider.shutdown, name="otel-exit-flush", daemon=True)
    flush.start()
    flush.join(seconds)


def sample_ratio(environ):
    text = environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    if not text:
        return DEFAULT_SAMPLE_RATIO
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be a ratio from 0 to 1, not {text!r}") from None
    if not 0 <= ratio <= 1:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be a ratio from 0 to 1, not {text!r}")
    return ratio


def span_exporter(environ):
    """OTLP over HTTP/protobuf (the default protocol). gRPC only when asked for and its
    exporter (opentelemetry-exporter-otlp-proto-grpc, not a dependency: grpcio is large)
    is installed; anything else stops the start rather than silently tracing nothing."""
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package opentelemetry-exporter-otlp-proto-grpc, "
                "which is not installed; use http/protobuf"
            ) from None
        return OTLPSpanExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf (or grpc)")


class OncePerInterval(logging.Filter):
    """Lets each message (its format string, whatever its arguments) through once per interval."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.last_seen = {}

    def filter(self, record):
        now = time.monotonic()
        if now - self.last_seen.get(record.msg, -self.seconds) < self.seconds:
            return False
        self.last_seen[record.msg] = now
        return True


class EnvironGetter:
    """Reads propagation headers (traceparent, tracestate, baggage) from a WSGI environ."""

    def get(self, environ, key):
        value = environ.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if value is not None else None

    def keys(self, environ):
        return [key[5:].lower().replace("_", "-") for key in environ if key.startswith("HTTP_")]


ENVIRON_GETTER = EnvironGetter()

# The context of a request that brings none: no parent, a root span.
NO_PARENT = context.Context()

# Where an unsampled request keeps its trace id (in its WSGI environ), for its log line.
UNSAMPLED_TRACE_ID = "turnomatic.unsampled_trace_id"


class DrawnTraceIds:
    """The SDK's id generator, `random_ids`, but a thread's next trace id can be one drawn
    beforehand: the middleware has the sampling decided on a trace id before making a
    span, and the span of a sampled request must carry the id that was sampled (the ratio
    sampler decides on the id: a fresh one would be sampled again, at 1 % of 1 %)."""

    def __init__(self, random_ids):
        self.random_ids = random_ids
        self.generate_span_id = random_ids.generate_span_id
        self.is_trace_id_random = random_ids.is_trace_id_random
        self.drawn = threading.local()

    def use_next(self, trace_id):
        self.drawn.trace_id = trace_id

    def generate_trace_id(self):
        trace_id = getattr(self.drawn, "trace_id", None)
        if trace_id is None:
            return self.random_ids.generate_trace_id()
        self.drawn.trace_id = None
        return trace_id


class ServerSpans:
    """WSGI middleware: the server span of each request, joined to the caller's trace
    when the request carries a traceparent (OTEL_PROPAGATORS, W3C trace context by default)."""

    def __init__(self, wsgi_app, tracer, sampler, trace_ids, root_sampled=None):
        """root_sampled(trace_id, span name): the sampler's decision on a request
        without a parent, when it can be told cheaper than by asking the sampler."""
        self.wsgi_app = wsgi_app
        self.tracer = tracer
        self.sampler = sampler
        self.trace_ids = trace_ids
        self.root_sampled = root_sampled or self.sampler_samples_root
        self.draw_trace_id = trace_ids.random_ids.generate_trace_id
        # The headers the propagators read (traceparent, tracestate, baggage by default).
        self.context_keys = tuple("HTTP_" + field.upper().replace("-", "_")
                                  for field in propagate.get_global_textmap().fields)

    def sampler_samples_root(self, trace_id, name):
        return self.sampler.should_sample(NO_PARENT, trace_id, name, SpanKind.SERVER).decision.is_recording()

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if any(key in environ for key in self.context_keys):
            # The caller's context decides (a parent-based sampler keeps its sampled trace).
            parent = propagate.extract(environ, getter=ENVIRON_GETTER)
        else:
            # The same question start_span would ask the sampler, before any span is made.
            trace_id = self.draw_trace_id()
            if not self.root_sampled(trace_id, method):
                environ[UNSAMPLED_TRACE_ID] = trace_id
                return self.wsgi_app(environ, start_response)
            self.trace_ids.use_next(trace_id)
            parent = NO_PARENT
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
        # By hand rather than start_as_current_span: a caller's unsampled request gets
        # a span that is only its context; the context manager costs a third more.
        token = context.attach(trace.set_span_in_context(span))
        try:
            if not span.is_recording():
                return self.wsgi_app(environ, start_response)
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", environ.get("PATH_INFO", ""))
            request_id = environ.get("HTTP_X_REQUEST_ID")
            if request_id:
                # The balancer's $request_id, also in its access log: log line and trace meet here.
                span.set_attribute("http.request.header.x-request-id", (request_id,))

            def record_and_start_response(status, headers, exc_info=None):
                code = int(status[:3])
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return start_response(status, headers, exc_info)

            return self.wsgi_app(environ, record_and_start_response)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            context.detach(token)
            span.end()


def record(outcome, error=None, **attributes):
    """The request's outcome (and the route it matched, its other attributes, the
    exception) on its server span; called by the view and the error handlers. With
    tracing off, or the request not sampled, no span is current."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    rule = request.url_rule
    if rule is not None:
        span.set_attribute("http.route", rule.rule)
        span.update_name(f"{request.method} {rule.rule}")
    span.set_attribute("turnomatic.outcome", outcome)
    for name, value in attributes.items():
        span.set_attribute("turnomatic." + name, value)
    if error is not None:
        span.record_exception(error)


def redis_span(operation):
    """The child span around one Redis call; a no-op context when tracing is off or the
    request is not sampled: without its server span the child is of no use (a
    parent-based sampler, the default, would drop it too)."""
    if not trace.get_current_span().is_recording():
        return nullcontext()
    return current_app.extensions["tracer"].start_as_current_span(
        f"redis {operation}",
        kind=SpanKind.CLIENT,
        attributes={"db.system": "redis", "db.system.name": "redis", "db.operation.name": operation},
    )


def log_reference():
    """' [trace <id>]' for a log line, so that the line leads to its trace; '' when off."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        trace_id, sampled = span_context.trace_id, span_context.trace_flags.sampled
    else:
        trace_id, sampled = request.environ.get(UNSAMPLED_TRACE_ID), False
        if trace_id is None:
            return ""
    return f" [trace {trace.format_trace_id(trace_id)}{'' if sampled else ', not sampled'}]"
