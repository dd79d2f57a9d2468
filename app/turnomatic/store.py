"""Counter stores: where the numbers live.

Both stores answer next_turno(id) with the counter of that id after adding one,
never above MAX_TURNO, and ping() for readiness. Failures are the exceptions below;
the web layer turns each into its documented status.
"""

import threading
import time
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

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
    """The store did not answer: refused, unreachable or timed out."""


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

    def ping(self):
        pass


# One atomic step on the server: INCR, and if the result is out of range undo it
# with DECR and answer an error, so the counter is left as it was. Lua numbers
# are doubles: every integer up to 2^53-1 is exact and every larger one compares
# above the limit, so the check is exact. An INCR error (not an integer, wrong
# type, 2^63-1 overflow) changes nothing and is mapped to our own error codes.
INCREMENT_SCRIPT = """
local n = redis.pcall('INCR', KEYS[1])
if type(n) == 'table' then
  if string.find(n.err, 'overflow', 1, true) then
    return redis.error_reply('EXHAUSTED counter is beyond the maximum')
  end
  return redis.error_reply('CORRUPT ' .. n.err)
end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return redis.error_reply('EXHAUSTED counter is at its maximum ' .. ARGV[1])
end
if n < 1 then
  redis.call('DECR', KEYS[1])
  return redis.error_reply('CORRUPT counter is negative')
end
return n
"""


class RedisStore:
    """Counters in Redis, key turno:<id>, one scripted INCR per ticket."""

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
        self._increment = self.client.register_script(INCREMENT_SCRIPT)
        # Since Redis last failed to answer: until when increments are refused at once.
        self._failed_until = 0.0
        self._last_failure = ""
        self._fail_fast_lock = threading.Lock()

    def next_turno(self, id):
        if self._failed_until:
            self._refuse_unless_trying_redis()
        try:
            number = self._increment(keys=["turno:" + id], args=[MAX_TURNO])
        except redis.ResponseError as error:
            self._failed_until = 0.0  # Redis answered
            message = str(error)
            if message.startswith("EXHAUSTED"):
                raise CounterExhausted(message.removeprefix("EXHAUSTED ")) from None
            if message.startswith("CORRUPT"):
                raise CorruptCounter(message.removeprefix("CORRUPT ")) from None
            # Refused before it ran: out of memory, no permission, read-only replica...
            raise StoreUnavailable(f"redis refused the increment ({message})") from None
        except redis.TimeoutError as error:
            self._last_failure = f"redis unavailable ({error})"
            self._failed_until = time.monotonic() + REDIS_FAIL_FAST_SECONDS
            raise StoreUnavailable(describe_redis_error(error)) from None
        except redis.ConnectionError as error:
            # Refused at once, or a pooled connection Redis has dropped (broken pipe,
            # reset): no wait to spare, and the next request connects afresh.
            raise StoreUnavailable(describe_redis_error(error)) from None
        self._failed_until = 0.0
        return number

    def _refuse_unless_trying_redis(self):
        """After a failure: refuse at once, but let one request per window try Redis
        (all threads at once would each wait out the timeout again)."""
        with self._fail_fast_lock:
            now = time.monotonic()
            if now < self._failed_until:
                raise StoreUnavailable(f"{self._last_failure}; not tried again yet, no increment was sent")
            self._failed_until = now + REDIS_FAIL_FAST_SECONDS

    def ping(self):
        try:
            self.client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(describe_redis_error(error)) from None


def describe_redis_error(error):
    if isinstance(error, redis.TimeoutError):
        return f"redis did not answer in time ({error}); the increment may have run"
    return f"redis unavailable ({error})"


def open_store(url):
    """The store for a URL: memory:// or redis://[user:password@]host:port/db (rediss:// for TLS)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"the memory store takes no address or options: use 'memory://', not {url!r}")
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
            raise ValueError(f"the database in the store URL must be a number (redis://host:port/0), not {database!r}")
        return RedisStore(url)
    raise ValueError(f"unknown store URL {url!r}: use memory:// or redis://[user:password@]host:port/db (rediss:// for TLS)")
