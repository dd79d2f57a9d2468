"""The autoscaler's proof on the lab: a bounded load ramp and the autoscaler acting on it.

Load comes from the lab's client host through the service's DNS name
(tests/fleet/ticket_checker.py with a paced --schedule): low, then well above what
the two app hosts serve, then low again. The autoscaler (python -m tools.autoscale)
runs beside it with short settings for the proof, given as --set overrides and never
as new defaults, and the app VMs capped at the profile's share of a core (the machine's 2
cores are shared: capped VMs make the app tier, not the machine, what saturates).
After the load it runs until the pool hosts have been removed again, then it is stopped.

Checked and reported: each decision's time; the host count over time; when each
scale-out was decided after the load rose (one interval + the warm-up at most, plus
the delay of the CPU data itself); the served rate against the offered rate after
the scale-outs; that scale-in began only after the stabilisation window; p99 before and
after each scale-out; every ticket (0 duplicates, gaps only where a request had no
answer) and no request failed while a host was being removed. Afterwards the fleet is
as the next suites expect: app3/app4 stopped, the balancers with app1/app2 only.

    make autoscale-proof                       # the full run (two hosts out and in)
    make autoscale-proof PROFILE=short          # one host out and in (about 6 min here; the lab test)

Writes tests/output/autoscale/<profile>/: report.md, figures.json, plot.png, raw.json
(every request, decision and action) and the autoscaler's log.
"""

import argparse
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from tests.support.lab import LAB_INVENTORY, SCALE_OUT_INVENTORY, lab_facts
from tests.support.paths import OUTPUT, REPO
from tests.support.tickets import TicketLedger
from tools.autoscale.actuate import Actuator, Ansible, PlaybookFailed
from tools.load.lab_capacity import VM_CGROUPS, app_cpu_capped

CHECKER = REPO / "tests" / "fleet" / "ticket_checker.py"
REMOTE_CHECKER = "/root/ticket_checker.py"
SERVICE_NAME = "turnomatic.lab"
# collectd reports every 10 s and Graphite's answer lags by up to one report: the
# CPU data a decision reads is this much older than the decision.
DATA_DELAY_SECONDS = 20
# After the last scale-out, served must reach this share of offered (per window).
SERVED_SHARE = 0.95
# Short lab settings for the proof (the inventory's stay as they are), and the load:
# low for low_seconds, high until the last host added has served follow_seconds past
# its warm-up (a scale-out takes as long as site.yml does: not known in advance), then
# low again until the pool hosts are out (at most after_seconds of load).
# app_cpu_percent: each app VM's CPU share during the run (% of a core), so that the
# app tier, not the machine, saturates: the current hosts serve the high load above the
# target utilisation, the hosts the profile allows serve it below.
PROFILES = {
    # Two scale-outs (app3, app4) and two scale-ins.
    "full": {
        "app_cpu_percent": 25,
        "settings": {"autoscale_interval_seconds": 10, "autoscale_warmup_seconds": 30,
                     "autoscale_stabilization_seconds": 90, "autoscale_window_seconds": 30,
                     "autoscale_min_points": 2, "autoscale_max_hosts": 4},
        "low": 60, "high": 500, "low_seconds": 60, "follow_seconds": 60, "after_seconds": 600,
        "deadline_seconds": 3600,
    },
    # One scale-out (app3) and its scale-in.
    "short": {
        # 20 %, not 25: on a fresh, quiet machine 400 req/s held two hosts at 25 % at
        # 0.60, the target itself (inside the tolerance: no scale-out in 9 minutes); at
        # 20 % that is 0.75, and three hosts serve it at about 0.5.
        "app_cpu_percent": 20,
        # A window of 30 s: collectd reports every 10 s and the newest point of an answer
        # is null, so 20 s held fewer than 2 points in most intervals (no data, no decision).
        "settings": {"autoscale_interval_seconds": 5, "autoscale_warmup_seconds": 20,
                     "autoscale_stabilization_seconds": 30, "autoscale_window_seconds": 30,
                     "autoscale_min_points": 2, "autoscale_max_hosts": 3},
        "low": 60, "high": 400, "low_seconds": 20, "follow_seconds": 30, "after_seconds": 300,
        "deadline_seconds": 1800,
    },
}


def percentile(values, share):
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))] if values else None


