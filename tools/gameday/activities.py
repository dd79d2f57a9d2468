"""The game days' probes and actions, called by Chaos Toolkit's python provider.

Chaos Toolkit runs an experiment's activities one after the other in one
process, so the load started by `start_load` is still there for `finish_load`
(or for the rollback `stop_load`). Every run writes into its run directory
(`out`, the experiment's configuration): load.json (every request of the load
during the method), sample-*.json (the steady-state samples) and the fault
playbooks' logs.

The steady-state hypothesis is three probes, in this order: the first takes a
short sample of load through the service name (the way clients reach the
fleet) and the other two judge it, together with the method's load once it ran.
"""

import json
import subprocess
import time
import uuid
from pathlib import Path

from chaoslib.exceptions import ActivityFailed

from tests.support.ansible import run_playbook
from tests.support.lab import lab_facts
from tests.support.paths import REPO
from tests.support.redis_fleet import RedisFleet
from tests.support.tickets import TicketLedger

CLIENT = "client1"
LOAD_SCRIPT = REPO / "tools/load/client_load.py"
REMOTE_LOAD_SCRIPT = "/root/client_load.py"
# The share of requests whose latency the SLO bounds (docs/capacity.md: p99 < 50 ms).
SLO_SHARE = 0.99
# The app's port and the balancers' status port (roles/turnomatic, roles/balancer defaults).
APP_PORT = 7017
BALANCER_STATUS_PORT = 7018
# A request the fleet does not end (no answer, no reset) is abandoned after this long.
REQUEST_TIMEOUT_S = 10

_load = None  # the method's load: (process, prefix)
_sample = None  # the last steady-state sample: its records and the fence's offset after it


def _client_command(prefix, rate, threads, keepalive, max_seconds):
    return (f"python3 {REMOTE_LOAD_SCRIPT} --id-prefix {prefix} --threads {threads} --keepalive {keepalive} "
            f"--rate {rate} --max-seconds {max_seconds} --timeout {REQUEST_TIMEOUT_S}")


def _install_load_script():
    lab_facts().ssh(CLIENT, f"cat > {REMOTE_LOAD_SCRIPT}", input=LOAD_SCRIPT.read_text())


def _result(stdout, prefix):
    """The load's result, with how far the failover fence had moved every counter once it
    ended: a fresh id's numbers start above that offset, a failover during the load adds
    to it (announced gaps, not lost tickets)."""
    result = json.loads(stdout)
    result["prefix"] = prefix
    result["fence_offset"] = RedisFleet(lab_facts()).fence_offset()
    return result


def start_load(out: str, rate: float = 40, threads: int = 8, keepalive: int = 1, max_seconds: int = 400) -> dict:
    """Steady load from the client host through the service name, in the background
    until finish_load (or max_seconds, whichever comes first): `threads` clients
    that resolve the name and connect for every request, as most do, and
    `keepalive` clients that keep their connection."""
    global _load
    _install_load_script()
    prefix = f"gameday-{uuid.uuid4().hex[:8]}"
    command = lab_facts().ssh_command(CLIENT, _client_command(prefix, rate, threads, keepalive, max_seconds))
    _load = (subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True), prefix)
    return {"client": CLIENT, "prefix": prefix, "rate": rate, "threads": threads, "keepalive": keepalive}


def finish_load(out: str) -> dict:
    """End the method's load; every request goes to out/load.json. The counts are returned."""
    global _load
    if _load is None:
        raise ActivityFailed("no load is running")
    process, prefix = _load
    _load = None
    stdout, stderr = process.communicate(input="", timeout=REQUEST_TIMEOUT_S + 60)
    if process.returncode != 0:
        raise ActivityFailed(f"the load on {CLIENT} failed: {stderr.strip()[-500:]}")
    result = _result(stdout, prefix)
    Path(out, "load.json").write_text(json.dumps(result))
    outcomes = {}
    for record in result["records"]:
        outcomes[record[3]] = outcomes.get(record[3], 0) + 1
    return {"requests": len(result["records"]), "outcomes": outcomes}


