"""Real components on loopback for the load smoke tests: redis-server, turnomatic
processes and, where a test needs a balancer, nginx."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TURNOMATIC = Path(sys.executable).with_name("turnomatic")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def processes():
    """Start processes that are stopped (terminate, then kill) when the test ends."""
    started = []

    def start(command, **kwargs):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_url(processes, tmp_path):
    port = free_port()
    processes(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)])
    url = f"redis://127.0.0.1:{port}/0"
    import redis
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return url


@pytest.fixture
def start_turnomatic(processes):
    """start_turnomatic(store, *options) -> base URL of a real `turnomatic serve` process."""
    def start(store, *options):
        port = free_port()
        process = processes([str(TURNOMATIC), "serve", "--port", str(port), "--store", store, *options])
        base = f"http://127.0.0.1:{port}"
        wait_until_answers(base + "/healthz", process)
        return base
    return start


@pytest.fixture
def start_nginx(processes, tmp_path):
    """start_nginx([upstream base URLs]) -> base URL of a real nginx balancing over them."""
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed (make setup installs it)")

    def start(upstreams):
        port = free_port()
        servers = "\n".join(f"server {u.removeprefix('http://')};" for u in upstreams)
        (tmp_path / "nginx.conf").write_text(f"""
            daemon off;
            pid {tmp_path}/nginx.pid;
            error_log {tmp_path}/error.log;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                client_body_temp_path {tmp_path}/body;
                proxy_temp_path {tmp_path}/proxy;
                upstream app {{ {servers} keepalive 16; }}
                server {{
                    listen 127.0.0.1:{port};
                    location / {{
                        proxy_pass http://app;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_next_upstream off;
                    }}
                }}
            }}
        """)
        process = processes(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
        base = f"http://127.0.0.1:{port}"
        wait_until_answers(base + "/healthz", process)
        return base
    return start
