"""ticket_checker.py (tests/fleet) on the lab's client host, through the service
name: started in the background, its tickets and its unanswered requests judged by
the ticket ledger (the fleet, ha suites)."""

import json
import subprocess
import time

from tests.support.paths import REPO
from tests.support.tickets import TicketLedger

CHECKER = REPO / "tests" / "fleet" / "ticket_checker.py"
REMOTE_CHECKER = "/root/ticket_checker.py"
SERVICE_NAME = "turnomatic.lab"


def install_checker(fleet):
    """Copy the checker onto the client host."""
    fleet.ssh("client1", f"cat > {REMOTE_CHECKER}", input=CHECKER.read_text())


class Load:
    """ticket_checker.py running on the client host, started in the background."""

    def __init__(self, fleet, prefix, requests, max_seconds, until_stdin_closes=False, concurrency=64, ids=10):
        command = (f"python3 {REMOTE_CHECKER} --name {SERVICE_NAME} --id-prefix {prefix} --requests {requests} "
                   f"--max-seconds {max_seconds} --concurrency {concurrency} --ids {ids}")
        if until_stdin_closes:
            command += " --until-stdin-closes"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            fleet.ssh_command("client1", command),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def finish(self, timeout=600):
        """Close its stdin (stops an --until-stdin-closes run) and read its report."""
        stdout, stderr = self.process.communicate(input="", timeout=timeout)
        assert self.process.returncode == 0, f"ticket_checker failed: {stderr.strip()}"
        return Report(json.loads(stdout))


class Report:
    """The checker's result, its tickets judged by the ticket ledger."""

    def __init__(self, result):
        self.result = result
        self.tickets = result["tickets"]
        self.ok = result["statuses"].get("200", 0)
        self.failed = sum(result["failures"].values()) + sum(
            count for status, count in result["statuses"].items() if status != "200")
        self.ledger = TicketLedger()
        for ticket_id, numbers in self.tickets.items():
            self.ledger.add_numbers(ticket_id, numbers)
        # Which of them may have taken a number: the ledger reads the answer.
        for ticket_id, status, body in result["unanswered"]:
            self.ledger.add({"id": ticket_id, "status": status, "body": body})

    def duplicates(self):
        """id → numbers received more than once."""
        return self.ledger.duplicates()

    def missing(self):
        """id → how many numbers of 1..max were never received (gaps)."""
        return self.ledger.missing()

    def exactly_one_to_n(self):
        return self.ledger.exactly_one_to_n()

    def summary(self):
        return {key: self.result[key] for key in
                ("requests", "seconds", "ok_per_second", "statuses", "failures", "stale_keepalive_retries", "by_balancer")}
