"""The lab fleet's Redis under faults, under load (issue 12): a primary powered
off, cut off in a split brain, frozen; a replica's host (and its sentinel) powered
off. The sentinels promote a replica where the primary is lost, the service answers
again within seconds, and no number is handed out twice.

Load comes through the service name from the client host (ticket_checker.py). After
each fault is undone, the test waits until the fleet is whole again (three nodes, the
old primary or the lost replica replicating the primary): the fleet is left serving.

The power cut also checks monitoring: the rule turnomatic-redis-failover fires (the
sentinels' config epoch grew), and the replication metrics name the new primary.

Per id: no duplicate; every missing number is explained by an answer that says
the increment may have run, or by the failover fence (the promoted node moves
every id's next number 2K further on, K = turno::fence_skip). Figures (printed,
and in tests/output/ha-figures.json): seconds from the fault to the promotion and
to the last failed request, from the first failed request to the last (the outage
as the client saw it), requests failed.
    pytest tests/ha/test_failover_lab.py -s
"""

import time
import uuid
from collections import Counter

import pytest

from tests.support import alerting, figures
from tests.support.alerting import STEP, aligned_now as now
from tests.support.checker import Load, install_checker
from tests.support.paths import OUTPUT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.lab
FIGURES = OUTPUT / "ha-figures.json"
# The target is 10 s; the bound here leaves room for a busy 2-core machine.
BACK_WITHIN_S = 30
# How long the split brain and the freeze last (the 30 s), and a replica's host stays off.
HOLD_S = 30
# Within this of the split brain or the freeze, every app host has left the old primary:
# well before the fault ends (redis-py's own discovery kept one host on it until then).
LEFT_THE_OLD_PRIMARY_S = 20
REPLICA_OFF_S = 15


def fault(fleet, host, kind, *extra):
    run = fleet.playbook("playbooks/fault.yml", "-e", f"lab_vm={host}", "-e", f"lab_fault={kind}", *extra,
                         log_name=f"ha-fault-{host}-{kind}")
    assert run.returncode == 0, f"fault {kind} {host} failed ({run.log}):\n{run.tail()}"


