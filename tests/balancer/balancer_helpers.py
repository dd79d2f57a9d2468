"""Helpers for the balancer tests: the role's nginx.conf rendered by Ansible, run by real nginx.

A module of its own, not conftest.py, so that test modules import it by a name that
no other test directory uses (several conftest.py are on sys.path in one run).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "balancer"
BIN = Path(sys.executable).parent


def free_port(*hosts):
    """A port free on every one of the hosts."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def wait_for_port(host, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open")


def render_config(workdir, apps, extra_vars, balancers=1):
    """Render templates/nginx.conf.j2 with the role's defaults, through Ansible itself, for an
    inventory whose app group is `apps` ({name: address}) and whose lb group has `balancers` hosts."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "children": {
                "lb": {"hosts": {f"lbtest{n}" if n else "lbtest": local for n in range(balancers)}},
                "app": {"hosts": {name: {"ansible_host": address} for name, address in apps.items()}},
            }
        }
    }
    (workdir / "inventory.json").write_text(json.dumps(inventory))
    playbook = [
        {
            "name": "Render the balancer's nginx.conf",
            "hosts": "lbtest",
            "gather_facts": False,
            "tasks": [
                {"ansible.builtin.include_vars": {"file": str(ROLE / "defaults" / "main.yml")}},
                {"ansible.builtin.include_vars": {"file": str(ROLE / "vars" / "main.yml")}},
                {"ansible.builtin.template": {"src": str(ROLE / "templates" / "nginx.conf.j2"), "dest": str(workdir / "nginx.conf")}},
            ],
        }
    ]
    (workdir / "render.json").write_text(json.dumps(playbook))
    subprocess.run(
        [BIN / "ansible-playbook", "-i", workdir / "inventory.json", workdir / "render.json", "-e", json.dumps(extra_vars)],
        check=True,
        capture_output=True,
        env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
    )
    # The same configuration, with its system paths moved into the test's directory.
    text = (workdir / "nginx.conf").read_text()
    text = text.replace("user www-data;", "").replace("/run/nginx.pid", str(workdir / "nginx.pid"))
    text = text.replace("/var/log/nginx/", f"{workdir}/")
    (workdir / "nginx.conf").write_text(text)
    return text


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
