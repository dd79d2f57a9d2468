"""graphite-web's own UI, whole, in a browser: the composer draws a turnomatic graph.

Debian's carbon-cache and graphite-web run on loopback (no lab needed) behind
nginx with the graphite role's configuration, which serves the UI's static
files from Debian's package and hands the rest to graphite-web. Headless
Chromium opens the composer on a turnomatic graph; its screenshot is kept in
tests/output/monitoring/graphite-composer.png.
"""
import math
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.support.alerting import aligned_now
from tests.support.paths import OUTPUT
from tests.support.waiting import wait_until

OUTPUT_DIR = OUTPUT / "monitoring"
STATIC = Path("/usr/share/graphite-web/static")
TARGET = "aliasByNode(stats.counters.turnomatic.*.requests.*.rate, 3, 5)"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui(loopback_graphite, loopback_graphite_ui):
    """The UI's URL, with 30 minutes of two app nodes' request rates stored."""
    line_port, _ = loopback_graphite
    end = aligned_now()
    lines = []
    for step in range(180):
        at = end - (179 - step) * 10
        for host, base in (("app1", 120), ("app2", 80)):
            lines.append(f"stats.counters.turnomatic.{host}.requests.200.rate "
                         f"{base + 40 * math.sin(step / 15):.2f} {at}\n")
        lines.append(f"stats.counters.turnomatic.app1.requests.503.rate {20 if 90 <= step < 110 else 0} {at}\n")
    with socket.create_connection(("127.0.0.1", line_port), timeout=10) as sock:
        sock.sendall("".join(lines).encode())
    stored = wait_until(lambda: b"app2" in urllib.request.urlopen(
        f"{loopback_graphite_ui}/metrics/find?query=stats.counters.turnomatic.*", timeout=10).read(), 30, 0.5)
    assert stored, "carbon did not store the turnomatic metrics"
    return loopback_graphite_ui


def chromium(*arguments):
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: run make setup"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
                              capture_output=True, text=True, timeout=180, check=True).stdout


def composer_url(ui):
    query = urllib.parse.urlencode([("target", TARGET), ("from", "-30min"), ("width", "900"), ("height", "450"),
                                    ("title", "turnomatic requests/s by node and status")])
    return f"{ui}/composer/?{query}"


@pytest.mark.parametrize("name", ["js/ext/ext-all.js", "js/composer_widgets.js", "js/browser.js",
                                  "css/default.css", "img/graphite.png"])
def test_the_static_files_are_served_as_debian_ships_them(ui, name):
    with urllib.request.urlopen(f"{ui}/static/{name}", timeout=10) as answer:
        assert answer.status == 200
        assert answer.read() == (STATIC / name).read_bytes()


def test_the_composer_page_loads_only_files_that_are_served(ui):
    with urllib.request.urlopen(composer_url(ui), timeout=30) as answer:
        page = answer.read().decode()
    assets = sorted(set(re.findall(r'(?:src|href)="(/static/[^"?]+)', page)))
    assert assets, "the composer page loads no static file"
    for asset in assets:
        with urllib.request.urlopen(f"{ui}{asset}", timeout=10) as answer:
            assert answer.status == 200, asset


def test_chromium_shows_the_composer_with_a_turnomatic_graph(ui):
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    url = composer_url(ui)
    # Scripts run for up to 20 s of virtual time: ExtJS builds the page, the
    # composer asks /render for the graph.
    budget = "--virtual-time-budget=20000"
    dom = chromium(budget, "--dump-dom", url)
    assert "Graphite Composer" in dom, "no composer window in the page"
    viewer = re.search(r'<img id="image-viewer" src="([^"]*)"', dom)
    assert viewer and "turnomatic" in urllib.parse.unquote(viewer.group(1)), "the composer shows no turnomatic graph"
    assert 'class="x-tree' in dom, "no metrics tree in the page"
    path = OUTPUT_DIR / "graphite-composer.png"
    path.unlink(missing_ok=True)
    chromium(budget, "--window-size=1280,800", f"--screenshot={path}", url)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        colours = len(rgb.getcolors(maxcolors=1 << 24))
        # The graph's lines: strongly coloured pixels (text, frames and the grid are grey or faint).
        pixels = rgb.tobytes()
        coloured = sum(1 for i in range(0, len(pixels), 3) if max(pixels[i:i + 3]) - min(pixels[i:i + 3]) > 96)
    print(f"screenshot: {path} ({colours} colours, {coloured} strongly coloured pixels)")
    assert colours > 50, f"{path} is nearly uniform ({colours} colours)"
    assert coloured > 500, f"no graph drawn in {path} ({coloured} strongly coloured pixels)"
