"""Counter stores: where the numbers live.

Both stores answer next_turno(id) with the counter of that id after adding one,
never above MAX_TURNO, and check_ready() for readiness. Failures are the exceptions below;
the web layer turns each into its documented status.
"""

import logging
import threading
import time
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

# Number.MAX_SAFE_INTEGER: above it a JavaScript client cannot tell numbers apart.
MAX_TURNO = 2**53 - 1

# Bounds on how long a request waits for Redis; overridable per URL
# (?socket_timeout=0.5&socket_connect_timeout=0.5).
REDIS_SOCKET_TIMEOUT = 1.0
REDIS_CONNECT_TIMEOUT = 1.0
REDIS_URL_OPTIONS = {"socket_timeout", "socket_connect_timeout", "max_connections"}
# After Redis did not answer in time, increments are refused at once for this long
# instead of each holding a thread for the timeouts above: an unreachable Redis
# would otherwise queue requests past the balancer's timeout.
REDIS_FAIL_FAST_SECONDS = 0.5


class StoreError(Exception):
    """A counter could not be advanced."""


class CounterExhausted(StoreError):
    """The counter is at MAX_TURNO (or beyond); it was left as it was."""


class CorruptCounter(StoreError):
    """The stored value is not a counter (not an integer, negative, wrong type)."""


class StoreUnavailable(StoreError):
    """The store did not answer or refused. The message is for the client: whether the
    increment may have run, never Redis's address; `detail` is for the log only."""

    def __init__(self, message, detail="", may_have_run=False, timed_out=False, what=""):
        super().__init__(message)
        self.detail = detail
        self.may_have_run = may_have_run
        self.timed_out = timed_out
        self.what = what  # the message without its outcome


class MemoryStore:
    """Counters in this process's memory: the embedded default, one process only."""

    single_process = True

    def __init__(self):
        self.counters = {}
        self._lock = threading.Lock()

    def next_turno(self, id):
        with self._lock:
            current = self.counters.get(id, 0)
            if current >= MAX_TURNO:
                raise CounterExhausted(f"counter is at its maximum {MAX_TURNO}")
            self.counters[id] = current + 1
            return current + 1

    def check_ready(self):
        pass


# The Redis Function library (turno_next, turno_ready), shared with the redis role,
# which loads it: app/turnomatic/turnomatic.lua.
LIBRARY_CODE = files("turnomatic").joinpath("turnomatic.lua").read_text()
# /readyz's probe key: under turno: (the app user's key pattern) but no counter's,
# since ids cannot contain ':'. The probe writes nothing to it.
READY_KEY = "turno::ready"

NOTHING_SENT = "no increment was sent"
MAYBE_RAN = "the increment may have run"


