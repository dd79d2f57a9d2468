"""Failover on loopback: three real redis-servers (a primary, two replicas, every node
with min-replicas-to-write 1) and three real sentinels (quorum 2), turnomatic finding
the primary through them (redis+sentinel://), steady load, every ticket checked by the
ledger. docs/architecture.md ("No number handed out twice") gives the argument these
tests check; each protection has its control run here (turned off, duplicates caught).
"""

import math
import shutil
import subprocess
import time

import pytest

from redis.sentinel import Sentinel
from turnomatic.store import MajoritySentinel, StoreUnavailable, open_store

from tests.support.service import (MIN_REPLICAS_MAX_LAG, RedisServer, ReplicatedRedis, SentinelServer, SteadyLoad,
                                   get)
from tests.support.tickets import TicketLedger
from tests.support.waiting import wait_for

FENCE_SKIP = 1000
# The service answers again within this after a primary is lost (the bound).
FAILOVER_SECONDS = 10


@pytest.fixture
def cluster(tmp_path):
    """Started per test with the fence on; a test that needs it off passes fence_skip=0."""
    clusters = []

    def start(fence_skip=FENCE_SKIP, **options):
        cluster = ReplicatedRedis(tmp_path / f"cluster{len(clusters)}", fence_skip=fence_skip, **options)
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.stop()


def loaded(service, ids, seconds=1.0):
    """Steady load on `ids`, running for `seconds` before the test's fault."""
    ledger = TicketLedger()
    load = SteadyLoad(service.base, ids, ledger)
    wait_for(lambda: load.answered_since(0), 10, "a first ticket")
    time.sleep(seconds)
    return ledger, load


def back_within(load, instant, seconds=FAILOVER_SECONDS):
    """Seconds from `instant` until a ticket is handed out again, failing past `seconds`."""
    wait_for(lambda: load.answered_since(instant), seconds, "tickets handed out again")
    return round(time.monotonic() - instant, 2)


def take(service, id, tries=5):
    """One ticket. A 503 is a documented answer (a replica's acknowledgement can take
    longer than its 0.5 s on a busy machine): asked again, a few times, each past the
    store's fail-fast window."""
    for attempt in range(tries):
        if attempt:
            time.sleep(0.6)
        status, _, body = get(service.base, f"/turno/{id}")
        if status == 200:
            return body["turno"]
        assert status == 503, (status, body)
        print(f"{id}: 503 {body['message']}")
    raise AssertionError(f"{id}: no ticket in {tries} tries, last {status} {body}")


def finish(cluster, load, ledger):
    """Stop the load once the cluster is whole again; the ledger knows the fences' moves."""
    wait_for(cluster.in_sync, 30, "the old primary back as a replica, every replica in sync")
    time.sleep(0.5)
    load.stop()
    ledger.announce_skip(2 * FENCE_SKIP * cluster.failovers())
    return ledger.summary()


def test_primary_killed_another_takes_over_without_duplicates(cluster, start_service):
    redis_nodes = cluster()
    service = start_service("--store", redis_nodes.url(), "--threads", "8")
    ledger, load = loaded(service, ["kill-a", "kill-b", "kill-c"])
    primary = redis_nodes.primary()
    killed = time.monotonic()
    primary.kill()
    back = back_within(load, killed)
    primary.start()  # with its AOF; the sentinels make it a replica of the new primary
    summary = finish(redis_nodes, load, ledger)
    assert redis_nodes.primary() is not primary
    assert summary["duplicates"] == 0 and not summary["violations"], summary
    assert redis_nodes.failovers() == 1, "one fence: on the promoted replica's first increment"
    assert "failover fence:" in service.log()
    print(f"kill -9: answering again after {back} s; errors {load.error_window()}; {summary}")


def test_primary_frozen_then_resumed_refuses_and_rejoins(cluster, start_service):
    """SIGSTOP past the detection time: a replica is promoted; the old primary, resumed,
    still believes it is the primary but has had no replica for longer than
    min-replicas-max-lag: NOREPLICAS (nothing ran) until the sentinels demote it."""
    redis_nodes = cluster()
    service = start_service("--store", redis_nodes.url(), "--threads", "8")
    ledger, load = loaded(service, ["frozen-a", "frozen-b"])
    primary = redis_nodes.primary()
    frozen = time.monotonic()
    primary.freeze()
    back = back_within(load, frozen)
    time.sleep(max(0.0, frozen + 5 - time.monotonic()))
    primary.resume()
    summary = finish(redis_nodes, load, ledger)
    assert redis_nodes.primary() is not primary
    assert summary["duplicates"] == 0 and not summary["violations"], summary
    print(f"SIGSTOP 5 s: answering again after {back} s; errors {load.error_window()}; {summary}; "
          f"{dict(load.messages())}")


