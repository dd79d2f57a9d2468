"""turnoload: find the maximum load of a turnomatic target, checking every ticket.

Runs open-loop steps of increasing rate (npm loadtest through generate.mjs),
checks every response with the ticket ledger (per id exactly 1..n, across all
steps), and writes a Markdown report, a PNG plot and the raw figures.

Maximum load = the highest offered rate whose step served at least 98 % of it
(200s per second), with no error of any kind and p99 latency, measured from
when each request was due, under the SLO.

    .venv/bin/python -m tools.load.turnoload --target http://127.0.0.1:7017 \
        --start 200 --step 200 --max-rate 3000 --step-seconds 10 --out tests/output/load

Exit status: 0 when every ticket and every unexpected-value answer checked out,
1 when something did not, 2 on a usage or setup error. The capacity found is a
figure in the report, not a pass/fail.
"""

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.lab import lab_facts
from tests.support.tickets import TicketLedger
from tools.load import vmcpu
from tools.load.odd_requests import run_odd_requests

HERE = Path(__file__).resolve().parent
GENERATOR = HERE / "generate.mjs"
SERVED_SHARE = 0.98
# A step whose requests went out later than this (p99) measured the machine the
# generator runs on, not the target: it is reported, not judged.
GENERATOR_LATE_LIMIT_MS = 10
GENERATOR_NICE = -10
PAUSE_BETWEEN_STEPS_S = 2
# The failover fence's keys (app/turnomatic/turnomatic.lua): a number is its counter
# plus turno::failovers x turno::fence_skip.
FENCE_KEYS = ("turno::failovers", "turno::fence_skip")


def percentile(sorted_values: list[float], share: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(share * len(sorted_values)))
    return sorted_values[index]


def step_rates(args) -> list[int]:
    if args.rates:
        return [int(r) for r in args.rates.split(",")]
    return list(range(args.start, args.max_rate + 1, args.step))


def raise_priority() -> None:
    """In the generator's process: a higher CPU priority where allowed (root), so that
    on a machine shared with the target or other work it still sends on schedule."""
    try:
        os.nice(GENERATOR_NICE)
    except PermissionError:
        pass


