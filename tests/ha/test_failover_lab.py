"""A Redis primary of the lab fleet powered off under load (issue 12): the
sentinels promote a replica, the service answers again within seconds, and no
number is handed out twice.

Load comes through the service name from the client host (ticket_checker.py).
The primary the sentinels name is powered off (the lab's `kill` fault: a power
cut); the test waits for the promotion, keeps the load on a little longer,
then boots the old primary again and waits until the sentinels made it a
replica of the new one: the fleet is left serving, with three nodes.

Monitoring sees it: the rule turnomatic-redis-failover fires (the sentinels'
config epoch grew), and the replication metrics name the new primary.

Per id: no duplicate; every missing number is explained by an answer that says
the increment may have run, or by the failover fence (the promoted node moves
every id's next number 2K further on, K = turno::fence_skip). Figures (printed,
and in tests/output/ha-figures.json): seconds from the power cut to the
promotion and to the last failed request, from the first failed request to the last
(the outage as the client saw it), requests failed.
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


def fault(fleet, host, kind):
    run = fleet.playbook("playbooks/fault.yml", "-e", f"lab_vm={host}", "-e", f"lab_fault={kind}",
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


def test_the_primary_powered_off_under_load_fails_over_and_hands_out_no_number_twice(fleet, redis_fleet, rules,
                                                                                       graphite):
    install_checker(fleet)
    old = redis_fleet.primary()
    assert old, "no sentinel names a primary"
    fence_move = 2 * redis_fleet.fence_skip(old)
    assert fence_move, f"the failover fence is off on {old}"
    load = Load(fleet, f"failover-{uuid.uuid4().hex[:8]}", requests=0, max_seconds=150, until_stdin_closes=True,
                concurrency=8, ids=5)
    try:
        time.sleep(8)
        cut_at = time.monotonic() - load.started
        fault(fleet, old, "kill")
        survivors = [host for host in fleet.group("sentinel") if host != old]
        new = wait_until(lambda: (named := redis_fleet.primary(asking=survivors)) != old and named, 60, 0.5)
        promoted_after = time.monotonic() - load.started - cut_at
        assert new, f"the sentinels still name {old} 60 s after its power cut"
        time.sleep(15)
    finally:
        report = load.finish()
        fault(fleet, old, "start")
    rejoined = wait_until(lambda: redis_fleet.replicates(old) == new, 120, 1)
    failover_rule = rules["turnomatic-redis-failover"]
    alerted = wait_until(lambda: alerting.firing(failover_rule, graphite, now()), 120, STEP)
    shown = wait_until(lambda: primary_in_graphite(graphite, new) == 1 and primary_in_graphite(graphite, old) == 0,
                       120, STEP)
    failures = [t for t in report.result["failure_times"] if t >= cut_at]
    back_after = round(max(failures) - cut_at, 1) if failures else 0.0
    # From the first failed request (the client sees the primary gone; the fault
    # playbook's own start-up is not counted) to the last.
    outage = round(max(failures) - min(failures), 1) if failures else 0.0
    # Tickets above each id's fence move: handed out by the promoted node.
    after_failover = 0
    for numbers in report.tickets.values():
        numbers = sorted(set(numbers))
        moves = fence_moves(numbers, fence_move)
        after_failover += len(numbers) - moves[0] if moves else 0
    result = {"old_primary": old, "new_primary": new, "promoted_after_s": round(promoted_after, 1),
              "last_failure_after_s": back_after, "outage_s": outage, "answered": report.ok, "failed": report.failed,
              "failed_by_kind": dict(Counter({**report.result["failures"],
                                              **{k: v for k, v in report.result["statuses"].items() if k != "200"}})),
              "tickets_after_the_failover": after_failover}
    figures.record_figure(FIGURES, "primary_power_cut", result)
    print(f"\nprimary power cut: {result}")

    assert not report.ledger.malformed, report.ledger.malformed
    assert not report.duplicates(), f"numbers handed out twice: {report.duplicates()}"
    assert not unexplained_gaps(report, fence_move), (
        f"gaps (missing, may have run, fence moves) not explained: {unexplained_gaps(report, fence_move)}")
    assert after_failover, f"no ticket after the failover: {report.summary()}"
    assert back_after <= BACK_WITHIN_S, f"requests still failed {back_after} s after the power cut: {report.summary()}"
    assert rejoined, f"{old} did not become a replica of {new} within 120 s of its boot"
    assert alerted, f"{failover_rule.uid} did not fire: {alerting.values(failover_rule, graphite, now())}"
    assert shown, (f"Graphite does not show {new} as the primary and {old} as a replica: "
                   f"{primary_in_graphite(graphite, new)}, {primary_in_graphite(graphite, old)}")
