"""Settings: each has a `turnomatic serve` option and a TURNOMATIC_* environment variable.

The command line wins over the environment, the environment over the defaults.
"""

import os
from dataclasses import dataclass
from typing import Any, Callable


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def port_number(text):
    value = int(text)
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


def from_environ(environ=os.environ):
    """Every setting: its default, or the value of its environment variable."""
    values = {}
    for setting in SETTINGS:
        if setting.env in environ:
            try:
                values[setting.name] = setting.parse(environ[setting.env])
            except ValueError as error:
                raise ValueError(f"{setting.env}: {error}") from None
        else:
            values[setting.name] = setting.default
    return values