def stop_load(out: str) -> str:
    """Rollback: end the method's load if it still runs (the method stopped early)."""
    if _load is None:
        return "no load running"
    finish_load(out)
    return "stopped"


def answers_through_name(out: str, seconds: float = 6, rate: float = 40, keepalive: int = 4) -> int:
    """Probe: a short sample of load through the service name; the number of
    requests that got no 200 (the tolerance is 0). Fails when nothing was sent.
    Its clients keep their connections, as the SLO's latency is measured
    (docs/capacity.md): a connection and a name lookup per request would
    measure the client host's resolver and handshakes too."""
    global _sample
    _install_load_script()
    prefix = f"gameday-sample-{uuid.uuid4().hex[:8]}"
    command = _client_command(prefix, rate, 0, keepalive, seconds)
    # The load runs until its stdin closes: here when `sleep` ends.
    answer = lab_facts().ssh(CLIENT, f"sleep {seconds} | {command}", timeout=seconds + REQUEST_TIMEOUT_S + 60)
    result = _result(answer.stdout, prefix)
    Path(out, f"sample-{time.strftime('%H%M%S')}.json").write_text(json.dumps(result))
    _sample = result
    if not result["records"]:
        raise ActivityFailed("the sample sent no request")
    return sum(record[3] not in ("ok", "closed") for record in result["records"])


def ledger(records, fence_offset=0) -> TicketLedger:
    """The tickets of client_load.py records: per id the numbers served, and the
    requests that may have taken one unseen: an error after sending, a 5xx, and a
    keep-alive connection closed before any byte of the answer ("closed": the client
    sent the request again, but a balancer powered off mid-request closes this way
    after the app counted; commit 92a6132); the failover fence's offset at the end
    (`fence_offset`, from _result) announced."""
    tickets = TicketLedger()
    tickets.announce_skip(fence_offset)
    for _, _, _, outcome, _, ident, number in records:
        if outcome == "ok":
            tickets.add_numbers(str(ident), [number])
        elif outcome in ("sent", "closed") or outcome.startswith("status-5"):
            tickets.add_numbers(str(ident), [], unknown_outcomes=1)
    return tickets


def tickets_unique_and_consecutive(out: str) -> int:
    """Probe: how many violations (duplicates, unexplained gaps) the last sample and
    the method's load, once it ran, hold (the tolerance is 0); they are listed in
    out/violations.txt."""
    if _sample is None:
        raise ActivityFailed("no sample: answers_through_name runs first")
    violations = ledger(_sample["records"], _sample["fence_offset"]).violations()
    load = Path(out, "load.json")
    if load.exists():
        result = json.loads(load.read_text())
        violations += ledger(result["records"], result["fence_offset"]).violations()
    if violations:
        with Path(out, "violations.txt").open("a") as listing:
            listing.writelines(f"{violation}\n" for violation in violations)
    return len(violations)


def p99_ms(records) -> float | None:
    """p99 latency (ms) of the requests that were sent (ended by an answer or an error)."""
    latencies = sorted((end - start) * 1000 for _, start, end, outcome, *_ in records
                       if outcome not in ("resolve", "connect"))
    return round(latencies[int(SLO_SHARE * (len(latencies) - 1))], 1) if latencies else None


def p99_of_sample(out: str) -> float:
    """Probe: p99 latency of the last sample, in ms (the tolerance is the SLO's range)."""
    if _sample is None:
        raise ActivityFailed("no sample: answers_through_name runs first")
    return p99_ms(_sample["records"])


