"""The restore drill on the lab fleet (issue 12): Redis's disk lost, the monitoring
host's snapshot restored with playbooks/redis_restore.yml, and no number handed out
twice.

Numbers are taken for a few ids through the service name from the client host (the
fleet suite's ticket_checker.py), a snapshot is taken (the backup timer's service on
the monitoring host), more numbers are taken, then every Redis host loses its data
(redis-server stopped, its data directory emptied) and the playbook restores the
snapshot on the first one, the others replicating it, the sentinels watching it. Every
id's next number must lie above every number handed out before the loss: the
playbook moves the counters past what was handed out since the snapshot (the
failover fence's turno::failovers, raised by the snapshot's age x the fleet's
maximum rate). The fleet is left serving.
    pytest tests/ha/test_restore.py -s
"""

import json
import time
import uuid

import pytest

from tests.support.checker import REMOTE_CHECKER, SERVICE_NAME, install_checker
from tests.support.tickets import TicketLedger

pytestmark = pytest.mark.lab
IDS = 5
BACKUP_DIR = "/var/backups/redis"


def take_numbers(fleet, prefix, requests):
    """requests GET /turno/<prefix>-<0..IDS-1> from client1, round robin; the
    checker's tickets per id."""
    command = (f"python3 {REMOTE_CHECKER} --name {SERVICE_NAME} --id-prefix {prefix} --requests {requests} "
               f"--ids {IDS} --concurrency 2 --max-seconds 60")
    result = json.loads(fleet.ssh("client1", command, timeout=120).stdout)
    assert result["statuses"] == {"200": requests}, f"not every request answered 200: {result['statuses']} {result['failures']}"
    return result["tickets"]


def newest_snapshot(fleet):
    listing = fleet.ssh("mon1", f"ls -1 {BACKUP_DIR}").stdout.split()
    snapshots = sorted(name for name in listing if name.startswith("dump-"))
    return snapshots[-1] if snapshots else None


def test_a_restore_after_a_lost_disk_hands_out_no_number_twice(fleet):
    started = time.monotonic()
    install_checker(fleet)
    prefix = f"restore-{uuid.uuid4().hex[:8]}"
    ledger = TicketLedger()

    for ident, numbers in take_numbers(fleet, prefix, IDS * 20).items():
        ledger.add_numbers(ident, numbers)
    before_snapshot = newest_snapshot(fleet)
    # The timer's own service, run now: it returns once the snapshot is checked and kept.
    fleet.ssh("mon1", "systemctl start redis-backup.service", timeout=120)
    snapshot = newest_snapshot(fleet)
    assert snapshot and snapshot != before_snapshot, f"no new snapshot in {BACKUP_DIR} on mon1"

    for ident, numbers in take_numbers(fleet, prefix, IDS * 30).items():
        ledger.add_numbers(ident, numbers)
    handed_out = {ident: max(numbers) for ident, numbers in ledger.numbers.items()}
    assert len(handed_out) == IDS, handed_out
    # Numbers may jump by the fence's offset (an earlier restore switched it on): the
    # first sync after a Redis restart, the backup's, gives the node a new replication id.
    assert not ledger.duplicates(), f"numbers handed out twice before the loss: {ledger.duplicates()}"

    # The disks lost: nothing of Redis's data is left on any Redis host.
    for host in fleet.group("redis"):
        fleet.ssh(host, "systemctl stop redis-server && find /var/lib/redis -mindepth 1 -delete")
    restore = fleet.playbook("playbooks/redis_restore.yml", log_name="redis-restore")
    assert restore.returncode == 0, f"the restore failed ({restore.log}):\n{restore.tail()}"

    after = take_numbers(fleet, prefix, IDS)
    for ident, numbers in after.items():
        ledger.add_numbers(ident, numbers)
    seconds = time.monotonic() - started
    print(f"\nrestore drill: {snapshot} restored in {restore.seconds:.0f} s (playbook), {seconds:.0f} s in all; "
          f"last before the loss {handed_out}, next after {after}")
    assert not ledger.duplicates(), f"numbers handed out twice after the restore: {ledger.duplicates()}"
    for ident, numbers in after.items():
        assert min(numbers) > handed_out[ident], (
            f"{ident}: {min(numbers)} after the restore, not above {handed_out[ident]} handed out before")
