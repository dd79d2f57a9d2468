"""Counter stores: where the numbers live.

Both stores answer next_turno(id) with the counter of that id after adding one,
never above MAX_TURNO, and check_ready() for readiness. Failures are the exceptions below;
the web layer turns each into its documented status.
"""

import logging
import threading
import time
from collections import Counter
from importlib.resources import files
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection

from . import metrics

log = logging.getLogger(__name__)

# Number.MAX_SAFE_INTEGER: above it a JavaScript client cannot tell numbers apart.
MAX_TURNO = 2**53 - 1

# Bounds on how long a request waits for Redis; overridable per URL
# (?socket_timeout=0.5&socket_connect_timeout=0.5).
REDIS_SOCKET_TIMEOUT = 1.0
REDIS_CONNECT_TIMEOUT = 1.0
REDIS_URL_OPTIONS = {"socket_timeout", "socket_connect_timeout", "max_connections"}
# Ours, not redis-py's: how many replicas must confirm an increment before its number
# is handed out (WAIT), and how long to wait for them, in seconds (below socket_timeout).
REPLICA_URL_OPTIONS = {"replica_acks", "replica_ack_timeout"}
REPLICA_ACK_TIMEOUT = 0.5
SENTINEL_SCHEME = "redis+sentinel"
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
# WAIT's answer said fewer replicas than asked have the increment in time.
UNCONFIRMED = "no replica confirmed the increment in time"


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary Sentinel names. redis-py's own turns a READONLY
    reply (the node was demoted) into a ConnectionError, which would read as "the answer
    was lost, the increment may have run"; READONLY is an answer: nothing ran.
    RedisStore._command disconnects after it, so that the next connection asks the
    sentinels again."""

    def read_response(self, *args, **kwargs):
        return redis.Connection.read_response(self, *args, **kwargs)


class MajoritySentinel(Sentinel):
    """Sentinel that names the primary most sentinels agree on. redis-py's own takes the
    first sentinel that answers; in a split brain, the sentinel cut off with the old
    primary still names it, and an app host that reaches both would keep writing where no
    replica can acknowledge (503s until the partition heals). When no address has a
    majority of the listed sentinels (some did not answer), the answer with the newest
    configuration epoch wins: an epoch grows only with a failover a majority elected, so a
    sentinel cut off with an old primary is never the newest. Either way nothing is
    handed out twice: WAIT, min-replicas-to-write and the fence see to that."""

    def discover_master(self, service_name):
        majority = len(self.sentinels) // 2 + 1
        answers = []  # ((ip, port), config epoch) per sentinel that named a primary
        unreachable = {}
        for sentinel in self.sentinels:
            try:
                state = sentinel.sentinel_masters().get(service_name)
            except redis.RedisError as error:
                # Down, too slow, or refusing (a wrong password): not counted either way.
                unreachable[sentinel] = error
                continue
            if state and self.check_master_state(state, service_name):
                answers.append(((state["ip"], state["port"]), int(state.get("config-epoch", 0))))
                if Counter(address for address, _ in answers).most_common(1)[0][1] >= majority:
                    break
        # Sentinels that did not answer are asked last next time: each can cost a timeout.
        # (A new list: other threads may be going through this one.)
        self.sentinels = sorted(self.sentinels, key=lambda sentinel: sentinel in unreachable)
        if answers:
            named = Counter(address for address, _ in answers)
            newest = {}
            for address, epoch in answers:
                newest[address] = max(epoch, newest.get(address, epoch))
            return max(named, key=lambda address: (named[address] >= majority, newest[address], named[address]))
        errors = "".join(f", {sentinel_address(sentinel)}: {error!r}" for sentinel, error in unreachable.items())
        raise MasterNotFoundError(f"no sentinel of {len(self.sentinels)} names a primary of {service_name!r}{errors}")


def sentinel_address(sentinel):
    kwargs = sentinel.get_connection_kwargs()
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


class RedisStore:
    """Counters in Redis, key turno:<id>, one FCALL turno_next per ticket; with
    replica_acks, pipelined with WAIT, so that a number is handed out only once that many
    replicas have it (a failover then cannot lose it)."""

    single_process = False

    def __init__(self, client, address, replica_acks=0, replica_ack_timeout=REPLICA_ACK_TIMEOUT):
        self.client = client
        # For log lines only: an internal address is no business of the public.
        self.address = address
        self.replica_acks = replica_acks
        self.replica_ack_timeout_ms = int(replica_ack_timeout * 1000)
        # Since Redis last failed to answer: until when increments are refused at once.
        self._failed_until = 0.0
        self._last_failure = ""
        self._fail_fast_lock = threading.Lock()

    def next_turno(self, id):
        if self._failed_until:
            self._refuse_unless_trying_redis()
        key = "turno:" + id
        try:
            reply = self._fcall("turno_next", key, MAX_TURNO, acked=True)
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
            number, ttl_removed, fenced = reply
            if ttl_removed:
                log.warning("%s had a TTL: removed before this increment (it would have restarted the counter at 1)",
                            key)
            if fenced:
                log.warning("failover fence: %s has a new replication id (promoted, restarted or "
                            "restored); every counter moved past the numbers it may lack", self.address)
                metrics.count("store.fences")
            return number
        return reply

    def check_ready(self):
        """Ready when Redis would run an increment now: turno_ready is refused wherever
        a write would be (full, read-only replica, failed persistence, no permission).
        Unlike an increment, a probe leaves the fail-fast window alone."""
        try:
            self._fcall("turno_ready", READY_KEY)
        except redis.ResponseError as error:
            raise refused(error) from None

    def _fcall(self, function, key, *args, acked=False):
        """FCALL one function of the library; `acked`: followed by WAIT when replica
        acknowledgements are asked for. Where Redis does not know the library
        (a Redis the redis role did not set up), load it if this user may and call
        once more: FCALL of an unknown function ran nothing."""
        command = ("FCALL", function, 1, key, *args)
        wait = ("WAIT", self.replica_acks, self.replica_ack_timeout_ms) if acked and self.replica_acks else None
        try:
            return self._command(command, wait)
        except redis.ResponseError as error:
            if str(error) != "Function not found":
                raise
        self._load_library()
        return self._command(command, wait)

    def _load_library(self):
        try:
            self._command(("FUNCTION", "LOAD", LIBRARY_CODE))
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

    def _command(self, command, wait=None):
        """One command, sent and read in two steps, so that a failure says whether the
        command can have reached Redis: before it was written (connecting, sending)
        nothing ran; after, the reply may be lost while the command ran. Re-sent only when
        its write failed (nothing of it left), never after.
        An error reply (Redis answered, so nothing ran) is raised as redis.ResponseError
        for the caller to sort out. `wait`, a WAIT command, goes in the same write right
        after it: the command's reply counts only when WAIT says enough replicas have it."""
        pool = self.client.connection_pool
        for attempt in range(2):
            try:
                connection = pool.get_connection()
            except (redis.ConnectionError, redis.TimeoutError) as error:
                raise unreachable(self.address, error, "could not connect to the store", may_have_run=False) from None
            try:
                packed = connection.pack_commands([command, wait] if wait else [command])
                connection.send_packed_command(packed)
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
                reply, error_reply = read_reply(connection)
                # WAIT's reply is read even after an error reply, to keep the connection in step.
                acks, wait_error = read_reply(connection) if wait else (None, None)
                if primary_in_doubt(error_reply, wait, acks):
                    connection.disconnect()
            except redis.RedisError as error:
                if error.status_code:
                    # An error reply that redis-py raises as a connection error
                    # (LOADING, NOAUTH, max clients): Redis answered, nothing ran. A
                    # WAIT's reply may still be on its way: this connection is done.
                    connection.disconnect()
                    raise refused(error) from None
                raise unreachable(self.address, error, "the store's answer was lost", may_have_run=True) from None
            except Exception as error:
                connection.disconnect()
                raise unreachable(self.address, error, "the store's answer could not be read", may_have_run=True) from None
        finally:
            pool.release(connection)
        if error_reply is not None:
            raise error_reply
        if wait_error is not None:
            raise refused(wait_error) from None  # WAIT cannot fail after a success; say so if it does
        if wait and acks < wait[1]:
            # It ran on the primary, which a failover may now lose: not handed out.
            raise StoreUnavailable(f"{UNCONFIRMED}; {MAYBE_RAN}",
                                   f"redis at {self.address}: WAIT {wait[1]} {wait[2]} answered {acks}",
                                   may_have_run=True, timed_out=True, what=UNCONFIRMED)
        return reply

    def _refuse_unless_trying_redis(self):
        """After a failure: refuse at once, but let one request per window try Redis
        (all threads at once would each wait out the timeout again)."""
        with self._fail_fast_lock:
            now = time.monotonic()
            if now < self._failed_until:
                raise StoreUnavailable(f"{self._last_failure}; not tried again yet, {NOTHING_SENT}")
            self._failed_until = now + REDIS_FAIL_FAST_SECONDS


