"""Settings: each has a `turnomatic serve` option and a TURNOMATIC_* environment variable.

The command line wins over the environment, the environment over the defaults.
"""

from dataclasses import dataclass
from typing import Any, Callable


# The parsers say what was expected: Python's own "invalid literal for int()" does not.
def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a whole number of at least 1, not {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def port_number(text):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a port number 0-65535, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number 0-65535, not {value}")
    return value


def boolean(text):
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off), not {text!r}")


def statsd_address(text):
    """'' (metrics off) or host:port, [v6-address]:port for IPv6."""
    if text:
        split_host_port(text)
    return text


def split_host_port(address):
    host, separator, port = address.rpartition(":")
    if not separator or not host:
        raise ValueError(f"must be host:port, not {address!r}")
    return host.strip("[]"), port_number(port)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self):
        return "TURNOMATIC_" + self.name.upper()

    @property
    def option(self):
        return "--" + self.name.replace("_", "-")

    def from_environ(self, environ):
        """The value of the environment variable, or the default when it is not set."""
        if self.env not in environ:
            return self.default
        try:
            return self.parse(environ[self.env])
        except ValueError as error:
            raise ValueError(f"{self.env}: {error}") from None


SETTINGS = (
    Setting("host", "127.0.0.1", str, "listen address"),
    Setting("port", 7017, port_number, "listen port"),
    Setting(
        "store",
        "memory://",
        str,
        "counter store: memory:// (one process) or redis://[user:password@]host:port/db, rediss:// for TLS",
    ),
    Setting("threads", 4, positive_int, "waitress worker threads"),
    Setting("connection_limit", 100, positive_int, "waitress limit on open client connections"),
    Setting(
        "reuse_port",
        False,
        boolean,
        "bind with SO_REUSEPORT so several processes share the port (refused with the memory store)",
    ),
    Setting("statsd", "", statsd_address, "StatsD host:port ([v6-address]:port for IPv6); empty turns metrics off"),
    Setting("statsd_prefix", "turnomatic", str, "prefix of every metric name"),
)
