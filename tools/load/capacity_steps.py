"""The construction steps side by side, in one run: the maximum load under the SLO and
its p99 (turnoload, open loop, every ticket checked) of

  reference      the course author's Node.js server (tools/bench/reference_server.mjs:
                 http.createServer + node-redis INCR), one process, local redis-server
  memory         one `turnomatic serve` process, memory store
  local redis    one `turnomatic serve` process, local redis-server
  one app VM     the lab: a balancer, one app VM (the other drained), Redis on its VM
  fleet          the lab: the whole fleet, both balancers as turnomatic.lab resolves
                 at the lab's name server (DNS round robin)

Rows alternate within each round, so that the machine's other load falls on all of
them alike; the table gives each row's maximum per round, the median, the p99 at that
maximum and the ratio to the reference's median. On a machine too busy for the
open-loop generator to keep its schedule (its steps are then "generator late", not
judged), `--measure wrk` gives each row's saturated throughput instead (wrk, closed
loop, 32 connections per target: robust on a busy machine, but no SLO). The loopback processes get the
thread count the turnomatic role deploys. Not in CI: about 2 minutes per row and round.

    make capacity-steps [STEPS_ARGS="--rounds 2 --rows reference,memory,local-redis"]

The lab rows need the converged lab (make up).
"""

import argparse
import json
import statistics
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.support.lab import lab_facts
from tests.support.paths import OUTPUT, REPO
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.waiting import wait_until_answers
from tools.bench.lab_app_cpu import wrk_all
from tools.load import turnoload
from tools.load.lab_capacity import LAB_INVENTORY, VM_CGROUPS, balancers_with

REFERENCE_SERVER = REPO / "tools" / "bench" / "reference_server.mjs"
ROLE_DEFAULTS = REPO / "roles" / "turnomatic" / "defaults" / "main.yml"
ROWS = ("reference", "memory", "local-redis", "one-app-vm", "fleet")
LABELS = {
    "reference": "reference: Node.js http + node-redis INCR, 1 process, local Redis",
    "memory": "turnomatic, 1 process, memory store",
    "local-redis": "turnomatic, 1 process, Redis on the same host",
    "one-app-vm": "turnomatic, 1 app VM (lab), Redis on its own VM",
    "fleet": "turnomatic, the whole lab fleet through turnomatic.lab",
}


def role_threads() -> str:
    return str(yaml.safe_load(ROLE_DEFAULTS.read_text())["turnomatic_threads"])


def reference(lo: Processes, redis_url: str) -> str:
    port = free_port()
    process = lo.start(["node", str(REFERENCE_SERVER), "--port", str(port), "--redis", redis_url])
    base = f"http://127.0.0.1:{port}"
    wait_until_answers(base + "/turno/reference-up", process)
    return base


def fleet_targets() -> str:
    """Both balancers, as the lab's name server answers turnomatic.lab (the generator on
    this machine does not use the lab's resolver)."""
    lab = lab_facts()
    name_server = lab.address(lab.group("dns")[0])
    answer = subprocess.run(["dig", "+short", f"@{name_server}", "turnomatic.lab", "A"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.split()
    if not answer:
        raise SystemExit(f"turnomatic.lab: no address from {name_server}")
    return ",".join(f"http://{address}:7017" for address in sorted(answer))


@contextmanager
def target(row: str, workdir: Path):
    if row in ("one-app-vm", "fleet"):
        lab = lab_facts()
        if row == "fleet":
            yield fleet_targets()
            return
        apps = lab.group("app")
        with balancers_with(LAB_INVENTORY, balancer_drained_hosts=apps[1:]):
            yield f"http://{lab.address(lab.group('lb')[0])}:7017"
        return
    with Processes(workdir) as lo:
        if row == "reference":
            yield reference(lo, lo.redis())
        elif row == "memory":
            yield lo.turnomatic("memory://", "--threads", role_threads())
        else:
            yield lo.turnomatic(lo.redis(), "--threads", role_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows, of {', '.join(ROWS)}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ladder", default="--rates 250,500,1000,1500,2000,3000,4000,6000,8000 --step-seconds 5",
                        help="turnoload step options, the same for every row")
    parser.add_argument("--measure", choices=["ladder", "wrk"], default="ladder",
                        help="ladder: turnoload's maximum load under the SLO; wrk: saturated req/s")
    parser.add_argument("--seconds", type=int, default=8, help="wrk seconds per row and round")
    parser.add_argument("--out", type=Path, default=OUTPUT / "capacity-steps")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    found = {row: [] for row in rows}
    for round_number in range(1, args.rounds + 1):
        for row in rows:
            print(f"== round {round_number}: {LABELS[row]}", flush=True)
            out = args.out / f"round{round_number}" / row
            with tempfile.TemporaryDirectory(prefix="turnomatic-steps-") as workdir, target(row, Path(workdir)) as url:
                if args.measure == "wrk":
                    urls = [f"{base}/turno/steps-{round_number}" for base in url.split(",")]
                    found[row].append((round(wrk_all(urls, args.seconds, 32) / args.seconds), None, None))
                    print(f"   {found[row][-1][0]} req/s (wrk)", flush=True)
                    continue
                cgroups = ["--vm-cgroups", VM_CGROUPS] if row in ("one-app-vm", "fleet") else []
                status = turnoload.main(["--target", url, "--out", str(out), "--label", LABELS[row], *cgroups,
                                         *args.ladder.split()])
            if status != 0:
                raise SystemExit(f"{row}: ticket violations, see {out / 'report.md'}")
            result = json.loads((out / "steps.json").read_text())
            at_max = next((s for s in result["steps"] if s["offered"] == result["max_load"]), {})
            late = [s["offered"] for s in result["steps"] if s["verdict"] == "generator late"]
            found[row].append((result["max_load"] or 0, at_max.get("p99"), late[0] if late else None))
            print(f"   max load {found[row][-1][0]} req/s, p99 {turnoload.fmt(at_max.get('p99'))} ms", flush=True)
    reference_median = statistics.median(m for m, _, _ in found["reference"]) if "reference" in found else None
    if args.measure == "wrk":
        print("wrk: closed loop, no SLO: saturated throughput, not a maximum load")
    measure = "wrk req/s (saturated)" if args.measure == "wrk" else "max load req/s"
    lines = [f"| step | {measure}, per round | median | p99 at the max, ms | ratio to the reference |",
             "|---|---|---:|---|---:|"]
    for row in rows:
        loads = [m for m, _, _ in found[row]]
        median = statistics.median(loads)
        ratio = f"{median / reference_median:.2f}" if reference_median else "–"
        notes = [f"{m} (generator late from {late})" if late else str(m) for m, _, late in found[row]]
        lines.append(f"| {LABELS[row]} | {', '.join(notes)} | {median:g} | "
                     f"{', '.join(turnoload.fmt(p) for _, p, _ in found[row])} | {ratio} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steps.md").write_text(table + "\n")
    print(table)
    print(f"reports: {args.out}/round*/<row>/report.md")


if __name__ == "__main__":
    main()