def primary_in_doubt(error_reply, wait, acks):
    """Whether the node answered like a primary that may have been replaced: demoted
    (READONLY), or cut off from its replicas (NOREPLICAS, or fewer replicas confirmed
    than asked), as the old primary of a split brain is. Its connection is closed, so
    that the next asks the sentinels again."""
    if isinstance(error_reply, redis.ReadOnlyError):
        return True
    if error_reply is not None:
        return str(error_reply).startswith("NOREPLICAS")
    return bool(wait) and acks is not None and acks < wait[1]


def read_reply(connection):
    """(reply, None), or (None, the error reply): Redis answered either way."""
    try:
        return connection.read_response(), None
    except redis.ResponseError as error:
        return None, error


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
    """The store for a URL: memory://, redis://[user:password@]host:port/db (rediss:// for
    TLS), or redis+sentinel://[user:password@]host:port,host:port,.../service/db for the
    primary that those sentinels name (the credentials serve the sentinels and Redis)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"the memory store takes no address or options: use 'memory://', not {redacted(url)!r}")
        return MemoryStore()
    if parts.scheme not in ("redis", "rediss", SENTINEL_SCHEME):
        raise ValueError(f"unknown store URL {redacted(url)!r}: use memory://, redis://[user:password@]host:port/db "
                         f"(rediss:// for TLS) or {SENTINEL_SCHEME}://[user:password@]host:port,host:port/service/db")
    query = parse_qs(parts.query)
    unknown = set(query) - REDIS_URL_OPTIONS - REPLICA_URL_OPTIONS
    if unknown:
        raise ValueError(
            f"unsupported option(s) in the store URL: {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(sorted(REDIS_URL_OPTIONS | REPLICA_URL_OPTIONS))}"
        )
    options = {name: values[-1] for name, values in query.items()}
    acks = replica_options(options, default_acks=1 if parts.scheme == SENTINEL_SCHEME else 0)
    if parts.scheme == SENTINEL_SCHEME:
        return sentinel_store(parts, options, acks)
    # redis-py reads a database that is not a number as database 0, silently.
    database = parts.path.strip("/")
    if database and not (database.isascii() and database.isdigit()):
        # Not quoted: a mistyped URL can hold the password in its path.
        raise ValueError("the database in the store URL must be a number: redis://[user:password@]host:port/db")
    redis_query = "&".join(f"{name}={value}" for name, value in options.items() if name in REDIS_URL_OPTIONS)
    try:
        # No retry at all: a command that failed or timed out may still have run
        # on the server, and sending it again would skip a number.
        client = redis.Redis.from_url(
            parts._replace(query=redis_query).geturl(),
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        address = f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        # Neither redis-py's message nor the URL: a password typed where the port
        # goes (redis://host:password) would be logged.
        raise ValueError(
            "the store URL is not valid (its port or database): use redis://[user:password@]host:port/db"
        ) from None
    return RedisStore(client, address, *acks)


def replica_options(options, default_acks):
    """(replica_acks, replica_ack_timeout) from the URL's options."""
    try:
        acks = int(options.get("replica_acks", default_acks))
        timeout = float(options.get("replica_ack_timeout", REPLICA_ACK_TIMEOUT))
        socket_timeout = float(options.get("socket_timeout", REDIS_SOCKET_TIMEOUT))
        float(options.get("socket_connect_timeout", REDIS_CONNECT_TIMEOUT))
    except ValueError:
        raise ValueError("replica_acks must be a whole number, replica_ack_timeout, socket_timeout and "
                         "socket_connect_timeout numbers of seconds") from None
    if acks < 0 or acks and not 0 < timeout < socket_timeout:
        raise ValueError(f"replica_acks must be 0 or more and replica_ack_timeout between 0 and socket_timeout "
                         f"({socket_timeout} s), not {acks} and {timeout}")
    return acks, timeout