def fence_moves(numbers, fence_move):
    """Indexes in sorted(numbers) where a fence moved the counter (a jump of over half the move)."""
    return [i for i, (low, high) in enumerate(zip(numbers, numbers[1:]), 1) if high - low > fence_move // 2]


def unexplained_gaps(report, fence_move):
    """id → (missing, may have run, fence moves) where the misses outnumber what explains them.
    An id's first number may already carry earlier fences' offset (turno::failovers x K,
    K = fence_move / 2: the lab's Redis restarted or failed over before)."""
    skip = fence_move // 2
    found = {}
    for verdict in report.ledger.verdicts():
        numbers = sorted(set(report.tickets.get(verdict.id, [])))
        moves = len(fence_moves(numbers, fence_move))
        earlier = (numbers[0] - 1) // skip * skip if numbers else 0
        if verdict.missing - earlier > verdict.unknown_outcomes + moves * fence_move:
            found[verdict.id] = (verdict.missing - earlier, verdict.unknown_outcomes, moves)
    return found


def primary_in_graphite(graphite, host):
    """The replication metrics' last point for `host`: 1 where it is the primary."""
    series = graphite.render("aliasByNode(collectd.*.redis-replication.gauge-primary, 1)", now() - 60, now())
    points = [value for value in series.get(host, []) if value is not None]
    return points[-1] if points else None


def start_load(fleet, name):
    """The checker on the client host until its stdin closes, a few seconds in before the fault."""
    install_checker(fleet)
    load = Load(fleet, f"{name}-{uuid.uuid4().hex[:8]}", requests=0, max_seconds=180, until_stdin_closes=True,
                concurrency=8, ids=5)
    time.sleep(6)
    return load


def promoted(fleet, redis_fleet, old, timeout=60):
    """The primary the sentinels away from `old` name once they replaced it (None: not within `timeout`)."""
    survivors = [host for host in fleet.group("sentinel") if host != old]
    return wait_until(lambda: (named := redis_fleet.primary(asking=survivors)) != old and named, timeout, 0.5)


def judged(name, report, fence_move, fault_at, **facts):
    """The run's figures (recorded and printed), once no duplicate and no unexplained gap is shown."""
    failures = [t for t in report.result["failure_times"] if t >= fault_at]
    # Tickets above each id's fence move: handed out by a promoted node.
    after_failover = 0
    for numbers in report.tickets.values():
        numbers = sorted(set(numbers))
        moves = fence_moves(numbers, fence_move)
        after_failover += len(numbers) - moves[0] if moves else 0
    result = {**facts,
              "last_failure_after_s": round(max(failures) - fault_at, 1) if failures else 0.0,
              # From the first failed request (the client sees the fault; the fault playbook's
              # own start-up is not counted) to the last.
              "outage_s": round(max(failures) - min(failures), 1) if failures else 0.0,
              "answered": report.ok, "failed": report.failed,
              "failed_by_kind": dict(Counter({**report.result["failures"],
                                              **{k: v for k, v in report.result["statuses"].items() if k != "200"}})),
              "tickets_after_a_failover": after_failover,
              "numbers_handed_out_twice": sum(len(numbers) for numbers in report.duplicates().values())}
    figures.record_figure(FIGURES, name, result)
    print(f"\n{name}: {result}")
    assert not report.ledger.malformed, report.ledger.malformed
    assert not report.duplicates(), f"numbers handed out twice: {report.duplicates()}"
    assert not unexplained_gaps(report, fence_move), (
        f"gaps (missing, may have run, fence moves) not explained: {unexplained_gaps(report, fence_move)}")
    return result


def test_the_primary_powered_off_under_load_fails_over_and_hands_out_no_number_twice(fleet, redis_fleet, rules,
                                                                                       graphite):
    old = redis_fleet.primary()
    assert old, "no sentinel names a primary"
    fence_move = 2 * redis_fleet.fence_skip(old)
    assert fence_move, f"the failover fence is off on {old}"
    load = start_load(fleet, "power-cut")
    try:
        fault_at = time.monotonic() - load.started
        fault(fleet, old, "kill")
        new = promoted(fleet, redis_fleet, old)
        promoted_after = time.monotonic() - load.started - fault_at
        assert new, f"the sentinels still name {old} 60 s after its power cut"
        time.sleep(15)
    finally:
        # The node boots again even when the load's report fails: the next test needs three.
        try:
            report = load.finish()
        finally:
            fault(fleet, old, "start")
    rejoined = wait_until(lambda: redis_fleet.replicates(old) == new, 120, 1)
    failover_rule = rules["turnomatic-redis-failover"]
    alerted = wait_until(lambda: alerting.firing(failover_rule, graphite, now()), 120, STEP)
    shown = wait_until(lambda: primary_in_graphite(graphite, new) == 1 and primary_in_graphite(graphite, old) == 0,
                       120, STEP)
    result = judged("primary_power_cut", report, fence_move, fault_at, old_primary=old, new_primary=new,
                    promoted_after_s=round(promoted_after, 1))
    assert result["tickets_after_a_failover"], f"no ticket after the failover: {report.summary()}"
    assert result["last_failure_after_s"] <= BACK_WITHIN_S, (
        f"requests still failed {result['last_failure_after_s']} s after the power cut: {report.summary()}")
    assert rejoined, f"{old} did not become a replica of {new} within 120 s of its boot"
    assert alerted, f"{failover_rule.uid} did not fire: {alerting.values(failover_rule, graphite, now())}"
    assert shown, (f"Graphite does not show {new} as the primary and {old} as a replica: "
                   f"{primary_in_graphite(graphite, new)}, {primary_in_graphite(graphite, old)}")


@pytest.mark.parametrize("kind", ["partition", "freeze"], ids=["split-brain", "frozen"])
def test_a_primary_cut_off_or_frozen_for_30_s_is_replaced_and_hands_out_no_number_twice(fleet, redis_fleet, kind):
    """split-brain: the primary no longer reaches the other Redis hosts (their sentinels,
    its replicas) nor the second app host, but the first app host still reaches it and
    every sentinel: it must follow the sentinels that agree (the majority), not the one
    cut off with the old primary, which still names it. frozen: every process of the
    primary's host stopped (SIGSTOP), its sentinel with it. Either way for HOLD_S, then
    healed or resumed: the old primary must come back as a replica, whatever it took
    while cut off dropped (none of it was handed out: no replica acknowledged it)."""
    old = redis_fleet.primary()
    assert old, "no sentinel names a primary"
    fence_move = 2 * redis_fleet.fence_skip(old)
    assert fence_move, f"the failover fence is off on {old}"
    cut_from = [host for host in fleet.group("redis") if host != old] + fleet.group("app")[1:]
    inject, undo = (("partition", "heal") if kind == "partition" else ("freeze", "thaw"))
    load = start_load(fleet, kind)
    try:
        fault_at = time.monotonic() - load.started
        fault(fleet, old, inject, *(["-e", f"lab_peers={','.join(cut_from)}"] if kind == "partition" else []))
        new = promoted(fleet, redis_fleet, old)
        promoted_after = time.monotonic() - load.started - fault_at
        time.sleep(max(0.0, HOLD_S - (time.monotonic() - load.started - fault_at)))
    finally:
        try:
            fault(fleet, old, undo)
            undone_at = time.monotonic() - load.started
            time.sleep(8)
        finally:
            report = load.finish()
    assert new, f"the sentinels still name {old} 60 s after the fault"
    rejoined = wait_until(lambda: redis_fleet.replicates(old) == new, 120, 1)
    result = judged(f"primary_{'split_brain' if kind == 'partition' else 'frozen'}", report, fence_move, fault_at,
                    old_primary=old, new_primary=new, promoted_after_s=round(promoted_after, 1),
                    held_s=round(undone_at - fault_at, 1), cut_off_from=cut_from if kind == "partition" else None)
    assert result["tickets_after_a_failover"], f"no ticket after the failover: {report.summary()}"
    assert result["last_failure_after_s"] <= LEFT_THE_OLD_PRIMARY_S, (
        f"requests still failed {result['last_failure_after_s']} s after the fault "
        f"(undone after {undone_at - fault_at:.0f} s): {report.summary()}")
    assert rejoined, f"{old} did not become a replica of {new} within 120 s of the fault's end"


def test_a_replica_host_powered_off_keeps_the_service_and_the_primary(fleet, redis_fleet):
    """A replica's host powered off, and with it one of the three sentinels (each Redis
    host carries one: this is also the "sentinel host down" case): the other replica
    still acknowledges every increment (WAIT 1), two sentinels still make a quorum, the
    primary stays. At most 1 % of requests may fail (a replica acknowledgement slower
    than its 0.5 s on a busy machine; the lab run had none). Booted again, it
    replicates the primary again."""
    primary = redis_fleet.primary()
    assert primary, "no sentinel names a primary"
    fence_move = 2 * redis_fleet.fence_skip(primary)
    assert fence_move, f"the failover fence is off on {primary}"
    replica = next(host for host in fleet.group("redis") if host != primary)
    load = start_load(fleet, "replica-off")
    try:
        fault_at = time.monotonic() - load.started
        fault(fleet, replica, "kill")
        time.sleep(REPLICA_OFF_S)
        still = redis_fleet.primary(asking=[host for host in fleet.group("sentinel") if host != replica])
    finally:
        try:
            report = load.finish()
        finally:
            fault(fleet, replica, "start")
    rejoined = wait_until(lambda: redis_fleet.replicates(replica) == primary, 120, 1)
    result = judged("replica_host_power_cut", report, fence_move, fault_at, primary=primary, replica=replica)
    assert still == primary, f"the sentinels named {still} instead of {primary} while {replica} was off"
    assert not result["tickets_after_a_failover"], "a fence moved the counters: a failover happened"
    assert result["failed"] <= 0.01 * report.ok, f"{result['failed']} requests failed: {report.summary()}"
    assert rejoined, f"{replica} did not replicate {primary} again within 120 s of its boot"