class AutoscalerRun:
    """python -m tools.autoscale in the background; its JSON log lines collected as they come."""

    def __init__(self, overrides: dict, log_path: Path, on_scale_out=None):
        """on_scale_out(host): called once a host added is in service."""
        self.on_scale_out = on_scale_out
        self.decisions, self.done = [], []
        self.changed = threading.Condition()
        self.log = log_path.open("w")
        command = [sys.executable, "-m", "tools.autoscale"]
        for name, value in overrides.items():
            command += ["--set", f"{name}={value}"]
        # SIGINT at its default, whatever this process inherited (a background job's is ignored):
        # the autoscaler then turns it into KeyboardInterrupt and stops between decisions.
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()
            start = line.find("{")
            if start < 0:
                continue
            try:
                entry = json.loads(line[start:])
            except ValueError:
                continue
            if "action" not in entry and "done" not in entry:
                continue   # another line with JSON in it (the playbooks' extra variables)
            if entry.get("done") == "out" and self.on_scale_out:
                self.on_scale_out(entry["host"])
            with self.changed:
                (self.done if "done" in entry else self.decisions).append(entry)
                self.changed.notify_all()

    def wait_for(self, condition, deadline: float) -> bool:
        with self.changed:
            while not condition():
                if self.process.poll() is not None or time.time() > deadline:
                    return condition()
                self.changed.wait(1)
            return True

    def check_alive(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"the autoscaler exited with status {self.process.returncode}: see {self.log.name}")

    def stop(self):
        """SIGINT between decisions (the autoscaler answers it with exit status 130)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=10)
        self.log.close()


class ClientLoad:
    """ticket_checker.py on the client host at `rate` req/s until stop() (its stdin
    closes) or `seconds`; result() is its JSON answer."""

    def __init__(self, lab, id_prefix: str, rate: int, seconds: float, log_path: Path):
        command = (f"python3 {REMOTE_CHECKER} --name {SERVICE_NAME} --id-prefix {id_prefix} --ids 32 "
                   f"--concurrency 128 --schedule {seconds}:{rate} --until-stdin-closes")
        self.process = subprocess.Popen(lab.ssh_command("client1", command), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=log_path.open("a"), text=True)

    def stop(self):
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()

    def result(self) -> dict:
        try:
            output = self.process.stdout.read()   # until the checker ends (schedule over, or stop())
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        if self.process.returncode != 0:
            raise RuntimeError(f"ticket_checker exited {self.process.returncode}")
        return json.loads(output)


def merged(results: list[dict]) -> dict:
    """One run's figures from the phases' results: due times from the first phase's start."""
    t0 = results[0]["started_at"]
    load = {"started_at": t0, "answers": [], "tickets": {}, "failures": {}, "statuses": {}, "requests": 0,
            "stale_keepalive_retries": 0, "phase_starts": []}
    for result in results:
        offset = result["started_at"] - t0
        load["phase_starts"].append(round(offset, 1))
        load["answers"] += [[due + offset, latency, status] for due, latency, status in result["answers"]]
        for ident, numbers in result["tickets"].items():
            load["tickets"].setdefault(ident, []).extend(numbers)
        for key in ("failures", "statuses"):
            for name, count in result[key].items():
                load[key][name] = load[key].get(name, 0) + count
        load["requests"] += result["requests"]
        load["stale_keepalive_retries"] += result["stale_keepalive_retries"]
    return load


# nginx.conf's upstream lines: "server 10.70.17.21:7017 max_fails=... down;  # app1" (down: drained).
UPSTREAM_SERVER = re.compile(r"^\s*server [0-9.]+:[0-9]+ max_fails[^;]*;\s*# (\S+)$", re.MULTILINE)


def balancer_upstreams(lab) -> dict:
    """Each balancer's app hosts in service (drained ones left out), from its nginx.conf."""
    return {lb: sorted(match.group(1) for match in UPSTREAM_SERVER.finditer(lab.ssh(lb, "cat /etc/nginx/nginx.conf").stdout)
                       if " down;" not in match.group(0))
            for lb in lab.group("lb")}


# The balancers' access log (roles/balancer): one JSON line per request, each attempt's
# upstream and status ("a, b" for nginx's own tries, "a : b" across the @resend redirect).
ACCESS_LOG = "/var/log/nginx/turnomatic.access.log"
ATTEMPTS = re.compile(r"\s*[,:]\s+")


