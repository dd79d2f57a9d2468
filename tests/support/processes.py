"""Real components on loopback, for the load smoke tests and the side-by-side comparisons:
redis-server, `turnomatic serve` processes and an nginx balancer in front of them.
Each is started by a method that registers its process with a `Processes`, which
stops them all (terminate, then kill) when it closes."""

import os
import subprocess
from pathlib import Path

from tests.support.ansible import render_balancer_config
from tests.support.paths import BIN
from tests.support.ports import free_port
from tests.support.service import RedisServer
from tests.support.waiting import wait_until_answers

TURNOMATIC = BIN / "turnomatic"
# Where CPU-capped processes get their cgroups (cgroup v1, as the lab's VMs).
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu/turnomatic-load")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat counts all its
    threads, ended ones included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Processes:
    """The processes started for one test or one comparison; `with` stops them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[subprocess.Popen] = []
        self.cgroups: list[Path] = []

    def start(self, command: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started.append(process)
        return process

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in reversed(self.started):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.started.clear()
        for cgroup in self.cgroups:
            cgroup.rmdir()
        self.cgroups.clear()

    def redis(self) -> str:
        """A redis-server without persistence; its URL."""
        server = RedisServer(self.workdir / f"redis-{len(self.started)}", appendfsync=None).start()
        self.started.append(server.process)
        return server.url

    def turnomatic(self, store: str, *options: str, processes: int = 1, port: int = 0,
                   host: str = "127.0.0.1", cpu_percent: int = 0) -> str:
        """`turnomatic serve` on a free port, in as many processes (SO_REUSEPORT); its base URL.
        With cpu_percent, its processes together get at most that share of one core, like
        a lab VM (a cgroup v1 cpu quota)."""
        port = port or free_port()
        command = [str(TURNOMATIC), "serve", "--host", host, "--port", str(port), "--store", store, *options]
        if processes > 1:
            command.append("--reuse-port")
        cgroup = self.cpu_cgroup(f"{host}-{port}", cpu_percent) if cpu_percent else None
        base = f"http://{host}:{port}"
        for _ in range(processes):
            process = self.start(command)
            if cgroup:
                (cgroup / "cgroup.procs").write_text(str(process.pid))
            wait_until_answers(base + "/healthz", process)
        return base

    def cpu_cgroup(self, name: str, cpu_percent: int) -> Path:
        cgroup = CPU_CGROUPS / f"{os.getpid()}-{name}"
        cgroup.mkdir(parents=True)
        (cgroup / "cpu.cfs_quota_us").write_text(str(int((cgroup / "cpu.cfs_period_us").read_text()) * cpu_percent // 100))
        self.cgroups.append(cgroup)
        return cgroup

    def nginx(self, upstreams: list[str], keepalive: int = 16) -> str:
        """nginx balancing over the upstream base URLs, keep-alive to them unless 0; its base URL."""
        port = free_port()
        prefix = self.workdir / f"nginx-{port}"
        prefix.mkdir()
        servers = " ".join(f"server {u.removeprefix('http://')};" for u in upstreams)
        upstream_keepalive = f"keepalive {keepalive};" if keepalive else ""
        connection = '""' if keepalive else "close"
        (prefix / "nginx.conf").write_text(f"""
            daemon off;
            pid {prefix}/nginx.pid;
            error_log {prefix}/error.log;
            events {{ worker_connections 4096; }}
            http {{
                access_log off;
                client_body_temp_path {prefix}/body;
                proxy_temp_path {prefix}/proxy;
                upstream app {{ {servers} {upstream_keepalive} }}
                server {{
                    listen 127.0.0.1:{port};
                    location / {{
                        proxy_pass http://app;
                        proxy_http_version 1.1;
                        proxy_set_header Connection {connection};
                        proxy_next_upstream off;
                    }}
                }}
            }}
        """)
        process = self.start(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
        base = f"http://127.0.0.1:{port}"
        wait_until_answers(base + "/healthz", process)
        return base

    def balancer(self, app_port: int, role_vars: dict, app_hosts: tuple = ("127.0.0.1",)) -> str:
        """nginx with the balancer role's own nginx.conf (rendered by Ansible from the role's
        defaults and role_vars), in front of app hosts: turnomatic on each app_hosts:app_port."""
        workdir = self.workdir / f"balancer-{app_port}"
        workdir.mkdir()
        # The balancer listens on every address: its port must be free on all of them.
        port, status_port = free_port("0.0.0.0"), free_port()
        variables = {"balancer_port": port, "balancer_status_port": status_port,
                     "balancer_app_port": app_port, **role_vars}
        render_balancer_config(workdir, variables, app_hosts={f"app-{n}": host for n, host in enumerate(app_hosts, 1)})
        process = self.start(["nginx", "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"])
        base = f"http://127.0.0.1:{port}"
        wait_until_answers(base + "/healthz", process)
        return base