def fault(out: str, vm: str, fault: str, delay_ms: int = 5) -> str:
    """Action: one of the lab's fault playbooks (playbooks/fault.yml) on a VM; fails
    the activity when the playbook fails."""
    run = run_playbook("playbooks/fault.yml", "-e", f"lab_vm={vm}", "-e", f"lab_fault={fault}",
                       "-e", f"lab_delay_ms={delay_ms}", log_name=f"gameday-{fault}-{vm}")
    Path(out, f"fault-{fault}-{vm}.log").write_text(run.output)
    if run.returncode != 0:
        raise ActivityFailed(f"make fault VM={vm} FAULT={fault} failed: {run.tail(20)}")
    return f"{fault} {vm}: {run.seconds:.1f} s"


def on_host(out: str, host: str, command: str, timeout: int = 120) -> str:
    """Action: a shell command on a lab host over SSH (a service stopped, a CPU hog);
    fails the activity when it exits non-zero."""
    answer = lab_facts().ssh(host, command, timeout=timeout, check=False)
    if answer.returncode != 0:
        raise ActivityFailed(f"{host}: {command!r} exited {answer.returncode}: {answer.stderr.strip()[-500:]}")
    return answer.stdout.strip()[-2000:]


def _upstreams() -> dict:
    """What every balancer serves now: {balancer: {"servers": [...], "drained": [...]}},
    read from its status port's /upstream (the drain's own check)."""
    facts = lab_facts()
    read = ("python3 -c 'import urllib.request; "
            f"print(urllib.request.urlopen(\"http://127.0.0.1:{BALANCER_STATUS_PORT}/upstream\", timeout=10).read().decode())'")
    return {lb: json.loads(facts.ssh(lb, read).stdout) for lb in facts.group("lb")}


def _ready(host: str) -> bool:
    """Whether the app on `host` answers /readyz (asked on the host: only it and the
    balancers may reach its port)."""
    facts = lab_facts()
    url = f"http://{facts.address(host)}:{APP_PORT}/readyz"
    check = f"python3 -c 'import urllib.request; urllib.request.urlopen(\"{url}\", timeout=10)'"
    return facts.ssh(host, check, check=False).returncode == 0


def rolling_update(out: str, name: str, extra_vars: dict | None = None, host: str | None = None) -> dict:
    """Action: the operator's rolling update (playbooks/rolling_update.yml), with
    `extra_vars` as `-e` (a setting that differs from the inventory's); its log goes
    to out/deploy-<name>.log. With `host`, a bad version: the update must fail on
    that app host and reach no other (its readiness gate holds the version back),
    and every balancer must hold that host out; without, it must succeed and every
    balancer serve every app. Fails the activity otherwise (a finding); returns its
    exit status, the app hosts it reached in order, those it failed on and what
    every balancer serves."""
    arguments = ["-e", json.dumps(extra_vars)] if extra_vars else []
    run = run_playbook("playbooks/rolling_update.yml", *arguments, log_name=f"gameday-deploy-{name}")
    Path(out, f"deploy-{name}.log").write_text(run.output)
    # The app play's task results name their host in brackets.
    app_play = run.output.partition("PLAY [Update the app servers one at a time]")[2]
    reached = sorted((app_play.find(f"[{app}]"), app) for app in lab_facts().group("app") if f"[{app}]" in app_play)
    result = {"returncode": run.returncode, "seconds": round(run.seconds, 1),
              "reached": [app for _, app in reached],
              "failed": sorted({line.split("[", 1)[1].split("]", 1)[0] for line in app_play.splitlines()
                                if line.startswith("fatal: [")}),
              "drained": {lb: upstream["drained"] for lb, upstream in _upstreams().items()}}
    held_out = [host] if host else []
    if host:
        expected = result["returncode"] != 0 and result["reached"] == held_out and result["failed"] == held_out
    else:
        expected = result["returncode"] == 0
    if not expected or any(drained != held_out for drained in result["drained"].values()):
        raise ActivityFailed(f"rolling update {name}: expected {'to stop at ' + host if host else 'success'} "
                             f"with {held_out} drained, got {result}; log {Path(out, f'deploy-{name}.log')}")
    return result