@pytest.mark.parametrize("replica_acks", [1, 0], ids=["acked", "control-unacked"])
def test_numbers_a_lagging_replica_lacks_are_never_handed_out(cluster, start_service, replica_acks):
    """Both replicas are cut off (a partition of their links) for less than
    min-replicas-max-lag, so the primary still takes increments; then it crashes and a
    replica that lacks them is promoted. With the fence off, only WAIT protects: an increment no replica confirmed
    is a 503 "may have run", never a number. The control (replica_acks=0) hands those
    numbers out, and the promoted replica hands them out again: duplicates."""
    redis_nodes = cluster(fence_skip=0)
    service = start_service("--store", redis_nodes.url(replica_acks=replica_acks), "--threads", "8")
    ledger, load = loaded(service, ["lag-a", "lag-b"], seconds=0.5)
    primary = redis_nodes.primary()
    replicas = [node for node in redis_nodes.nodes if node is not primary]
    for replica in replicas:
        redis_nodes.relays[replica].cut()
    time.sleep(MIN_REPLICAS_MAX_LAG / 2)
    primary.kill()
    for replica in replicas:
        redis_nodes.relays[replica].drop()
    crashed = time.monotonic()
    back = back_within(load, crashed)
    primary.start()
    summary = finish(redis_nodes, load, ledger)
    print(f"replica_acks={replica_acks}: answering again after {back} s; {summary['duplicates']} duplicates; "
          f"{dict(load.messages())}")
    if replica_acks:
        assert summary["duplicates"] == 0 and not summary["violations"], summary
        assert load.messages()["no replica confirmed the increment in time; the increment may have run"] > 0
    else:
        assert summary["duplicates"] > 0, f"the control run should have handed out numbers twice: {summary}"


@pytest.mark.parametrize("fence_skip", [FENCE_SKIP, 0], ids=["fenced", "control-unfenced"])
def test_a_promoted_replica_that_lacks_acknowledged_numbers_moves_past_them(cluster, start_service, fence_skip):
    """WAIT 1 is satisfied by one replica; if the primary and that replica are lost
    together, the other replica, promoted, lacks numbers that were handed out. The fence
    moves every counter past them (2 x fence_skip); the control (fence off) hands them
    out again."""
    redis_nodes = cluster(fence_skip=fence_skip)
    service = start_service("--store", redis_nodes.url(), "--threads", "4")
    primary = redis_nodes.primary()
    acking, lagging = [node for node in redis_nodes.nodes if node is not primary]
    redis_nodes.relays[lagging].cut()
    handed_out = [take(service, "fence") for _ in range(20)]
    acking.freeze()
    primary.kill()
    redis_nodes.relays[lagging].drop()
    wait_for(lambda: redis_nodes.sentinels[0].primary_port() == lagging.port, 20, "the lagging replica promoted")
    lacked = int(lagging.client().get("turno:fence") or 0) < max(handed_out)
    acking.resume()  # the sentinels make it a replica of the promoted one: writes are taken again
    wait_for(lambda: get(service.base, "/turno/fence")[0] == 200, 20, "tickets handed out again")
    after = [take(service, "fence") for _ in range(5)]
    print(f"fence_skip={fence_skip}: handed out {handed_out[0]}..{handed_out[-1]}, then {after}")
    assert lacked, "the promoted replica should have lacked acknowledged numbers"
    if fence_skip:
        assert min(after) > max(handed_out)
        assert "failover fence:" in service.log()
    else:
        assert set(after) & set(handed_out), "the control run should have handed out numbers twice"


def test_a_primary_cut_off_from_its_replicas_hands_out_nothing(cluster, start_service):
    """The split brain's old primary, as the app hosts that still reach it see it: its
    replicas' links cut (the sentinels still see it, so no failover here). Increments are
    503 "may have run" while WAIT waits in vain, then refused (NOREPLICAS: no increment
    ran) once min-replicas-max-lag has passed: nothing it counts is handed out."""
    redis_nodes = cluster()
    service = start_service("--store", redis_nodes.url(), "--threads", "8")
    ledger, load = loaded(service, ["split-a", "split-b"], seconds=0.5)
    for relay in redis_nodes.relays.values():
        relay.cut()
    cut = time.monotonic()
    time.sleep(MIN_REPLICAS_MAX_LAG + 3)
    load.stop()
    answered_after_cut = [start for start, status, _ in load.records if status == 200 and start > cut + 0.1]
    messages = load.messages()
    print(f"cut off: {dict(messages)}")
    assert not answered_after_cut, f"{len(answered_after_cut)} numbers handed out by a primary without replicas"
    assert any("NOREPLICAS" in message and message.endswith("no increment ran") for message in messages)
    assert ledger.summary()["duplicates"] == 0


@pytest.fixture
def stale_sentinel(tmp_path):
    """A sentinel that still names an old primary cut off from its replicas: a node with
    no replica, so it refuses writes (NOREPLICAS), watched under the cluster's service
    name. Yields (the sentinel, the cut-off node)."""
    cut_off = RedisServer(tmp_path / "cut-off").start()
    stale = SentinelServer(tmp_path / "stale-sentinel", ReplicatedRedis.SERVICE, cut_off.port, quorum=1)
    try:
        cut_off.load_library()
        cut_off.client().config_set("min-replicas-to-write", 1)
        stale.start()
        yield stale, cut_off
    finally:
        stale.stop()
        cut_off.stop()