def removals(decisions: list, done: list) -> list[tuple[str, float, float]]:
    """Each scale-in: the host, when it was decided and when it was done (epoch seconds)."""
    spans = []
    for decision in (d for d in decisions if d["action"] == "in"):
        end = next((e for e in done if e["done"] == "in" and e["time"] >= decision["time"]), None)
        if end is not None:
            spans.append((end["host"], decision["time"], end["time"]))
    return spans


def unanswered_by_leaving_host(lab, prefix: str, removals: list[tuple[str, float, float]]) -> list[dict]:
    """The requests of this run sent to a host while it was being removed (from the
    scale-in decision to its end, epoch seconds) that it did not answer with a 200.
    A drained host gets no new request once the balancers reloaded and answers the ones
    it has; a host stopped while still in service leaves attempts that failed (nginx
    re-sends some elsewhere, so the client may still get a 200: this sees them all)."""
    failed = []
    for lb in lab.group("lb"):
        for host, start, end in removals:
            address = f"{lab.address(host)}:"
            lines = lab.ssh(lb, f"grep -hF {prefix}- {ACCESS_LOG} | grep -F '{address}' || true", timeout=120).stdout
            for line in lines.splitlines():
                entry = json.loads(line)
                when = datetime.fromisoformat(entry["time"]).timestamp()
                if not start - 1 <= when <= end + 1:
                    continue
                attempts = zip(ATTEMPTS.split(entry["upstream"]), ATTEMPTS.split(entry["upstream_status"]))
                if any(upstream.startswith(address) and status != "200" for upstream, status in attempts):
                    failed.append({"balancer": lb, "host": host, **entry})
    return failed


def put_back(overrides: dict, base: list[str], pool: list[str]) -> None:
    """Every pool host taken out of the balancers and stopped, the way the autoscaler
    does it (after a run that failed; a good run leaves nothing to do)."""
    ansible = Ansible([str(LAB_INVENTORY), str(SCALE_OUT_INVENTORY)], overrides)
    ansible.runner_dir = Path(overrides["autoscale_state_dir"]) / "runner"
    settings = ansible.settings()
    actuator = Actuator(ansible, settings["settings"]["autoscale_provision_playbook"],
                        settings["settings"]["autoscale_deprovision_playbook"])
    for host in pool:
        actuator.scale_in(host, base)