def sentinel_store(parts, options, acks):
    """The store on the primary that the sentinels in the URL name for its service."""
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    service, _, database = parts.path.strip("/").partition("/")
    try:
        sentinels = [split_sentinel(address) for address in hosts.split(",")]
    except ValueError:
        raise ValueError(f"the sentinels in the store URL must be host:port,host:port...: "
                         f"{SENTINEL_SCHEME}://[user:password@]host:port,host:port/service/db") from None
    if not service or database and not (database.isascii() and database.isdigit()):
        raise ValueError(f"the store URL needs a service name and a numeric database: "
                         f"{SENTINEL_SCHEME}://[user:password@]host:port,host:port/service/db")
    credentials = {"username": unquote(username) or None, "password": unquote(password) or None}
    timeouts = {
        "socket_timeout": float(options.get("socket_timeout", REDIS_SOCKET_TIMEOUT)),
        "socket_connect_timeout": float(options.get("socket_connect_timeout", REDIS_CONNECT_TIMEOUT)),
    }
    sentinel = MajoritySentinel(sentinels, sentinel_kwargs={**credentials, **timeouts, "retry": Retry(NoBackoff(), 0)})
    try:
        pool = {"max_connections": int(options["max_connections"])} if "max_connections" in options else {}
    except ValueError:
        raise ValueError("max_connections in the store URL must be a whole number") from None
    client = sentinel.master_for(
        service, connection_class=PrimaryConnection, db=int(database or 0), retry=Retry(NoBackoff(), 0),
        **credentials, **timeouts, **pool,
    )
    return RedisStore(client, f"the primary of {service!r} (sentinels {hosts})", *acks)


def split_sentinel(address):
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(address)
    return host.strip("[]"), int(port)


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