def run_generator(target: str, rate: int, seconds: float, ids: list[str], timeout_ms: int,
                  connections: int, raw_file: Path, label: str) -> dict:
    """One step: the generator's summary; its per-request records are in raw_file."""
    requests = max(1, round(rate * seconds))
    command = ["node", str(GENERATOR), "--url", target, "--rate", str(rate),
               "--requests", str(requests), "--ids", ",".join(ids),
               "--timeout-ms", str(timeout_ms), "--connections", str(connections),
               "--out", str(raw_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=raise_priority)
    for line in process.stderr:  # progress, once a second
        print(f"{label}{line.rstrip()}", flush=True)
    summary = process.stdout.read()
    if process.wait() not in (0, 3):
        raise RuntimeError(f"generator failed (exit {process.returncode}): {summary}")
    return json.loads(summary)


def measure_step(all_records: list[dict], rate: int, seconds: float, warmup_s: float,
                 slo_ms: float) -> dict:
    """Figures of one step, leaving out the requests due in its first warmup_s seconds
    (the generator opens its connections then; their tickets are still checked)."""
    records = [r for r in all_records if r["due_ms"] >= warmup_s * 1000]
    seconds -= warmup_s
    served = sorted(r["latency_ms"] for r in records if r["status"] == 200)
    refused = sorted(r["latency_ms"] for r in records if r["status"] in (429, 503))
    late = sorted(r["send_late_ms"] for r in records)
    statuses: dict[str, int] = {}
    for r in records:
        key = str(r["status"]) if r["status"] else "no answer"
        statuses[key] = statuses.get(key, 0) + 1
    last_end_s = max((r["end_ms"] for r in records), default=0) / 1000 - warmup_s
    achieved = len(served) / max(seconds, last_end_s)
    errors = len(records) - len(served)
    p99 = percentile(served, 0.99)
    generator_late_p99 = percentile(late, 0.99)
    if generator_late_p99 is not None and generator_late_p99 > GENERATOR_LATE_LIMIT_MS:
        verdict = "generator late"
    elif achieved >= SERVED_SHARE * rate and errors == 0 and p99 is not None and p99 < slo_ms:
        verdict = "pass"
    else:
        verdict = "FAIL"
    return {
        "offered": rate,
        "sent": len(records),
        "ok": len(served),
        "errors": errors,
        "statuses": statuses,
        "achieved": achieved,
        "refused_per_s": len(refused) / max(seconds, last_end_s),
        "served_share": achieved / rate,
        "p50": percentile(served, 0.50),
        "p90": percentile(served, 0.90),
        "p99": p99,
        "max": served[-1] if served else None,
        "refused_p99": percentile(refused, 0.99),
        "generator_late_p99": generator_late_p99,
        "verdict": verdict,
        "passed": verdict == "pass",
    }


def fmt(value, digits=1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_report(meta: dict, steps: list[dict], max_load: int | None, ledger: dict,
                    overload: dict | None, odd: dict | None) -> str:
    lines = [
        f"# turnomatic load report: {meta['label']}",
        "",
        f"- target `{meta['target']}`, {meta['started']}; load average of the load machine "
        f"{meta['load_average_before']:.1f} before, {meta['load_average_after']:.1f} after",
        f"- {meta['ids']} ids, {meta['step_seconds']} s measured per step after "
        f"{meta['warmup_seconds']} s of warm-up, open loop (npm loadtest) on "
        f"{meta['connections']} keep-alive connections, latency measured from when each "
        f"request was due",
        f"- SLO: p99 < {meta['slo_ms']} ms; a step passes when ≥ {SERVED_SHARE:.0%} of the offered "
        f"rate is served with 0 errors and p99 under the SLO; a step whose generator sent "
        f"late (p99 > {GENERATOR_LATE_LIMIT_MS} ms) is not judged",
        "",
        "| offered req/s | sent | 200 | errors | served req/s | served % | p50 ms | p90 ms "
        "| p99 ms | max ms | generator late p99 ms | step | CPU % of a core (throttled % of periods) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in steps:
        errors = s["errors"] if not s["errors"] else (
            f"{s['errors']} ({', '.join(f'{k}: {v}' for k, v in s['statuses'].items() if k != '200')})")
        lines.append(
            f"| {s['offered']} | {s['sent']} | {s['ok']} | {errors} | {s['achieved']:.0f} "
            f"| {100 * s['served_share']:.1f} | {fmt(s['p50'])} | {fmt(s['p90'])} | {fmt(s['p99'])} "
            f"| {fmt(s['max'])} | {fmt(s['generator_late_p99'])} | {s['verdict']} | {cpu_cell(s['cpu'])} |")
    lines += ["", f"**Maximum load: {max_load} req/s**" if max_load else
              "**Maximum load: no step passed**", ""]
    lines += [
        "## Tickets",
        "",
        f"{ledger['tickets']} tickets on {ledger['ids']} ids: {ledger['duplicates']} duplicate(s), "
        f"{ledger['missing']} missing number(s), {ledger['unknown_outcomes']} request(s) with an "
        f"unknown outcome (no answer or 5xx), {ledger['malformed']} malformed answer(s).",
        "",
    ]
    lines += [f"- VIOLATION {v}" for v in ledger["violations"]] or ["No violation: per id exactly 1..n."]
    if overload:
        s = overload["step"]
        lines += [
            "", "## Overload", "",
            f"{s['offered']} req/s offered for {overload['seconds']} s "
            f"({overload['factor']}× the maximum): {s['achieved']:.0f} req/s served, "
            f"statuses {s['statuses']}, p99 of served {fmt(s['p99'])} ms, "
            f"p99 of refusals (429/503) {fmt(s['refused_p99'])} ms.",
        ]
    if odd:
        lines += ["", "## Unexpected values under load", "",
                  f"During the step at {odd['rate']} req/s: {len(odd['results'])} odd requests.", "",
                  "| target | request | expected | got | |", "|---|---|---|---|---|"]
        for r in odd["results"]:
            lines.append(f"| {r['target']} | {r['name']} | {r['expected']} | {r['status']} | "
                         f"{'ok' if r['ok'] else 'WRONG'} |")
        lines.append(f"\nHealth after the run: {odd['health']}")
    return "\n".join(lines) + "\n"


def cpu_cell(cpu: dict) -> str:
    """generator 35, app1 24 (90), …: the VMs that used at least 5 % of a core."""
    cells = [f"generator {cpu['generator']}"]
    for name, vm in cpu.items():
        if name != "generator" and vm["cpu_percent"] >= 5:
            cells.append(f"{name} {vm['cpu_percent']} ({vm['throttled_percent']})")
    return ", ".join(cells)


def plot(steps: list[dict], max_load: int | None, slo_ms: float, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    offered = [s["offered"] for s in steps]
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(8, 8), sharex=True)
    top.plot(offered, offered, ":", color="grey", label="offered")
    top.plot(offered, [s["achieved"] for s in steps], "o-", label="served (200/s)")
    if any(s["refused_per_s"] for s in steps):
        top.plot(offered, [s["refused_per_s"] for s in steps], "s-", label="refused (429, 503 /s)")
    top.set_ylabel("requests per second")
    top.set_title(title)
    for name in ("p50", "p90", "p99", "max"):
        bottom.plot(offered, [s[name] for s in steps], "o-", label=name)
    bottom.axhline(slo_ms, color="red", linestyle="--", label=f"SLO {slo_ms:g} ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency from due time, ms")
    bottom.set_xlabel("offered load, requests per second")
    for axes in (top, bottom):
        if max_load:
            axes.axvline(max_load, color="green", alpha=0.5, label=f"max load {max_load}")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def redis_seeder(args):
    """seed(key, value) on the target's Redis, or None without --seed-redis: the counter
    `key` set so that its next number is value + 1. A counter is kept below its numbers
    by the failover fence's offset (turno::failovers x turno::fence_skip, 0 without a
    fence), which is read first. The URL is as seen from --seed-ssh (a host that may
    reach Redis, such as the Redis host itself) when given (a lab host: SSH as the lab's
    inventory says), else from here; the password comes from the URL or
    --seed-password-file."""
    if not args.seed_redis:
        return None
    url = urlsplit(args.seed_redis)
    password = url.password or ""
    if args.seed_password_file:
        password = Path(args.seed_password_file).read_text().strip()
    if not args.seed_ssh:
        import redis
        client = redis.Redis(host=url.hostname, port=url.port or 6379, db=int(url.path[1:] or 0),
                             username=url.username, password=password or None)

        def seed_here(key, value):
            failovers, skip = (int(number or 0) for number in client.mget(FENCE_KEYS))
            client.set(key, value - failovers * skip)
        return seed_here

    def seed(key, value):
        # The password goes over stdin, never on a command line.
        cli = (f"redis-cli --no-auth-warning --raw -h {url.hostname} -p {url.port or 6379} -n {url.path[1:] or 0}"
               + (f" --user {url.username}" if url.username else ""))
        remote = (f"read -r auth; export REDISCLI_AUTH=\"$auth\"; failovers=$({cli} GET {FENCE_KEYS[0]}); "
                  f"skip=$({cli} GET {FENCE_KEYS[1]}); "
                  f"{cli} SET {key} $(({value} - ${{failovers:-0}} * ${{skip:-0}}))")
        lab_facts().ssh(args.seed_ssh, remote, input=password + "\n", timeout=30)
    return seed


def odd_on_every_target(args, delay_s: float) -> dict:
    """The unexpected values on every target (each balancer), after delay_s; one result."""
    seed = redis_seeder(args)
    results, health = [], {}
    for number, target in enumerate(args.target.split(",")):
        found = run_odd_requests(target, delay_s=delay_s if number == 0 else 0, seed=seed)
        results += [{**r, "target": target} for r in found["results"]]
        health[target] = found["health"]
    return {"results": results, "health": health,
            "passed": all(r["ok"] for r in results)
            and all(set(h.values()) == {200} for h in health.values())}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True,
                        help="base URL: the DNS name, a balancer or one app node, e.g. http://turnomatic.lab:7017; "
                             "several, comma-separated, get the requests at random (both balancers, as the DNS spreads clients)")
    parser.add_argument("--rates", help="comma-separated step rates (req/s); else --start/--step/--max-rate")
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--max-rate", type=int, default=2000)
    parser.add_argument("--step-seconds", type=float, default=10)
    parser.add_argument("--warmup-seconds", type=float, default=1,
                        help="added before each step; requests due then are checked, not measured")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive connections of the generator; requests due while all are busy queue")
    parser.add_argument("--stop-after-failures", type=int, default=2,
                        help="stop after this many failing steps in a row (bounds the overload)")
    parser.add_argument("--ids", type=int, default=32, help="distinct ids, fresh for every run")
    parser.add_argument("--slo-ms", type=float, default=50)
    parser.add_argument("--timeout-ms", type=int, default=5000)
    parser.add_argument("--overload-factor", type=float, default=0,
                        help="after the steps, offer this multiple of the maximum load (e.g. 2)")
    parser.add_argument("--overload-seconds", type=float, default=20)
    parser.add_argument("--odd", action="store_true",
                        help="send unexpected values during the second step")
    parser.add_argument("--seed-redis", metavar="URL",
                        help="with --odd: the target's Redis (redis://user@host:port/db), to seed counters next to 2^53-1")
    parser.add_argument("--seed-password-file", metavar="FILE", help="the password for --seed-redis")
    parser.add_argument("--seed-ssh", metavar="LAB_HOST",
                        help="seed through redis-cli on this lab host, by its inventory name (the Redis host: "
                             "only app hosts reach its port)")
    parser.add_argument("--vm-cgroups", type=Path, metavar="DIR",
                        help="cgroup v1 cpu directory of the lab's VMs (/sys/fs/cgroup/cpu/turnomatic-lab): "
                             "CPU and throttling per VM and step, to tell what saturates")
    parser.add_argument("--label", default="", help="a name for this run in the report")
    parser.add_argument("--out", type=Path, default=Path("tests/output/load"))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not shutil.which("node") or not (HERE / "node_modules" / "loadtest").is_dir():
        print("turnoload: needs node and npm loadtest: run `make setup`", file=sys.stderr)
        return 2
    run_id = datetime.now(timezone.utc).strftime("%H%M%S") + secrets.token_hex(2)
    ids = [f"load-{run_id}-{n}" for n in range(args.ids)]
    raw_dir = args.out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    meta = {"label": args.label or args.target, "target": args.target, "ids": args.ids,
            "step_seconds": args.step_seconds, "warmup_seconds": args.warmup_seconds,
            "connections": args.connections, "slo_ms": args.slo_ms, "run_id": run_id,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_before": os.getloadavg()[0]}
    ledger = TicketLedger()
    rates = step_rates(args)
    # The second step: always run (a run stops after two failing steps at the earliest).
    odd_step = min(2, len(rates)) if args.odd else None
    odd = None
    steps, failures_in_a_row = [], 0

    def run_step(rate: int, seconds: float, label: str) -> dict:
        raw_file = raw_dir / f"{len(steps) + 1:02d}-{rate}.jsonl"
        vms_before = vmcpu.sample(args.vm_cgroups) if args.vm_cgroups else {}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        window_start = time.monotonic()
        summary = run_generator(args.target, rate, seconds + args.warmup_seconds, ids,
                                args.timeout_ms, args.connections, raw_file, label)
        records = [json.loads(line) for line in raw_file.open()]
        for record in records:
            ledger.add(record)
        step = measure_step(records, rate, seconds + args.warmup_seconds, args.warmup_seconds,
                            args.slo_ms)
        step["generator"] = summary
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall_s = time.monotonic() - window_start
        step["cpu"] = {"generator": round(100 * (children.ru_utime + children.ru_stime
                                                 - children_before.ru_utime - children_before.ru_stime) / wall_s)}
        if args.vm_cgroups:
            step["cpu"].update(vmcpu.usage(vms_before, vmcpu.sample(args.vm_cgroups), wall_s))
        print(f"{label}{rate} req/s offered: {step['achieved']:.0f} served, errors {step['errors']}, "
              f"p99 {fmt(step['p99'])} ms -> {step['verdict']}", flush=True)
        return step

    for number, rate in enumerate(rates, 1):
        label = f"step {number}/{len(rates)}: "
        print(f"{label}{rate} req/s for {args.step_seconds:g} s", flush=True)
        if number == odd_step:
            odd_found = {}
            odd_thread = threading.Thread(target=lambda: odd_found.update(
                odd_on_every_target(args, delay_s=args.step_seconds / 4)))
            odd_thread.start()
        step = run_step(rate, args.step_seconds, label)
        if number == odd_step:
            odd_thread.join()
            odd = {"rate": rate, **odd_found}
        steps.append(step)
        failures_in_a_row = 0 if step["passed"] else failures_in_a_row + 1
        if failures_in_a_row >= args.stop_after_failures:
            print(f"stopping: {failures_in_a_row} steps in a row did not pass", flush=True)
            break
        time.sleep(PAUSE_BETWEEN_STEPS_S)

    max_load = max((s["offered"] for s in steps if s["passed"]), default=None)
    overload = None
    if args.overload_factor and max_load:
        rate = round(args.overload_factor * max_load)
        print(f"overload: {rate} req/s for {args.overload_seconds:g} s", flush=True)
        time.sleep(PAUSE_BETWEEN_STEPS_S)
        overload = {"factor": args.overload_factor, "seconds": args.overload_seconds,
                    "step": run_step(rate, args.overload_seconds, "overload: ")}

    meta["load_average_after"] = os.getloadavg()[0]
    tickets = ledger.summary()
    report = markdown_report(meta, steps, max_load, tickets, overload, odd)
    (args.out / "report.md").write_text(report)
    (args.out / "steps.json").write_text(json.dumps(
        {"meta": meta, "steps": steps, "max_load": max_load, "tickets": tickets,
         "overload": overload, "odd": odd}, indent=1))
    plot(steps, max_load, args.slo_ms, meta["label"], args.out / "load.png")
    print(report)
    print(f"written: {args.out / 'report.md'}, {args.out / 'load.png'}, {args.out / 'steps.json'}")
    odd_wrong = odd is not None and not odd["passed"]
    return 1 if tickets["violations"] or odd_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