def analyse(profile: dict, load: dict, decisions: list, done: list, base_hosts: int) -> dict:
    settings = profile["settings"]
    interval, warmup = settings["autoscale_interval_seconds"], settings["autoscale_warmup_seconds"]
    t0 = load["started_at"]
    _, rise, drop = load["phase_starts"]
    answers = load["answers"]

    def rel(entry):
        return round(entry["time"] - t0, 1)

    hosts_over_time = [(0.0, base_hosts)] + [(rel(d), d["hosts"]) for d in done]
    out_decisions = [d for d in decisions if d["action"] == "out"]
    in_decisions = [d for d in decisions if d["action"] == "in"]
    outs = [d for d in done if d["done"] == "out"]
    ins = [d for d in done if d["done"] == "in"]

    # Each host added: when its scale-out was first decided, measured from when it could
    # first have been (the load's rise for the first host, the previous host's joining,
    # its warm-up, for the next), and how many more times it was decided before the host
    # joined (an action that failed is rolled back and decided again).
    scale_outs = []
    ready_since = rise
    for joined_entry in outs:
        joined = rel(joined_entry)
        attempts = [d for d in out_decisions if ready_since <= rel(d) <= joined]
        if not attempts:
            continue
        decision = attempts[0]
        window = 30
        before = [a[1] for a in answers if rel(decision) - window <= a[0] < rel(decision) and a[1] is not None]
        after = [a[1] for a in answers if joined + warmup <= a[0] < joined + warmup + window and a[1] is not None]
        scale_outs.append({
            "host": joined_entry["host"], "decided_s": rel(decision), "after_s": round(rel(decision) - ready_since, 1),
            "allowed_s": interval + warmup + DATA_DELAY_SECONDS, "joined_s": joined, "attempts": len(attempts),
            "observed": decision["observed"], "desired": decision["desired"], "current": decision["current"],
            "p99_before_ms": percentile(before, 0.99), "p99_after_ms": percentile(after, 0.99),
        })
        ready_since = joined
    scale_ins = [{"decided_s": rel(d), "after_drop_s": round(rel(d) - drop, 1), "observed": d["observed"]}
                 for d in in_decisions]

    # Per 10 s: offered (requests due), served (answered 200, counted when answered) and failed.
    buckets = {}

    def bucket(second):
        return buckets.setdefault(int(second // 10) * 10, {"offered": 0, "served": 0, "failed": 0})

    for due, latency, status in answers:
        bucket(due)["offered"] += 1
        bucket(due)["failed"] += status != 200
        if latency is not None:
            bucket(due + latency / 1000)["served"] += 1
    series = [{"second": s, "offered_per_s": b["offered"] / 10, "served_per_s": b["served"] / 10,
               "failed": b["failed"]} for s, b in sorted(buckets.items())]
    last_join = max((d for d in (s["joined_s"] for s in scale_outs) if d is not None), default=None)
    followed = [s for s in series if last_join is not None and last_join + warmup <= s["second"] and s["second"] + 10 <= drop]

    # Requests that failed while a host was being taken out (decision to done).
    removals = [(rel(d), next((rel(e) for e in ins if e["time"] >= d["time"]), rel(d))) for d in in_decisions]
    failed_in_removal = [a for a in answers if a[2] != 200 and any(start <= a[0] <= end + 10 for start, end in removals)]

    ledger = TicketLedger()
    for ident, numbers in load["tickets"].items():
        ledger.add_numbers(ident, numbers)
    # Every id's numbers start past the fence's offset at the end of the run (its moves are announced).
    ledger.announce_skip(load["fence_offsets"][-1])
    tickets = ledger.summary()
    no_answer = sum(load["failures"].values()) + sum(n for status, n in load["statuses"].items()
                                                     if status != "200" and int(status) >= 500)
    return {
        "settings": settings, "started_at": t0, "phase_starts": load["phase_starts"],
        "rates": [profile["low"], profile["high"], profile["low"]],
        "decisions": [{"s": rel(d), "action": d["action"], "current": d["current"], "desired": d["desired"],
                       "observed": d["observed"], "reason": d["reason"]} for d in decisions],
        "hosts_over_time": hosts_over_time, "scale_outs": scale_outs, "scale_ins": scale_ins,
        "series": series, "followed": followed,
        "served_share_after_scale_out": (sum(s["served_per_s"] for s in followed) /
                                         sum(s["offered_per_s"] for s in followed)) if followed else None,
        "statuses": load["statuses"], "failures": load["failures"], "requests": load["requests"],
        "stale_keepalive_retries": load["stale_keepalive_retries"],
        "failed_during_scale_in": len(failed_in_removal), "tickets": tickets, "requests_without_answer": no_answer,
        "max_hosts": max(h for _, h in hosts_over_time),
    }


def verdicts(figures: dict, profile: dict, fleet_after: dict) -> list[str]:
    """What the proof requires; empty when every part held."""
    settings = profile["settings"]
    problems = []
    wanted = settings["autoscale_max_hosts"]
    if figures["max_hosts"] != wanted:
        problems.append(f"the fleet reached {figures['max_hosts']} app hosts, not {wanted}")
    for out in figures["scale_outs"]:
        if out["after_s"] > out["allowed_s"]:
            problems.append(f"a scale-out was decided {out['after_s']} s after it could first be, "
                            f"more than the interval + warm-up + data delay ({out['allowed_s']} s)")
    share = figures["served_share_after_scale_out"]
    if share is None or share < SERVED_SHARE:
        problems.append(f"served/offered after the scale-out was {share}, below {SERVED_SHARE}")
    drop = figures["phase_starts"][2]
    if not figures["scale_ins"]:
        problems.append("no scale-in after the load dropped")
    # The window runs from the last high recommendation, which can come up to one interval
    # before the drop (the decision just before it); one run's came 1.7 s before.
    earliest = settings["autoscale_stabilization_seconds"] - settings["autoscale_interval_seconds"]
    for scale_in in figures["scale_ins"]:
        if scale_in["decided_s"] - drop < earliest:
            problems.append(f"a scale-in was decided {scale_in['after_drop_s']} s after the drop, inside the "
                            f"{settings['autoscale_stabilization_seconds']} s stabilisation window "
                            "(less one interval)")
    if figures["hosts_over_time"][-1][1] != settings["autoscale_min_hosts"]:
        problems.append(f"the run ended with {figures['hosts_over_time'][-1][1]} app hosts")
    tickets = figures["tickets"]
    if tickets["duplicates"] or tickets["malformed"]:
        problems.append(f"tickets: {tickets['duplicates']} duplicates, {tickets['malformed']} malformed")
    # A gap is explained by a request without an answer, or by the fence's move (every id's numbers start past it).
    unexplained = tickets["missing"] - tickets["announced_per_id"] * tickets["ids"]
    if unexplained > figures["requests_without_answer"]:
        problems.append(f"{unexplained} numbers missing beyond the fence's move, more than the "
                        f"{figures['requests_without_answer']} requests without an answer: unexplained gaps")
    if figures["unanswered_by_leaving_host"]:
        problems.append(f"{figures['unanswered_by_leaving_host']} requests reached a host being removed and got no "
                        "answer from it (the balancers' access logs)")
    if figures["failed_during_scale_in"]:
        problems.append(f"{figures['failed_during_scale_in']} requests failed while a host was being removed")
    for lb, hosts in fleet_after["upstreams"].items():
        if hosts != fleet_after["base"]:
            problems.append(f"{lb} sends requests to {hosts}, not {fleet_after['base']}")
    if fleet_after["pool_running"]:
        problems.append(f"pool hosts still running: {fleet_after['pool_running']}")
    return problems


def report(figures: dict, problems: list[str], out: Path) -> str:
    lines = [f"# Autoscaling proof ({out.name})", "",
             "Settings (over the inventory's): " + ", ".join(f"`{k}={v}`" for k, v in figures["settings"].items()),
             "Load from client1 through the DNS name: {} req/s from 0 s, {} req/s from {} s, {} req/s from {} s".format(
                 figures["rates"][0], figures["rates"][1], figures["phase_starts"][1], figures["rates"][2],
                 figures["phase_starts"][2]), "",
             "| decision at (s) | action | hosts | desired | observed utilisation | reason |", "|---:|---|---:|---:|---:|---|"]
    lines += [f"| {d['s']} | {d['action']} | {d['current']} | {d['desired']} | {d['observed']} | {d['reason']} |"
              for d in figures["decisions"] if d["action"] != "none"]
    lines += ["", "Host count over time (s: hosts): " + ", ".join(f"{t}: {h}" for t, h in figures["hosts_over_time"]), "",
              "| host | scale-out decided at (s) | after it could first be (s) | allowed (s) | decisions until it joined "
              "| joined at (s) | p99 30 s before (ms) | p99 30 s after its warm-up (ms) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {o['host']} | {o['decided_s']} | {o['after_s']} | {o['allowed_s']} | {o['attempts']} | {o['joined_s']} "
              f"| {o['p99_before_ms']} | {o['p99_after_ms']} |" for o in figures["scale_outs"]]
    lines += ["", "Scale-ins: " + ", ".join(f"decided at {i['decided_s']} s ({i['after_drop_s']} s after the drop)"
                                             for i in figures["scale_ins"]),
              f"Served/offered after the last scale-out's warm-up: {figures['served_share_after_scale_out']}",
              f"Requests: {figures['requests']}, statuses {figures['statuses']}, failures {figures['failures']}, "
              f"failed while a host was removed: {figures['failed_during_scale_in']}; attempts a host being removed "
              f"did not answer (balancers' logs): {figures['unanswered_by_leaving_host']}",
              f"Tickets: {figures['tickets']['tickets']}, duplicates {figures['tickets']['duplicates']}, "
              f"missing {figures['tickets']['missing']} (requests without an answer: {figures['requests_without_answer']}; "
              f"moved past by the failover fence before the run, per id: {figures['tickets']['announced_per_id']})",
              "", "Verdict: " + ("every part held" if not problems else "; ".join(problems))]
    return "\n".join(lines) + "\n"


def plot(figures: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    series = figures["series"]
    figure, load_axes = pyplot.subplots(figsize=(9, 5))
    seconds = [s["second"] for s in series]
    load_axes.plot(seconds, [s["offered_per_s"] for s in series], "--", color="grey", label="offered (req/s)")
    load_axes.plot(seconds, [s["served_per_s"] for s in series], "-", color="tab:blue", label="served, 200 (req/s)")
    load_axes.set_xlabel("seconds from the start of the load")
    load_axes.set_ylabel("requests per second (10 s means)")
    hosts_axes = load_axes.twinx()
    times = [t for t, _ in figures["hosts_over_time"]] + [seconds[-1] + 10 if seconds else 0]
    counts = [h for _, h in figures["hosts_over_time"]]
    hosts_axes.step(times, counts + counts[-1:], where="post", color="tab:red", label="app hosts in service")
    hosts_axes.set_ylabel("app hosts")
    hosts_axes.set_ylim(0, max(counts) + 1)
    for decision in figures["decisions"]:
        if decision["action"] != "none":
            load_axes.axvline(decision["s"], color="tab:red", alpha=0.3, linestyle=":")
    handles = load_axes.get_legend_handles_labels()[0] + hosts_axes.get_legend_handles_labels()[0]
    load_axes.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
    load_axes.grid(True, alpha=0.3)
    load_axes.set_title("Autoscaling on the lab: offered and served load, app hosts (dotted: decisions)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def fence_offset(lab, ident: str) -> int:
    """The failover fence's offset now (docs/architecture.md: every number is the counter
    plus turno::failovers x K, and each fence announces its move): a fresh id's first
    number, asked from client1 through the DNS name, minus 1. Taken before and after the load."""
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{SERVICE_NAME}:7017/turno/{ident}').read().decode())"
    return json.loads(lab.ssh("client1", f'python3 -c "{fetch}"').stdout)["turno"] - 1


def run_load(lab, profile: dict, autoscaler: AutoscalerRun, deadline: float, out: Path) -> dict:
    """The three phases of load, the autoscaler acting meanwhile; their merged figures."""
    lab.ssh("client1", f"cat > {REMOTE_CHECKER}", input=CHECKER.read_text())
    prefix = f"autoscale-{secrets.token_hex(4)}"
    log_path = out / "ticket_checker.stderr"
    log_path.write_text("")
    settings = profile["settings"]
    fence_before = fence_offset(lab, f"{prefix}-fence-before")
    results = []
    low = ClientLoad(lab, prefix, profile["low"], profile["low_seconds"], log_path)
    results.append(low.result())
    high = ClientLoad(lab, prefix, profile["high"], deadline - time.time(), log_path)
    try:
        # Until the last host the autoscaler may add has served follow_seconds past its warm-up.
        autoscaler.wait_for(lambda: sum(d["done"] == "out" for d in autoscaler.done)
                            >= settings["autoscale_max_hosts"] - settings["autoscale_min_hosts"], deadline)
        autoscaler.check_alive()
        time.sleep(min(settings["autoscale_warmup_seconds"] + profile["follow_seconds"], max(0, deadline - time.time())))
    finally:
        high.stop()
    results.append(high.result())
    after = ClientLoad(lab, prefix, profile["low"], profile["after_seconds"], log_path)
    try:
        # Until the pool hosts are out again and a decision after that saw it.
        autoscaler.wait_for(lambda: sum(d["done"] == "in" for d in autoscaler.done)
                            >= settings["autoscale_max_hosts"] - settings["autoscale_min_hosts"]
                            and autoscaler.decisions[-1]["current"] == settings["autoscale_min_hosts"],
                            min(deadline, time.time() + profile["after_seconds"]))
        autoscaler.check_alive()
    finally:
        after.stop()
    results.append(after.result())
    return {**merged(results), "id_prefix": prefix,
            "fence_offsets": [fence_before, fence_offset(lab, f"{prefix}-fence-after")]}


def cap_cpu(host: str, percent: int) -> None:
    """The running VM's CPU quota (cgroup v1, as tools/load/lab_capacity.py sets it)."""
    cgroup = Path(VM_CGROUPS) / host
    period = int((cgroup / "cpu.cfs_period_us").read_text())
    (cgroup / "cpu.cfs_quota_us").write_text(str(period * percent // 100))
    print(f"{host}: CPU capped at {percent} % of a core", flush=True)


def pool_running(lab, pool) -> list[str]:
    """The pool hosts whose VM answers SSH."""
    running = []
    for host in pool:
        try:
            if lab.ssh(host, "true", timeout=15, check=False).returncode == 0:
                running.append(host)
        except subprocess.TimeoutExpired:
            pass
    return running


def run(profile_name: str, cpu_percent: int | None = None) -> tuple[dict, list[str], Path]:
    """The proof with one profile; cpu_percent: each app VM's CPU share, if not the profile's."""
    profile = PROFILES[profile_name]
    if cpu_percent is None:
        cpu_percent = profile["app_cpu_percent"]
    out = OUTPUT / "autoscale" / profile_name
    out.mkdir(parents=True, exist_ok=True)
    lab = lab_facts(LAB_INVENTORY, SCALE_OUT_INVENTORY)
    pool = lab.group("app_pool")
    base = [h for h in lab.group("app") if h not in pool]
    state_dir = lab.state_dir / "autoscale-proof"
    shutil.rmtree(state_dir, ignore_errors=True)   # a fresh autoscaler: no history, no journal
    # Every app VM's CPU is capped at cpu_percent, the autoscaler told so. A pool VM boots
    # and converges at the lab's own share (a capped first boot outlasted the lab's boot
    # wait on the busy machine) and is capped once it is in service, inside its warm-up.
    # lab_boot_timeout: a pool VM's boot took more than the lab's 90 s on the busy machine.
    overrides = {**profile["settings"], "autoscale_state_dir": str(state_dir),
                 "autoscale_min_hosts": len(base), "autoscale_host_cores": cpu_percent / 100,
                 "lab_boot_timeout": 300}
    profile = {**profile, "settings": {**profile["settings"], "autoscale_min_hosts": len(base)}}
    deadline = time.time() + profile["deadline_seconds"]
    started = time.monotonic()
    autoscaler = None
    try:
        with app_cpu_capped(cpu_percent):
            autoscaler = AutoscalerRun(overrides, out / "autoscaler.log",
                                       on_scale_out=lambda host: cap_cpu(host, cpu_percent))
            # The first decision (no action at low load) before the load starts.
            if not autoscaler.wait_for(lambda: autoscaler.decisions, time.time() + 120):
                raise RuntimeError(f"the autoscaler took no decision: see {out / 'autoscaler.log'}")
            load = run_load(lab, profile, autoscaler, deadline, out)
            autoscaler.stop()
    finally:
        if autoscaler is not None:
            autoscaler.stop()
        if pool_running(lab, pool) or any(hosts != sorted(base) for hosts in balancer_upstreams(lab).values()):
            print("putting the fleet back: the pool hosts out of the balancers and stopped", flush=True)
            put_back(overrides, base, pool)
    fleet_after = {"upstreams": balancer_upstreams(lab), "base": sorted(base), "pool_running": pool_running(lab, pool)}
    # What the figures come from, to analyse again: every request, decision and action.
    (out / "raw.json").write_text(json.dumps({"load": load, "decisions": autoscaler.decisions,
                                              "done": autoscaler.done}))
    figures = analyse(profile, load, autoscaler.decisions, autoscaler.done, len(base))
    unanswered = unanswered_by_leaving_host(lab, load["id_prefix"], removals(autoscaler.decisions, autoscaler.done))
    figures["unanswered_by_leaving_host"] = len(unanswered)
    (out / "unanswered_by_leaving_host.json").write_text(json.dumps(unanswered, indent=1))
    figures["wall_seconds"] = round(time.monotonic() - started)
    figures["fleet_after"] = fleet_after
    problems = verdicts(figures, profile, fleet_after)
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    (out / "report.md").write_text(report(figures, problems, out))
    plot(figures, out / "plot.png")
    return figures, problems, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--cpu-percent", type=int,
                        help="each app VM's CPU share during the run, in %% of a core (default: the profile's, "
                             + ", ".join(f"{name} {profile['app_cpu_percent']}" for name, profile in PROFILES.items()) + ")")
    args = parser.parse_args(argv)
    if args.cpu_percent is not None and not 0 < args.cpu_percent <= 100:
        parser.error("--cpu-percent: a share of one core, 1 to 100")
    try:
        figures, problems, out = run(args.profile, args.cpu_percent)
    except PlaybookFailed as failure:
        print(f"autoscale-proof: {failure}", file=sys.stderr)
        return 1
    print((out / "report.md").read_text())
    print(f"wall time {figures['wall_seconds']} s; report, figures and plot in {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
