"""The ticket ledger's rules, record by record."""

import json

from tests.support.tickets import MAX_SAFE_INTEGER, TicketLedger


def ok(ident, number):
    return {"id": ident, "status": 200, "body": json.dumps({"id": ident, "turno": number})}


def ledger_of(*records):
    ledger = TicketLedger()
    for record in records:
        ledger.add(record)
    return ledger


def test_consecutive_numbers_in_any_order_pass():
    ledger = ledger_of(ok("a", 2), ok("b", 1), ok("a", 1), ok("a", 3))
    assert ledger.violations() == []
    assert ledger.summary()["tickets"] == 4


def test_a_duplicate_is_a_violation_even_with_unknown_outcomes():
    ledger = ledger_of(ok("a", 1), ok("a", 2), ok("a", 2), {"id": "a", "status": 0, "error": "reset"})
    assert ledger.violations() == ["a: 1 duplicate number(s): 2"]


def test_a_gap_is_explained_only_by_as_many_unknown_outcomes():
    unknown = {"id": "a", "status": 503, "body": "{}"}
    assert ledger_of(ok("a", 1), ok("a", 3), unknown).violations() == []
    assert ledger_of(ok("a", 1), ok("a", 4), unknown).violations() == [
        "a: 2 number(s) missing below 4, only 1 request(s) with an unknown outcome"]


def test_a_refusal_never_explains_a_gap():
    refused = {"id": "a", "status": 429, "body": "{}"}
    assert ledger_of(ok("a", 2), refused).violations() == [
        "a: 1 number(s) missing below 2, only 0 request(s) with an unknown outcome"]


def test_a_503_that_says_nothing_ran_never_explains_a_gap():
    """The service says which 503s cost nothing; only "may have run" explains a gap."""
    def answer(message):
        return {"id": "a", "status": 503, "body": json.dumps({"error": "store_unavailable", "message": message})}

    for message in ["could not connect to the store; no increment was sent",
                    "the store refused (OOM command not allowed); no increment ran"]:
        assert ledger_of(ok("a", 2), answer(message)).violations() == [
            "a: 1 number(s) missing below 2, only 0 request(s) with an unknown outcome"]
    assert ledger_of(ok("a", 2), answer("the store's answer was lost; the increment may have run")).violations() == []


def test_the_balancers_503_that_nothing_was_sent_never_explains_a_gap():
    """The balancer's own 503 (every app busy or unreachable) has its text in "error"."""
    unsent = {"error": "no app could take the request now (all busy or unreachable); it was not sent, nothing was counted",
              "status": 503}
    assert ledger_of(ok("a", 2), {"id": "a", "status": 503, "body": json.dumps(unsent)}).violations() == [
        "a: 1 number(s) missing below 2, only 0 request(s) with an unknown outcome"]


def test_bodies_that_are_not_a_ticket_are_violations():
    ledger = ledger_of(
        {"id": "a", "status": 200, "body": "<html>"},
        {"id": "a", "status": 200, "body": json.dumps({"id": "b", "turno": 1})},
        {"id": "a", "status": 200, "body": json.dumps({"id": "a", "turno": "1"})},
        {"id": "a", "status": 200, "body": json.dumps({"id": "a", "turno": MAX_SAFE_INTEGER + 1})},
        {"id": "a", "status": 200, "body": json.dumps({"id": "a", "turno": 0})},
    )
    assert len(ledger.violations()) == 5
    assert ledger.summary()["tickets"] == 0