@pytest.mark.parametrize("majority", [True, False], ids=["majority", "control-first-answer"])
def test_the_primary_is_the_node_most_sentinels_name(cluster, stale_sentinel, monkeypatch, majority):
    """A split brain as an app host that reaches every sentinel sees it: the sentinel
    listed first is cut off with an old primary and still names it (here: a node with no
    replica, so it refuses writes, NOREPLICAS); the two others name the primary. The
    store asks them all and takes the node most name. Control: redis-py's own discovery,
    the first sentinel that answers, sends every increment to the cut-off node."""
    stale, cut_off = stale_sentinel
    redis_nodes = cluster(sentinels=2)
    if not majority:
        monkeypatch.setattr(MajoritySentinel, "discover_master", Sentinel.discover_master)
    # No replica acknowledgement asked: where the increments go is the point here.
    store = open_store(redis_nodes.url(replica_acks=0).replace("://", f"://127.0.0.1:{stale.port},", 1))
    if majority:
        numbers = [store.next_turno("split") for _ in range(3)]
        assert int(redis_nodes.primary().client().get("turno:split")) == numbers[-1]
        assert numbers == list(range(numbers[0], numbers[0] + 3))
    else:
        with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
            store.next_turno("split")
    assert cut_off.client().get("turno:split") is None


@pytest.mark.parametrize("newest", [True, False], ids=["newest-epoch", "control-first-answer"])
def test_without_a_majority_the_sentinel_with_the_newest_epoch_wins(cluster, stale_sentinel, monkeypatch, newest):
    """Only two sentinels listed (or the others silent): the first still names an old,
    cut-off node (configuration epoch 0), the second a primary it promoted since (epoch
    1). No address has a majority, so the newest epoch decides: an epoch grows only with
    a failover that a majority elected. Control: redis-py's first answer, the old node."""
    redis_nodes = cluster()
    old = redis_nodes.primary()
    old.kill()
    wait_for(lambda: redis_nodes.node(redis_nodes.sentinels[0].primary_port()) is not old, 30, "a promotion")
    promoted = redis_nodes.primary()
    old.start()  # with its AOF; the sentinels make it a replica of the promoted one
    wait_for(redis_nodes.in_sync, 30, "the failover over: the old primary a replica, every replica in sync")
    stale, cut_off = stale_sentinel
    if not newest:
        monkeypatch.setattr(MajoritySentinel, "discover_master", Sentinel.discover_master)
    url = (f"redis+sentinel://127.0.0.1:{stale.port},127.0.0.1:{redis_nodes.sentinels[0].port}/"
           f"{ReplicatedRedis.SERVICE}/0?replica_acks=0")
    store = open_store(url)
    if newest:
        store.next_turno("epoch")
        assert promoted.client().get("turno:epoch") == "1"
    else:
        with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
            store.next_turno("epoch")
    assert cut_off.client().get("turno:epoch") is None


@pytest.mark.parametrize("move", [True, False], ids=["moved", "control-not-moved"])
def test_a_restore_moves_past_every_number_handed_out_since_the_backup(cluster, start_service, tmp_path, move):
    """docs/operations.md, "Backup" and "Restore": a snapshot taken with redis-cli --rdb,
    more numbers handed out, every node lost; a new node from the snapshot, then
    turno::failovers raised by ceil(handed out since / K) + 2. Every id's next number is
    above every number handed out before. The control skips the raise: the restored
    node's own fence (2K) is too small for what came after the snapshot, and numbers
    are handed out again."""
    skip = 100
    redis_nodes = cluster(fence_skip=skip)
    service = start_service("--store", redis_nodes.url())
    ids = ["restore-a", "restore-b"]
    handed_out = {id: [take(service, id) for _ in range(20)] for id in ids}
    backup = tmp_path / "backup.rdb"
    subprocess.run(["redis-cli", "-p", str(redis_nodes.primary().port), "--rdb", str(backup)],
                   check=True, capture_output=True, timeout=30)
    since_backup = 3 * skip  # the operator's bound: backup age x maximum rate per id
    for id in ids:
        handed_out[id] += [take(service, id) for _ in range(since_backup)]
    service.stop()
    redis_nodes.stop()  # every disk lost: only the backup is left

    restored = RedisServer(tmp_path / "restored", appendfsync=None)
    restored.directory.mkdir(parents=True)
    shutil.copy(backup, restored.directory / "dump.rdb")
    restored.start()
    try:
        client = restored.client()
        client.config_set("appendonly", "yes")
        if move:
            client.incrby("turno::failovers", math.ceil(since_backup / skip) + 2)
        service = start_service("--store", restored.url)
        after = {id: take(service, id) for id in ids}
    finally:
        restored.stop()
    print(f"move={move}: handed out up to {[max(n) for n in handed_out.values()]}, after the restore {after}")
    if move:
        assert all(after[id] > max(handed_out[id]) for id in ids), (after, handed_out)
    else:
        assert any(after[id] in handed_out[id] for id in ids), "the control should have handed a number out again"
