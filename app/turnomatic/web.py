"""The HTTP API: GET /turno/<id>, /healthz, /readyz, and a JSON body for every error."""

import json
import logging
import re
from contextlib import nullcontext

from flask import Blueprint, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from . import metrics, tracing
from .store import CorruptCounter, CounterExhausted, RedisStore, StoreError, StoreUnavailable

ID_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -, the first a letter or digit"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LOGGED_PATH_LENGTH = 100
# The Redis command of an increment (the function library's turno_next), for its span.
REDIS_INCREMENT_COMMAND = "FCALL"

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)


@bp.get("/turno/<id>")
def turno(id):
    if request.method == "HEAD":
        # Flask adds HEAD to every GET route; here it would use up a number unseen.
        raise MethodNotAllowed(["GET"], "HEAD would use up a number without showing it; use GET.")
    if not ID_PATTERN.fullmatch(id):
        return bad_id()
    if client_gone():
        # Queued while its client went away: a number now would go to nobody.
        metrics.count("client_gone")
        tracing.record("client_gone")
        return current_app.response_class(status=499)
    store = current_app.extensions["store"]
    with tracing.redis_span(REDIS_INCREMENT_COMMAND) if isinstance(store, RedisStore) else nullcontext():
        number = store.next_turno(id)
    metrics.count("tickets")
    tracing.record("ticket", id=id, turno=number)
    return json_response({"id": id, "turno": number})


def client_gone():
    """waitress says whether the client closed its connection (it can tell only with
    channel_request_lookahead, which `turnomatic serve` sets); other servers cannot."""
    disconnected = request.environ.get("waitress.client_disconnected")
    return disconnected is not None and disconnected()


def bad_id():
    return error_response(400, "bad_id", f"id must be {ID_RULE}")


@bp.get("/healthz")
def healthz():
    tracing.record("ok")
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    current_app.extensions["store"].check_ready()
    tracing.record("ready")
    return json_response({"status": "ready"})


# Each store failure, its status and error name.
STORE_ERRORS = {
    CounterExhausted: (409, "counter_exhausted"),
    CorruptCounter: (500, "corrupt_counter"),
    StoreUnavailable: (503, "store_unavailable"),
}


@bp.errorhandler(StoreError)
def store_error(error):
    status, name = STORE_ERRORS[type(error)]
    if status >= 500:
        metrics.count("store.errors")
    may_have_run = getattr(error, "may_have_run", False)
    if may_have_run:
        metrics.count("store.maybe_ran")
    outcome = "may_have_run" if may_have_run else name
    # The id is a span attribute; /readyz has none.
    return error_response(status, name, str(error), getattr(error, "detail", ""), outcome, error, **request.view_args)


@bp.after_app_request
def no_store(response):
    """No answer may be stored: a cache or a prefetcher replaying a /turno answer would
    show a number to a second client, or use one up unseen. Errors too (they pass here)."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_errorhandler(HTTPException)
def http_error(error):
    """404, 405 and the other errors Werkzeug raises, as JSON, keeping their headers (Allow)."""
    if isinstance(error, NotFound):
        if (request.path + "/").startswith("/turno/"):
            # An empty id, or one with a slash (also %2F): a bad id, not an unknown endpoint.
            return bad_id()
        return error_response(404, "not_found", "no such endpoint; the API is GET /turno/<id>, /healthz, /readyz")
    response = error_response(error.code, error.name.lower().replace(" ", "_"), error.description)
    response.headers.extend((k, v) for k, v in error.get_headers() if k.lower() != "content-type")
    return response


@bp.app_errorhandler(Exception)
def unexpected_error(error):
    tracing.record("internal_error", error)
    log.exception("%s %s -> 500 internal_error%s", request.method, truncated(request.path), tracing.log_reference())
    return json_response({"error": "internal_error", "message": "unexpected error; it is logged"}, 500)


def error_response(status, error, message, detail="", outcome=None, exception=None, **span_attributes):
    """The JSON error body, and its log line: request (with the id), status, cause and
    trace. `detail` (Redis's address, its exact error) goes to the log line only. The
    outcome on the request's span is the error's name unless given."""
    tracing.record(outcome or error, exception, **span_attributes)
    cause = f"{message} [{detail}]" if detail else message
    log.warning("%s %s -> %d %s: %s%s", request.method, truncated(request.path), status, error, cause,
                tracing.log_reference())
    return json_response({"error": error, "message": message}, status)


def json_response(body, status=200):
    # Plain json.dumps: Flask's JSON provider costs more per request and adds nothing here.
    return current_app.response_class(json.dumps(body), status, content_type="application/json")


def truncated(text):
    """repr() keeps control characters out of the log; long paths are cut."""
    if len(text) > LOGGED_PATH_LENGTH:
        return repr(text[:LOGGED_PATH_LENGTH]) + f"... ({len(text)} characters)"
    return repr(text)
