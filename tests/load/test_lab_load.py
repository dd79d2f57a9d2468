"""A short, bounded load run on the lab fleet: open-loop steps over both balancers,
unexpected values meanwhile (counters seeded next to 2^53-1 on the Redis host),
every ticket checked, the fleet healthy afterwards. The capacity figures are in
the report (tests/output/load-lab-smoke/); the full runs are in docs/capacity.md."""

import json
from pathlib import Path

import pytest

from tests.support.lab import credential_file
from tests.support.paths import OUTPUT
from tests.support.redis_fleet import RedisFleet
from tools.load import turnoload

pytestmark = pytest.mark.lab
VM_CGROUPS = Path("/sys/fs/cgroup/cpu/turnomatic-lab")


def test_lab_fleet_under_load_keeps_its_numbers(fleet):
    out = OUTPUT / "load-lab-smoke"
    # Seeded on the primary the sentinels name: a replica refuses writes.
    primary = RedisFleet(fleet).primary()
    redis_host = fleet.address(primary)
    targets = ",".join(f"http://{fleet.address(lb)}:7017" for lb in fleet.lab.group("lb"))

    status = turnoload.main([
        "--target", targets, "--rates", "100,200,400", "--step-seconds", "3", "--stop-after-failures", "99",
        "--odd", "--seed-ssh", primary, "--seed-redis", f"redis://admin@{redis_host}:6379/0",
        "--seed-password-file", str(credential_file("redis_admin")),
        *(["--vm-cgroups", str(VM_CGROUPS)] if VM_CGROUPS.is_dir() else []),
        "--label", "lab smoke: both balancers", "--out", str(out),
    ])

    result = json.loads((out / "steps.json").read_text())
    assert status == 0, (result["tickets"]["violations"], [r for r in result["odd"]["results"] if not r["ok"]])
    assert [s["offered"] for s in result["steps"]] == [100, 200, 400]
    assert result["steps"][0]["errors"] == 0  # 100 req/s is far below the fleet's capacity
    assert result["tickets"]["duplicates"] == 0
    assert result["odd"]["health"] == {t: {"/healthz": 200, "/readyz": 200} for t in targets.split(",")}
    assert any(r["name"] == "seeded 2^53-2, past the limit" and r["ok"] for r in result["odd"]["results"])
