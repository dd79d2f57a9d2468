"""A short, bounded load run against real processes on loopback: the tool's
figures and report, every ticket checked, and the checker catching real faults."""

import json

import redis

from tests.support.ports import free_port
from tests.support.tickets import TicketLedger
from tools.load import turnoload

# Every step runs, whatever the figures: a busy CI machine may miss the SLO.
SMOKE = ["--step-seconds", "2", "--warmup-seconds", "0.5", "--ids", "8", "--connections", "16",
         "--stop-after-failures", "99"]


def test_steps_report_and_every_ticket_checked(lo, tmp_path):
    redis_url = lo.redis()
    target = lo.turnomatic(redis_url, "--threads", "4")
    out = tmp_path / "load"

    status = turnoload.main(["--target", target, "--rates", "50,100,200", "--odd",
                             "--seed-redis", redis_url, "--out", str(out), *SMOKE])

    result = json.loads((out / "steps.json").read_text())
    assert status == 0, result["tickets"]["violations"]
    steps = result["steps"]
    assert [s["offered"] for s in steps] == [50, 100, 200]
    sent = sum(s["generator"]["sent"] for s in steps)
    assert sent == round(2.5 * (50 + 100 + 200))
    tickets = result["tickets"]
    assert tickets["tickets"] == sent and tickets["ids"] == 8
    assert tickets["duplicates"] == tickets["missing"] == tickets["unknown_outcomes"] == 0
    # The counters Redis holds are the highest numbers the clients saw.
    store = redis.Redis.from_url(redis_url)
    seen = sum(int(store.get(f"turno:load-{result['meta']['run_id']}-{n}")) for n in range(8))
    assert seen == sent
    odd = result["odd"]
    assert odd["rate"] == 100
    assert [r for r in odd["results"] if not r["ok"]] == []
    assert any(r["name"].startswith("seeded 2^53-2") for r in odd["results"])
    assert odd["health"] == {target: {"/healthz": 200, "/readyz": 200}}
    report = (out / "report.md").read_text()
    assert "\n| 200 | " in report and "Maximum load" in report and "No violation" in report
    assert (out / "load.png").read_bytes().startswith(b"\x89PNG")


def test_duplicates_of_two_memory_processes_are_reported(lo, needs_nginx, tmp_path):
    # Two in-memory processes behind one balancer: each counts on its own.
    target = lo.nginx([lo.turnomatic("memory://"), lo.turnomatic("memory://")])
    out = tmp_path / "load"

    status = turnoload.main(["--target", target, "--rates", "100", "--out", str(out), *SMOKE])

    tickets = json.loads((out / "steps.json").read_text())["tickets"]
    assert status == 1
    assert tickets["duplicates"] > 0
    assert any("duplicate" in v for v in tickets["violations"])


def test_a_number_taken_outside_the_run_is_a_gap(lo, tmp_path):
    redis_url = lo.redis()
    target = lo.turnomatic(redis_url)
    ids = ["gap-a"]
    ledger = TicketLedger()

    def step(name):
        raw = tmp_path / f"{name}.jsonl"
        turnoload.run_generator(target, 50, 1, ids, 5000, 4, raw, f"{name}: ")
        for line in raw.open():
            ledger.add(json.loads(line))

    step("before")
    assert ledger.violations() == []
    redis.Redis.from_url(redis_url).incr("turno:gap-a")  # a ticket no client of the run saw
    step("after")

    assert ledger.violations() == ["gap-a: 1 number(s) missing below 101, only 0 request(s) with an unknown outcome"]


def test_an_overload_is_refused_by_the_balancer_without_losing_a_number(lo, needs_nginx, tmp_path):
    # The balancer role's own nginx.conf, its limit on all clients together set low.
    app_port = free_port()
    lo.turnomatic(lo.redis(), port=app_port)
    target = lo.balancer(app_port, {"balancer_rate_limit": 100000, "balancer_rate_limit_burst": 1000,
                                    "balancer_total_rate_limit": 100, "balancer_total_rate_limit_burst": 10})
    out = tmp_path / "load"

    status = turnoload.main(["--target", target, "--rates", "300", "--out", str(out), *SMOKE])

    result = json.loads((out / "steps.json").read_text())
    step = result["steps"][0]
    assert status == 0, result["tickets"]["violations"]
    assert set(step["statuses"]) == {"200", "429"}
    # About the limit is served (its burst and the warm-up's leftovers aside), the rest refused.
    assert 50 <= step["achieved"] <= 150
    # A refusal never reached the counter: the numbers served are still exactly 1..n.
    assert result["tickets"]["missing"] == result["tickets"]["duplicates"] == 0
