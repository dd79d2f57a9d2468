"""Where a saturated turnomatic process spends its CPU: py-spy on one `turnomatic serve`
(Redis store on a local redis-server, metrics on) while wrk keeps it busy.

Writes OUT.svg (py-spy's flame graph, interactive in a browser), OUT.png (the same
drawn by headless Chromium, for the docs) and OUT.txt (the share of samples per
function, the frames that include it). Samples are taken only from the thread that
holds the GIL (py-spy --gil): what uses the CPU, not what waits for Redis.

    make profile-app PROFILE_OUT=docs/images/profile-after [PROFILE_ARGS="--threads 8"]
    .venv/bin/python -m tools.bench.profile_app --out tests/output/profile/app -- --threads 2

Arguments after `--` go to `turnomatic serve`. With --source DIR the app's package is
imported from DIR (a checkout of an older commit's app/, for a before/after picture).
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.paths import BIN
from tests.support.ports import free_port
from tools.bench.rounds import redis_and_servers, statsd_sink
from tests.support.waiting import wait_until_answers

SAMPLES_PER_SECOND = 200
WIDTH = 1600
HEIGHT = 560
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/output/profile/app"), help="path without extension")
    parser.add_argument("--seconds", type=int, default=15, help="seconds sampled (default 15)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--source", type=Path, help="a directory holding the turnomatic package to run instead")
    parser.add_argument("serve_args", nargs="*", help="`turnomatic serve` options (after --)")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server", "chromium"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool} (make setup installs it)")
    if not (BIN / "py-spy").exists():
        sys.exit("needs py-spy in the virtualenv (requirements.txt; make setup)")
    return args


def shares(raw: Path, top: int = 45) -> str:
    """py-spy's raw (collapsed) stacks -> 'share% function (file)' per function, inclusive."""
    inclusive, total = collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        # A frame is "function (path:line)"; one count per function per stack (recursion).
        functions = {frame.split(":")[0].replace(os.sep.join(["site-packages", ""]), "") for frame in stack.split(";")}
        for function in functions:
            inclusive[function] += int(count)
    return "\n".join([f"{total} samples (GIL holder only)"] + [
        f"{100 * count / total:5.1f}% {function})" for function, count in inclusive.most_common(top)])


def screenshot(svg: Path, png: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
                        f"--screenshot={png.resolve()}", svg.resolve().as_uri()],
                       capture_output=True, timeout=180, check=True)


def main():
    args = parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    svg, png, raw, txt = (args.out.with_suffix(suffix) for suffix in (".svg", ".png", ".raw", ".txt"))
    _sink, statsd = statsd_sink()
    env = dict(os.environ)
    if args.source:
        env["PYTHONPATH"] = str(args.source.resolve())
    with redis_and_servers("turnomatic-profile-") as (redis_url, processes):
        port = free_port()
        app = subprocess.Popen([sys.executable, "-m", "turnomatic", "serve", "--port", str(port), "--store", redis_url,
                                "--statsd", statsd, *args.serve_args], env=env, stderr=subprocess.DEVNULL)
        processes.append(app)
        url = f"http://127.0.0.1:{port}/turno/profile"
        wait_until_answers(url, app)
        load = subprocess.Popen(["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds + 4}s", url],
                                stdout=subprocess.PIPE, text=True)
        processes.append(load)
        common = ["record", "--pid", str(app.pid), "--gil", "--nonblocking", "--rate", str(SAMPLES_PER_SECOND)]
        # Two recordings one after the other, both under load: the picture and the figures.
        subprocess.run([str(BIN / "py-spy"), *common, "--duration", str(args.seconds // 2), "--format", "flamegraph",
                        "--output", str(svg)], check=True, capture_output=True, timeout=args.seconds + 60)
        subprocess.run([str(BIN / "py-spy"), *common, "--duration", str(args.seconds - args.seconds // 2),
                        "--format", "raw", "--output", str(raw)], check=True, capture_output=True,
                       timeout=args.seconds + 60)
        output = load.communicate(timeout=60)[0]
    screenshot(svg, png)
    rate = next((line for line in output.splitlines() if line.startswith("Requests/sec")), "")
    txt.write_text(f"turnomatic serve {' '.join(args.serve_args)}; wrk -c{args.connections}: {rate}\n" + shares(raw) + "\n")
    raw.unlink()
    print(txt.read_text())
    print(f"flame graph: {svg}, {png}")


if __name__ == "__main__":
    main()