class RedisStore:
    """Counters in Redis, key turno:<id>, one FCALL turno_next per ticket."""

    single_process = False

    def __init__(self, url):
        # No retry at all: a command that failed or timed out may still have run
        # on the server, and sending it again would skip a number.
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        # For log lines only: an internal address is no business of the public.
        parts = urlsplit(url)
        self.address = f"{parts.hostname}:{parts.port or 6379}"
        # Since Redis last failed to answer: until when increments are refused at once.
        self._failed_until = 0.0
        self._last_failure = ""
        self._fail_fast_lock = threading.Lock()

    def next_turno(self, id):
        if self._failed_until:
            self._refuse_unless_trying_redis()
        key = "turno:" + id
        try:
            reply = self._fcall("turno_next", key, MAX_TURNO)
        except StoreUnavailable as error:
            if error.timed_out:
                self._last_failure = error.what
                self._failed_until = time.monotonic() + REDIS_FAIL_FAST_SECONDS
            raise
        except redis.ResponseError as error:
            self._failed_until = 0.0  # Redis answered
            message = str(error)
            if message.startswith("EXHAUSTED"):
                raise CounterExhausted(message.removeprefix("EXHAUSTED ")) from None
            if message.startswith("CORRUPT"):
                raise CorruptCounter(message.removeprefix("CORRUPT ")) from None
            # Out of memory, read-only replica, no permission, failed persistence...
            raise refused(error) from None
        self._failed_until = 0.0
        if isinstance(reply, list):
            log.warning("%s had a TTL: removed before this increment (it would have restarted the counter at 1)", key)
            return reply[0]
        return reply

    def check_ready(self):
        """Ready when Redis would run an increment now: turno_ready is refused wherever
        a write would be (full, read-only replica, failed persistence, no permission).
        Unlike an increment, a probe leaves the fail-fast window alone."""
        try:
            self._fcall("turno_ready", READY_KEY)
        except redis.ResponseError as error:
            raise refused(error) from None

    def _fcall(self, function, key, *args):
        """FCALL one function of the library. Where Redis does not know the library
        (a Redis the redis role did not set up), load it if this user may and call
        once more: FCALL of an unknown function ran nothing."""
        try:
            return self._command("FCALL", function, 1, key, *args)
        except redis.ResponseError as error:
            if str(error) != "Function not found":
                raise
        self._load_library()
        return self._command("FCALL", function, 1, key, *args)

    def _load_library(self):
        try:
            self._command("FUNCTION", "LOAD", LIBRARY_CODE)
        except redis.ResponseError as error:
            if "already exists" in str(error):  # another process loaded it meanwhile
                return
            if not isinstance(error, redis.exceptions.NoPermissionError):
                raise refused(error) from None  # full, read-only...: the load itself is refused
            raise StoreUnavailable(
                f"the store is not set up: the turnomatic function library is missing; {NOTHING_SENT}",
                f"FUNCTION LOAD refused ({refused(error).detail}): the redis role loads the library "
                "with its admin user",
            ) from None

    def _command(self, *command):
        """One command, sent and read in two steps, so that a failure says whether the
        command can have reached Redis: before it was written (connecting, sending)
        nothing ran; after, the reply may be lost while the command ran. Re-sent only when
        its write failed (nothing of it left), never after.
        An error reply (Redis answered, so nothing ran) is raised as redis.ResponseError
        for the caller to sort out."""
        pool = self.client.connection_pool
        for attempt in range(2):
            try:
                connection = pool.get_connection()
            except (redis.ConnectionError, redis.TimeoutError) as error:
                raise unreachable(self.address, error, "could not connect to the store", may_have_run=False) from None
            try:
                connection.send_command(*command)
                break
            except redis.ConnectionError as error:
                # The write itself failed (broken pipe, reset): the connection was dead
                # before any of the command left, so nothing ran. A pooled connection that
                # outlived a Redis outage fails just this way, once; the command goes once
                # more on a new connection (the one redis-py closed connects afresh),
                # which cannot count twice. A timeout while writing is not retried: part
                # of the command may be on its way.
                pool.release(connection)
                if attempt:
                    raise unreachable(self.address, error, "could not send to the store", may_have_run=False) from None
            except redis.TimeoutError as error:
                pool.release(connection)
                raise unreachable(self.address, error, "could not send to the store", may_have_run=False) from None
        try:
            try:
                return connection.read_response()
            except redis.ResponseError:
                raise
            except redis.RedisError as error:
                if error.status_code:
                    # An error reply that redis-py raises as a connection error
                    # (LOADING, NOAUTH, max clients): Redis answered, nothing ran.
                    raise refused(error) from None
                raise unreachable(self.address, error, "the store's answer was lost", may_have_run=True) from None
            except Exception as error:
                connection.disconnect()
                raise unreachable(self.address, error, "the store's answer could not be read", may_have_run=True) from None
        finally:
            pool.release(connection)

    def _refuse_unless_trying_redis(self):
        """After a failure: refuse at once, but let one request per window try Redis
        (all threads at once would each wait out the timeout again)."""
        with self._fail_fast_lock:
            now = time.monotonic()
            if now < self._failed_until:
                raise StoreUnavailable(f"{self._last_failure}; not tried again yet, {NOTHING_SENT}")
            self._failed_until = now + REDIS_FAIL_FAST_SECONDS


def unreachable(address, error, what, may_have_run):
    """A failure to reach Redis at `address`, before the command was written or after."""
    timed_out = isinstance(error, redis.TimeoutError)
    if timed_out:
        what = "the store did not answer in time" if may_have_run else what + " in time"
    outcome = MAYBE_RAN if may_have_run else NOTHING_SENT
    detail = f"redis at {address}: {type(error).__name__}: {error}"
    return StoreUnavailable(f"{what}; {outcome}", detail, may_have_run, timed_out, what)


def refused(error):
    """Redis answered the command with an error: it ran nothing."""
    reply = f"{error.status_code} {error}" if error.status_code else str(error)
    return StoreUnavailable(f"the store refused ({reply}); no increment ran", reply)


def open_store(url):
    """The store for a URL: memory:// or redis://[user:password@]host:port/db (rediss:// for TLS)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"the memory store takes no address or options: use 'memory://', not {redacted(url)!r}")
        return MemoryStore()
    if parts.scheme in ("redis", "rediss"):
        unknown = set(parse_qs(parts.query)) - REDIS_URL_OPTIONS
        if unknown:
            raise ValueError(
                f"unsupported option(s) in the store URL: {', '.join(sorted(unknown))}; "
                f"supported: {', '.join(sorted(REDIS_URL_OPTIONS))}"
            )
        # redis-py reads a database that is not a number as database 0, silently.
        database = parts.path.strip("/")
        if database and not (database.isascii() and database.isdigit()):
            # Not quoted: a mistyped URL can hold the password in its path.
            raise ValueError("the database in the store URL must be a number: redis://[user:password@]host:port/db")
        try:
            return RedisStore(url)
        except ValueError:
            # Neither redis-py's message nor the URL: a password typed where the port
            # goes (redis://host:password) would be logged.
            raise ValueError(
                "the store URL is not valid (its port or database): use redis://[user:password@]host:port/db"
            ) from None
    raise ValueError(f"unknown store URL {redacted(url)!r}: use memory:// or redis://[user:password@]host:port/db (rediss:// for TLS)")


def redacted(url):
    """The URL for logs and messages: everything before its last '@' but a user name
    hidden, however mistyped (a scheme without //, a password with / or @ in it)."""
    credentials_and_before, at, location = url.rpartition("@")
    if not at:
        return url
    scheme, slashes, credentials = credentials_and_before.partition("//")
    if not slashes:
        scheme, credentials = "", credentials_and_before
    user, colon, _ = credentials.partition(":")
    return f"{scheme}{slashes}{user + ':' if colon else ''}***@{location}"
