"""Real nginx on a configuration rendered into a test's directory, and raw HTTP exchanges
with it (bytes no HTTP client library would send)."""

import shutil
import signal
import socket
import subprocess
from contextlib import contextmanager

import pytest

from tests.support.waiting import wait_for_port


@contextmanager
def running_nginx(workdir, port):
    """nginx on the rendered nginx.conf of workdir, until the block ends."""
    if not shutil.which("nginx"):
        pytest.fail("nginx is not installed (make setup installs it)")
    nginx = subprocess.Popen(["nginx", "-c", workdir / "nginx.conf", "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port)
        yield nginx
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(timeout=10)


def raw_exchange(port, raw, timeout=10, host="127.0.0.1", source="127.0.0.1"):
    """Send raw bytes from the source address, read until the answer is complete, the server
    closes or the timeout; (status, headers, body)."""
    with socket.create_connection((host, port), timeout=timeout, source_address=(source, 0)) as conn:
        conn.sendall(raw)
        response = b""
        try:
            while chunk := conn.recv(65536):
                response += chunk
                head, separator, body = response.partition(b"\r\n\r\n")
                length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if separator and length and len(body) >= int(length[0].split(b":")[1]):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    if not response.startswith(b"HTTP/"):  # an HTTP/0.9 answer is the body alone
        return None, {}, response
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
    return status, headers, body