def redeploy_unless_in_service(out: str) -> str:
    """Action (the bad deploy's mitigation and rollback): when an app host does not
    answer /readyz or a balancer holds one out, the rolling update with the
    inventory's settings (the last good ones); nothing otherwise, so it is safe to
    run twice."""
    not_ready = [host for host in lab_facts().group("app") if not _ready(host)]
    drained = sorted({host for upstream in _upstreams().values() for host in upstream["drained"]})
    if not not_ready and not drained:
        return "every app host ready and in service"
    result = rolling_update(out, "rollback")
    return f"not ready {not_ready}, drained {drained}: rolled back in {result['seconds']} s"


# Redis's AOF directory (roles/redis: dir /var/lib/redis, Redis 7's appenddirname). While
# a tmpfs stands in for it, the directory on the disk below is left as it was; the
# tmpfs's content is copied back only if Redis ran on a complete copy (the marker).
AOF_DIR = "/var/lib/redis/appendonlydir"
AOF_TO_TMPFS = "/var/lib/redis/appendonlydir.gameday-in"
AOF_FROM_TMPFS = "/var/lib/redis/appendonlydir.gameday-out"
FILLER = f"{AOF_DIR}/gameday-filler"
COPIED = f"{AOF_DIR}/gameday-copied"


def aof_filesystem_full(out: str, host: str = "redis1", size_mb: int = 32) -> str:
    """Action: Redis's AOF directory on a full filesystem, bounded: redis-server
    stops, a tmpfs of `size_mb` (in the VM's memory, never the machine's disk) is
    mounted over the AOF directory with the AOF copied in, Redis starts on it, and a
    file fills what is left of the tmpfs. Redis keeps its AOF open, hence the restart
    before the fill. aof_filesystem_restored undoes it."""
    script = f"""set -eu
test ! -e {AOF_FROM_TMPFS}
! findmnt -n {AOF_DIR} >/dev/null
systemctl stop redis-server
rm -rf {AOF_TO_TMPFS}
cp -a {AOF_DIR} {AOF_TO_TMPFS}
mount -t tmpfs -o size={size_mb}m,mode=0750 gameday-aof {AOF_DIR}
cp -a {AOF_TO_TMPFS}/. {AOF_DIR}/
touch {COPIED}
rm -rf {AOF_TO_TMPFS}
chown redis:redis {AOF_DIR}
systemctl start redis-server
sleep 2
dd if=/dev/zero of={FILLER} bs=64k 2>/dev/null || true
df -k {AOF_DIR} | tail -1"""
    return on_host(out, host, script)


def aof_filesystem_restored(out: str, host: str = "redis1") -> str:
    """Action (mitigation and rollback, safe to run twice): when the tmpfs is
    mounted, the filler removed, Redis stopped, the AOF Redis wrote there copied
    back to the disk (only if the copy onto the tmpfs had completed: otherwise the
    disk's, untouched, is the right one) and the tmpfs unmounted; Redis started (its
    start limit reset: it may have stopped restarting)."""
    script = f"""set -eu
if findmnt -n {AOF_DIR} >/dev/null; then
  rm -f {FILLER}
  systemctl stop redis-server
  if [ -e {COPIED} ]; then
    rm -rf {AOF_FROM_TMPFS}
    cp -a {AOF_DIR} {AOF_FROM_TMPFS}
    rm -f {AOF_FROM_TMPFS}/gameday-copied
  fi
  umount {AOF_DIR}
  if [ -d {AOF_FROM_TMPFS} ]; then
    find {AOF_DIR} -mindepth 1 -delete
    cp -a {AOF_FROM_TMPFS}/. {AOF_DIR}/
  fi
fi
rm -rf {AOF_FROM_TMPFS} {AOF_TO_TMPFS}
systemctl reset-failed redis-server
systemctl start redis-server
systemctl is-active redis-server"""
    return on_host(out, host, script)
