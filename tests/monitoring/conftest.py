"""Fixtures of the monitoring tests.

`rules_file` renders the grafana role's alert rule template from the rules'
source of truth (roles/grafana/files/alert-rules.yml), the way the role does;
`loopback_graphite` runs Debian's carbon-cache and graphite-web on loopback
with the graphite role's storage schemas, for tests that need a real Graphite
but not the lab; `loopback_graphite_ui` puts nginx with the graphite role's
configuration in front of it, as on the monitoring host.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support.alerting import alert_rules_source
from tests.support.ansible import render_role_template
from tests.support.paths import ROLES
from tests.support.ports import free_port
from tests.support.waiting import wait_until


@pytest.fixture(scope="session")
def grafana_provisioning(tmp_path_factory):
    """Every provisioning file of the grafana role, rendered from its defaults: {relative path: Path}."""
    out = tmp_path_factory.mktemp("grafana-provisioning")
    templates = sorted(p.relative_to(ROLES / "grafana/templates")
                       for p in (ROLES / "grafana/templates").rglob("*.yaml.j2"))
    rendered = {}
    for template in templates:
        name = str(template)[: -len(".j2")]
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        rendered[name] = render_role_template("grafana", template, out / name,
                                              {"grafana_alert_rules": alert_rules_source()})
    return rendered


@pytest.fixture(scope="session")
def rules_file(grafana_provisioning):
    return grafana_provisioning["alerting/turnomatic-rules.yaml"]


@pytest.fixture(scope="session")
def loopback_graphite(tmp_path_factory):
    """carbon-cache and graphite-web on loopback; yields (carbon line port, graphite-web URL)."""
    if not shutil.which("carbon-cache") or not Path("/usr/lib/python3/dist-packages/graphite").is_dir():
        pytest.fail("graphite-carbon and graphite-web are not installed: run make setup")
    base = tmp_path_factory.mktemp("graphite")
    for name in ("whisper", "log", "conf"):
        (base / name).mkdir()
    for conf in ("storage-schemas.conf", "storage-aggregation.conf"):
        render_role_template("graphite", f"{conf}.j2", base / "conf" / conf)
    line_port, pickle_port, cache_port, web_port = free_port(), free_port(), free_port(), free_port()
    (base / "conf/carbon.conf").write_text(f"""[cache]
STORAGE_DIR = {base}/
LOCAL_DATA_DIR = {base}/whisper/
CONF_DIR = {base}/conf/
LOG_DIR = {base}/log/
PID_DIR = {base}/
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = 10000
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {cache_port}
""")
    (base / "conf/local_settings.py").write_text(f"""SECRET_KEY = "loopback-test-only-not-a-secret-0123456789"
STORAGE_DIR = "{base}/whisper"
WHISPER_DIR = "{base}/whisper"
LOG_DIR = "{base}/log"
INDEX_FILE = "{base}/search_index"
CARBONLINK_HOSTS = ["127.0.0.1:{cache_port}"]
DATABASES = {{"default": {{"NAME": "{base}/graphite.db", "ENGINE": "django.db.backends.sqlite3"}}}}
""")
    env = dict(os.environ, PYTHONPATH=str(base / "conf"), DJANGO_SETTINGS_MODULE="graphite.settings",
               GRAPHITE_SETTINGS_MODULE="local_settings")
    subprocess.run(["graphite-manage", "migrate", "--run-syncdb", "--noinput"], env=env, check=True,
                   capture_output=True, timeout=300)
    log = (base / "log/processes.log").open("w")
    carbon = subprocess.Popen(["carbon-cache", f"--config={base}/conf/carbon.conf", f"--pidfile={base}/carbon.pid",
                               f"--logdir={base}/log", "--nodaemon", "start"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    web = subprocess.Popen(["gunicorn", "--bind", f"127.0.0.1:{web_port}", "--workers", "1",
                            "graphite.wsgi:application"], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    url = f"http://127.0.0.1:{web_port}"
    try:
        assert wait_until(lambda: socket.create_connection(("127.0.0.1", line_port), timeout=1).close() or True,
                          60, 0.2), "carbon-cache did not listen within 60 s"
        assert wait_until(lambda: urllib.request.urlopen(f"{url}/metrics/find?query=*", timeout=5).status == 200,
                          60, 0.2), "graphite-web did not answer within 60 s"
        yield line_port, url
    finally:
        for process in (web, carbon):
            os.killpg(process.pid, signal.SIGTERM)
        for process in (web, carbon):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="session")
def loopback_graphite_ui(loopback_graphite, tmp_path_factory):
    """nginx with the graphite role's configuration in front of loopback_graphite's
    graphite-web: the static files from Debian's package, the rest proxied; yields its URL."""
    _, web_url = loopback_graphite
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    base = tmp_path_factory.mktemp("graphite-nginx")
    port = free_port()
    conf = render_role_template("graphite", "graphite-nginx.conf.j2", base / "nginx.conf", {
        "graphite_web_bind_address": "127.0.0.1", "graphite_web_port": port,
        "graphite_web_gunicorn_port": int(web_url.rsplit(":", 1)[1])})
    # The host's own pid and log files stay the host's; nothing else differs.
    text = conf.read_text()
    for directive, path in (("pid", "nginx.pid"), ("error_log", "error.log warn"), ("access_log", "access.log")):
        text, count = re.subn(rf"^(\s*){directive} [^;]*;", rf"\g<1>{directive} {base}/{path};", text, flags=re.M)
        assert count == 1, f"the graphite role's nginx.conf has no single {directive} line"
    conf.write_text(text)
    process = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                               stderr=(base / "stderr.log").open("w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: urllib.request.urlopen(f"{url}/static/js/composer.js", timeout=5).status == 200,
                          30, 0.2), f"nginx did not serve graphite-web's static files: {(base / 'error.log').read_text() if (base / 'error.log').exists() else ''}"
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
