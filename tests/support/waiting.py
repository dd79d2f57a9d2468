"""Bounded waits: every poll loop of the suites and tools is one of these."""

import subprocess
import time
import urllib.request

from tests.support.ports import port_opens


def wait_until(check, timeout: float, interval: float):
    """check() every `interval` seconds until it returns something true, for at most
    `timeout` seconds; returns its last result (an OSError counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def wait_for(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    """wait_until, failing the test with `what` when the condition never held."""
    if not wait_until(condition, timeout, interval):
        raise AssertionError(f"{what} did not happen within {timeout} s")


def wait_until_answers(url: str, process: subprocess.Popen, seconds: float = 15) -> None:
    """Until url answers (any HTTP status but an error), while the process that serves it runs."""
    def answers():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered")
        with urllib.request.urlopen(url, timeout=1):
            return True
    if not wait_until(answers, seconds, 0.1):
        raise RuntimeError(f"{url} did not answer within {seconds} s")


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Until host:port accepts connections; fails the test after timeout seconds."""
    wait_for(lambda: port_opens(host, port), timeout, f"{host}:{port} opening")
